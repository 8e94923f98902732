"""A Lightning or Hugging Face training process SIGKILLed mid-run resumes when its own
training script is run again: from the last complete checkpoint, into the optimizers and
schedulers the framework builds afresh, to the very proof of the uninterrupted run
(every checkpoint and the final model bitwise), which the verifier replays bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pol_chain.errors import PolchainError
from pol_chain.proof.manifest import read_manifest

from .conftest import EXAMPLES, example, register
from .test_frameworks import _bitwise, _verify

# The example's own `python examples/<name>.py proof`, each optimizer step slowed (a
# global step pre-hook) so that the parent can kill the process in the middle of the run.
CHILD = """
import runpy, sys, time
from torch.optim.optimizer import register_optimizer_step_pre_hook
register_optimizer_step_pre_hook(lambda *_: time.sleep(0.1))
script, proof = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = [script, proof]
runpy.run_path(script, run_name="__main__")
"""


def _entries(proof: Path) -> int:
    try:
        return len(read_manifest(proof).entries)
    except Exception:  # not written yet, or being replaced
        return 0


@pytest.mark.parametrize(
    ("name", "reference"), [("hf_tiny_gpt", "hf_run"), ("lightning_digits", "lightning_run")]
)
def test_a_killed_framework_run_resumes_to_the_uninterrupted_runs_proof(
    name: str, reference: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    mod = example(name)
    uninterrupted, _ = request.getfixturevalue(reference)
    proof = tmp_path / "proof"
    binding = register(proof, f"{name}:build")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(EXAMPLES / f"{name}.py"), str(proof)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300  # generous: CI boxes may be loaded
    while _entries(proof) < 3 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # killed mid-run, not finished
    killed = read_manifest(proof)
    expected = read_manifest(uninterrupted)
    assert killed.final is None and 3 <= len(killed.entries) < len(expected.entries)
    with pytest.raises(PolchainError, match="past --stop-after 2"):
        mod.main(proof, stop_after=2)  # before: finalized there, past the stop asked for
    assert mod.main(proof) == expected.final.step  # type: ignore[union-attr]  # run again

    resumed = read_manifest(proof)
    assert resumed.final is not None and expected.final is not None
    assert [e.checkpoint.sha256 for e in resumed.entries] == [
        e.checkpoint.sha256 for e in expected.entries
    ]
    assert resumed.final.model.sha256 == expected.final.model.sha256
    _bitwise(_verify(proof, binding))


def test_what_would_restart_a_lightning_run_is_refused(tmp_path: Path) -> None:
    """Before, each was accepted and lost steps or recorded a refuted proof: a second
    ``fit`` on a started recorder (new optimizers), ``fit(ckpt_path=...)`` (Lightning's own
    step and state, not the run's: 20 steps lost for good), and a second epoch over the
    run's batch sampler (``max_epochs`` other than 1 with more steps than are left: the
    sampler restarts, a step past the run is refused mid-fit)."""
    import lightning.pytorch as pl

    from pol_chain.format import SPEC_FILE, TaskSpec
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings
    from pol_chain.proof import Recorder, build_bundle
    from pol_chain.proof.engine import TrainState

    example("lightning_digits")
    proof = tmp_path / "proof"
    binding = register(proof, "lightning_digits:build")
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())

    def recorder() -> tuple[Any, Any]:
        bundle = build_bundle(spec, binding.run_seed)
        state = TrainState.of(bundle)
        run = binding.run_id_bytes, binding.run_seed
        return bundle, Recorder(proof, spec, *run, state=state, resume=True)

    def fit(bundle: Any, rec: Any, ckpt_path: str | None = None, **settings: Any) -> Any:
        trainer = pl.Trainer(
            **trainer_settings(bundle),
            **{"max_steps": 3, "max_epochs": 1, **settings},
            accelerator="cpu",
            callbacks=[PolchainCallback(rec, bundle)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(bundle.model, train_dataloaders=train_loader(bundle, rec), ckpt_path=ckpt_path)
        return trainer

    bundle, rec = recorder()
    with pytest.raises(IntegrationError, match="max_epochs=2 with max_steps=-1"):
        fit(bundle, rec, max_steps=-1, max_epochs=2)
    trainer = fit(bundle, rec, max_steps=spec.k)
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")
    assert rec.step == spec.k
    with pytest.raises(IntegrationError, match=f"recorder is at step {spec.k}"):
        fit(bundle, rec)
    rec.close(final=False)
    bundle, rec = recorder()
    with pytest.raises(IntegrationError, match=f"starts at its step {spec.k}"):
        ckpt = str(tmp_path / "lightning.ckpt")  # its epoch 0 is done: a second one to run
        fit(bundle, rec, ckpt_path=ckpt, max_steps=spec.total_steps, max_epochs=2)
    assert rec.resuming  # refused before it attached anything
    left = spec.total_steps - rec.step  # any max_epochs: max_steps ends within the sampler
    fit(bundle, rec, max_steps=left, max_epochs=None)
    assert rec.step == spec.total_steps
    rec.close(final=True)
    _bitwise(_verify(proof, binding))
