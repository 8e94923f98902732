"""Lightning and Hugging Face Trainer runs, recorded by the examples' own scripts: the
honest run replays bitwise (in the agent's sandbox, from the committed code bundle;
the forgery tests replay in process), a forged checkpoint or a tampered segment is rejected, and a trainer
configured unlike its task is refused. (An early stop with DataLoader workers, verified
by a stranger agent on chain: tests/own_task.)"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from pol_chain.attacks import tamper_checkpoint
from pol_chain.attacks.tamper import recommit_manifest
from pol_chain.format import SPEC_FILE, RunBinding
from pol_chain.format import Report as VerificationReport
from pol_chain.proof.policy import Policy
from pol_chain.proof.verifier import verify_dir

from .conftest import RUN_ID, example, register

FULL = Policy(full_below=10**6, max_replay_fraction=1.0)
RUNS = ["lightning_run", "hf_run"]


def _verify(proof: Path, binding: RunBinding, runner: Any = None) -> VerificationReport:
    return verify_dir(
        proof,
        run_id=RUN_ID,
        run_seed=binding.run_seed,
        challenge_seed=b"\x03" * 32,
        policy=FULL,
        runner=runner,
    )


def _module(bundle: Any) -> Any:
    """The bundle's model, checked to be the LightningModule a Lightning task gives."""
    import lightning.pytorch as pl

    assert isinstance(bundle.model, pl.LightningModule)
    return bundle.model


def _bitwise(report: VerificationReport) -> None:
    assert report.passed, report.checks
    assert report.bitwise_identical
    errors = [s.metrics.normalized_error for s in report.segments if s.metrics is not None]
    assert errors and all(e == 0.0 for e in errors), errors


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the agent's sandbox needs bwrap")
@pytest.mark.parametrize("run", RUNS)
def test_the_agents_sandboxed_replay_is_bitwise(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """What the agent runs: the committed bundle in its sandbox, the framework inside."""
    from pol_chain.compose.replay import runner_for
    from pol_chain.proof.manifest import DirectorySource

    proof, binding = request.getfixturevalue(run)
    runner = runner_for(
        (proof / SPEC_FILE).read_bytes(),
        binding.run_seed,
        DirectorySource(proof),
        work_dir=tmp_path,
    )
    assert runner is not None
    try:
        _bitwise(_verify(proof, binding, runner))
    finally:
        runner.close()


@pytest.mark.parametrize("run", RUNS)
def test_segments_replayed_in_one_trainer_reach_their_committed_states(
    run: str, request: pytest.FixtureRequest
) -> None:
    """A challenge's segments replay in one run of the framework's trainer: segments 3
    and 1 (2 skipped, out of order), each from its own checkpoint, reach the committed
    states bitwise; a malformed segment among them is blamed alone."""
    from pol_chain.format import Segment, SegmentStep, TaskSpec, checkpoint_name, segment_name
    from pol_chain.proof.runner import InProcessRunner, ReplayJob
    from pol_chain.proof.serialization import load_checkpoint_bytes

    proof, binding = request.getfixturevalue(run)
    runner = InProcessRunner(
        TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes()), binding.run_seed
    )

    def checkpoint(i: int) -> tuple[Any, Any]:
        return load_checkpoint_bytes((proof / checkpoint_name(i)).read_bytes(), "checkpoint")

    def job(i: int) -> ReplayJob:
        steps = Segment.from_bytes((proof / segment_name(i)).read_bytes()).steps
        return ReplayJob(i, *checkpoint(i - 1), steps)

    def reached(state: dict[str, torch.Tensor] | None, i: int) -> bool:
        claimed = checkpoint(i)[0]
        return (
            state is not None
            and set(state) == set(claimed)
            and all(torch.equal(state[k], claimed[k]) for k in claimed)
        )

    results = runner.replay([job(3), job(1)])
    assert reached(results[3].state, 3) and reached(results[1].state, 1)

    short = job(2)
    one_micro_batch = [SegmentStep.of(st.step, [st.indices], st.seeds) for st in short.steps]
    malformed = ReplayJob(2, short.start, short.meta, one_micro_batch)
    results = runner.replay([job(1), malformed, job(3)])
    assert results[2].state is None and results[2].error is not None
    assert "micro-batches" in str(results[2].error)
    assert reached(results[1].state, 1) and reached(results[3].state, 3)


@pytest.mark.parametrize("run", RUNS)
def test_forged_checkpoint_is_rejected(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    proof, binding = request.getfixturevalue(run)
    forged = tmp_path / "proof"
    shutil.copytree(proof, forged)
    tamper_checkpoint(forged, 2, scale=0.5, recommit=True)
    report = _verify(forged, binding)
    assert not report.passed
    assert 2 in report.failed_segments()
    assert "replay_distance" in report.reasons


@pytest.mark.parametrize("run", ["lightning_run"])  # checked before any replay
def test_tampered_segment_is_rejected(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two micro-batches of one step swapped: the same samples in another order."""
    proof, binding = request.getfixturevalue(run)
    tampered = tmp_path / "proof"
    shutil.copytree(proof, tampered)
    path = tampered / "segments" / "000002.json"
    seg = json.loads(path.read_bytes())
    batches = seg["steps"][1]["batches"]
    batches[0], batches[1] = batches[1], batches[0]
    path.write_bytes(json.dumps(seg, sort_keys=True, separators=(",", ":")).encode())
    recommit_manifest(tampered)
    report = _verify(tampered, binding)
    assert not report.passed
    assert "data_order" in report.reasons


def test_a_lightning_trainer_unlike_its_task_is_refused(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from pol_chain.format import TaskSpec
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings
    from pol_chain.proof import Recorder, build_bundle
    from pol_chain.proof.engine import TrainState

    example("lightning_digits")
    proof = tmp_path / "proof"
    binding = register(proof, "lightning_digits:build")
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    bundle = build_bundle(spec, binding.run_seed)
    rec = Recorder(proof, spec, RUN_ID, binding.run_seed, state=TrainState.of(bundle))
    settings = {**trainer_settings(bundle), "gradient_clip_val": 5.0}
    trainer = pl.Trainer(
        **settings,
        max_steps=3,
        accelerator="cpu",
        callbacks=[PolchainCallback(rec, bundle)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    with pytest.raises(IntegrationError, match="gradient_clip_val=5.0"):
        trainer.fit(_module(bundle), train_dataloaders=train_loader(bundle, rec))
    # an epoch cut to an odd number of micro-batches: Lightning would step the optimizer
    # on the last one alone, a step of fewer micro-batches than the run's
    assert spec.accumulation == 2
    trainer = pl.Trainer(
        **trainer_settings(bundle),
        max_steps=spec.total_steps,
        limit_train_batches=15,
        accelerator="cpu",
        callbacks=[PolchainCallback(rec, bundle)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    with pytest.raises(IntegrationError, match="15 micro-batches, not a multiple of the run's 2"):
        trainer.fit(_module(bundle), train_dataloaders=train_loader(bundle, rec))
    # the user's own loader (before: recorded, and every segment refuted by its verifier,
    # the proof naming the run's batches while the module trained on shuffled ones)
    other = copy.deepcopy(rec.batch_sampler())
    other.sampler.run_seed = bytes(32)  # the right shape, another run's order
    own = (
        {"batch_size": spec.micro_batch_size, "shuffle": True},
        {"batch_sampler": rec.batch_sampler(start=2)},
        {"batch_sampler": other},
    )
    for loader in own:
        trainer = pl.Trainer(
            **trainer_settings(bundle),
            max_steps=4,
            max_epochs=1,
            accelerator="cpu",
            callbacks=[PolchainCallback(rec, bundle)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        data = torch.utils.data.DataLoader(bundle.data, **loader)  # type: ignore[arg-type]
        with pytest.raises(IntegrationError, match="does not draw the run's batches"):
            trainer.fit(_module(bundle), train_dataloaders=data)
    assert rec.step == 0
    rec.close(final=False)


def test_hf_arguments_the_task_fixes_cannot_change(tmp_path: Path) -> None:
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.hf import training_arguments
    from pol_chain.proof import build_bundle

    example("hf_tiny_gpt")
    proof = tmp_path / "proof"
    binding = register(proof, "hf_tiny_gpt:build")
    from pol_chain.format import TaskSpec

    bundle = build_bundle(TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes()), binding.run_seed)
    with pytest.raises(IntegrationError, match="learning_rate"):
        training_arguments(bundle, str(tmp_path / "out"), learning_rate=0.1)


@pytest.mark.parametrize("name", ["hf_tiny_gpt", "lightning_digits"])
def test_pol_chains_own_loop_refuses_a_framework_task(name: str, tmp_path: Path) -> None:
    """``polchain train`` (the ``train`` loop) on a task its framework trains says to run
    the task's script, before it writes anything (before: a bare ``AssertionError``)."""
    from pol_chain.format import TaskSpec
    from pol_chain.proof import ProofError, train

    example(name)
    proof = tmp_path / "proof"
    binding = register(proof, f"{name}:build")
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    with pytest.raises(ProofError, match="trained by its framework's own loop") as caught:
        train(spec, proof, RUN_ID, binding.run_seed, max_steps=2)
    assert "training script" in caught.value.hint
    assert not (proof / "manifest.json").exists()


def test_a_missing_extra_is_named(tmp_path: Path) -> None:
    """Without lightning installed the integration says which extra to install."""
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['lightning'] = None\nsys.modules['lightning.pytorch'] = None\n"
        "from pol_chain.integrations import MissingExtra\n"
        "from pol_chain.integrations.lightning import lightning_task\n"
        "try:\n    lightning_task(None, [])\n"
        "except MissingExtra as exc:\n    print(exc, '|', exc.hint)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "lightning.pytorch is not installed" in out.stdout
    assert "pol_chain[lightning]" in out.stdout


@pytest.mark.parametrize("ending", ["stop", "error_before_step", "error_mid_step"])
def test_a_lightning_run_stopped_between_micro_batches_records_its_finished_steps(
    tmp_path: Path, ending: str
) -> None:
    """``trainer.should_stop`` set after the first of a step's two micro-batches: Lightning
    stops there, without that step's optimizer step; the proof holds the steps before it
    and replays bitwise. The same when ``fit`` ends on an error (no ``on_train_end``):
    raised before a step's first micro-batch (step 6's, after step 5's optimizer step) or
    between its micro-batches."""
    import lightning.pytorch as pl

    from pol_chain.format import TaskSpec
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings
    from pol_chain.proof import Recorder, build_bundle
    from pol_chain.proof.engine import TrainState

    example("lightning_digits")
    proof = tmp_path / "proof"
    binding = register(proof, "lightning_digits:build", {"k": 4})
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    assert spec.accumulation == 2

    class StopMidStep(pl.Callback):
        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if ending == "error_before_step" and args[-1] == 2 * 6:
                raise KeyboardInterrupt  # as a failing batch does: before the callback's hook

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if args[-1] == 2 * 7:  # the first micro-batch of step 7
                if ending == "stop":
                    trainer.should_stop = True
                elif ending == "error_mid_step":
                    raise RuntimeError("a user callback fails")

    bundle = build_bundle(spec, binding.run_seed)
    rec = Recorder(proof, spec, RUN_ID, binding.run_seed, state=TrainState.of(bundle))
    trainer = pl.Trainer(
        **trainer_settings(bundle),
        max_steps=spec.total_steps,
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        callbacks=[StopMidStep(), PolchainCallback(rec, bundle)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(_module(bundle), train_dataloaders=train_loader(bundle, rec))
    except (RuntimeError, SystemExit):  # Lightning exits on a KeyboardInterrupt
        assert ending != "stop"
    rec.close(final=True)
    steps = 6 if ending == "error_before_step" else 7
    assert trainer.global_step == steps and rec.step == steps
    manifest = json.loads((proof / "manifest.json").read_bytes())
    assert manifest["final"]["step"] == steps
    _bitwise(_verify(proof, binding))
