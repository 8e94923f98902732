"""Hugging Face ``Trainer`` runs that do not end as planned, recorded by the callback and
closed with ``rec.close(final=True)``: each finalizes a proof that replays bitwise (a stop
or an error between a step's micro-batches with BatchNorm, an error after an optimizer
step, a user callback that fails), and what cannot be recorded is refused before it
trains (more steps than the run, a second ``train()``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pol_chain.format import SPEC_FILE, RunBinding, TaskSpec

from .conftest import RUN_ID
from .test_frameworks import _bitwise, _verify

PROJECT = Path(__file__).resolve().parent / "hf_project"
ENTRY = "hf_batchnorm:build"

pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def _project() -> Iterator[None]:
    sys.path.insert(0, str(PROJECT))
    yield
    sys.path.remove(str(PROJECT))


def _start(proof: Path) -> tuple[RunBinding, Any, Any]:
    from pol_chain.format import BUNDLE_FILE
    from pol_chain.proof import Recorder, build_bundle, make_spec
    from pol_chain.proof.engine import TrainState
    from pol_chain.proof.spec import bundle_bytes

    spec = make_spec(ENTRY, {}, project=PROJECT)
    proof.mkdir(parents=True, exist_ok=True)
    if not (proof / SPEC_FILE).exists():
        (proof / SPEC_FILE).write_bytes(spec.to_bytes())
        (proof / BUNDLE_FILE).write_bytes(bundle_bytes(ENTRY, PROJECT))
        RunBinding.offline(RUN_ID, spec.digest).write(proof)
    binding = RunBinding.read(proof)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    bundle = build_bundle(spec, binding.run_seed)
    resume = (proof / "manifest.json").exists()
    rec = Recorder(
        proof, spec, RUN_ID, binding.run_seed, state=TrainState.of(bundle), resume=resume
    )
    return binding, bundle, rec


ENDINGS = {  # ending → (optimizer steps taken, steps in the finalized proof); k = 4
    "stop_between_micro_batches": (5, 5),
    "error_between_micro_batches": (5, 5),
    # step 6's optimizer moved, its scheduler did not: back to the checkpoint at step 4
    "error_after_an_optimizer_step": (5, 4),
    "user_callback_fails_in_on_step_end": (6, 6),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_run_that_ends_early_finalizes_a_proof_that_replays(ending: str, tmp_path: Path) -> None:
    import transformers

    from pol_chain.integrations.hf import polchain_trainer

    proof = tmp_path / "proof"
    binding, bundle, rec = _start(proof)
    assert rec.spec.accumulation == 2 and rec.spec.k == 4

    class Ending(transformers.TrainerCallback):  # type: ignore[misc]
        def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 5:  # after step 6's first micro-batch
                if ending == "stop_between_micro_batches":
                    control.should_training_stop = True
                elif ending == "error_between_micro_batches":
                    raise RuntimeError("out of memory (simulated)")

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if ending == "error_after_an_optimizer_step" and state.global_step == 5:
                raise RuntimeError("a user callback fails before the scheduler steps")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if ending == "user_callback_fails_in_on_step_end" and state.global_step == 6:
                raise RuntimeError("a user callback fails")

    trainer = polchain_trainer(bundle, rec, str(tmp_path / "out"))
    trainer.add_callback(Ending())
    try:
        trainer.train()
    except RuntimeError:
        assert not ending.startswith("stop")
    rec.close(final=True)
    taken, recorded = ENDINGS[ending]
    assert trainer.state.global_step == taken
    manifest = json.loads((proof / "manifest.json").read_bytes())
    assert manifest["final"]["step"] == rec.step == recorded
    _bitwise(_verify(proof, binding))


def test_what_cannot_be_recorded_is_refused_before_it_trains(tmp_path: Path) -> None:
    """More steps than the run (before: recorded up to the plan, then refuted), a second
    ``train()`` or a new trainer on a started recorder (before: accepted or refuted, the
    LR schedule restarted); a resumed recorder continues in a new trainer, at most for the
    steps left."""
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.hf import polchain_trainer

    proof = tmp_path / "proof"
    binding, bundle, rec = _start(proof)
    total = rec.spec.total_steps
    with pytest.raises(
        IntegrationError, match=f"would take {total + 3} steps, the run has {total}"
    ):
        polchain_trainer(bundle, rec, str(tmp_path / "out"), max_steps=total + 3).train()
    assert rec.step == 0
    trainer = polchain_trainer(bundle, rec, str(tmp_path / "out"), max_steps=6)
    trainer.train()
    for again in (trainer, polchain_trainer(bundle, rec, str(tmp_path / "out"))):
        with pytest.raises(IntegrationError, match="recorder is at step 6"):
            again.train()
    rec.close(final=False)  # a pause: steps 5-6 are not checkpointed (off the k = 4 grid)
    binding, bundle, rec = _start(proof)  # resumed: the Trainer has no optimizer yet
    assert rec.step == 4 and rec.resuming
    with pytest.raises(IntegrationError, match=f"has {total - 4} left after step 4"):
        polchain_trainer(bundle, rec, str(tmp_path / "out"), max_steps=total).train()
    assert rec.resuming  # refused before it attached anything
    trainer = polchain_trainer(bundle, rec, str(tmp_path / "out"), max_steps=5)
    trainer.train()
    assert rec.step == 9 and not rec.resuming
    with pytest.raises(IntegrationError, match="recorder is at step 9"):
        trainer.train()
    rec.close(final=True)
    assert json.loads((proof / "manifest.json").read_bytes())["final"]["step"] == 9
    _bitwise(_verify(proof, binding))


def test_what_would_change_the_step_or_restart_the_trainer_is_refused(tmp_path: Path) -> None:
    """Before, each was accepted and recorded a proof its own verifier refuted (or lost
    steps): a ``TrainingArguments`` value the task does not fix but the step uses
    (replay builds its Trainer from the task's alone), the Trainer's own
    ``resume_from_checkpoint`` (its step and data skipping, not the run's), and a trainer
    for a run with no step left (a bare ``ValueError`` from transformers)."""
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.hf import PolchainTrainer, polchain_trainer, training_arguments

    proof = tmp_path / "proof"
    out = str(tmp_path / "out")
    binding, bundle, rec = _start(proof)
    for wrong in ({"max_grad_norm": 0.05}, {"optim": "sgd"}, {"bf16": True}):
        with pytest.raises(IntegrationError, match=f"{next(iter(wrong))} would change the"):
            polchain_trainer(bundle, rec, out, **wrong)
    by_hand = training_arguments(bundle, out, max_steps=4)
    by_hand.max_grad_norm = 0.05  # a Trainer built from arguments edited by hand
    with pytest.raises(IntegrationError, match=r"max_grad_norm=0\.05 \(replay: 1\.0\)"):
        PolchainTrainer(model=bundle.model, args=by_hand, train_dataset=bundle.data,
                        recorder=rec, task=bundle)  # fmt: skip
    saving = {"save_strategy": "steps", "save_steps": 4, "logging_steps": 2}  # free to set
    polchain_trainer(bundle, rec, out, max_steps=6, **saving).train()
    rec.close(final=False)  # at step 4; the Trainer saved out/checkpoint-4 and -6
    binding, bundle, rec = _start(proof)
    with pytest.raises(IntegrationError, match="starts at its step 6"):
        polchain_trainer(bundle, rec, out, **saving).train(resume_from_checkpoint=True)
    polchain_trainer(bundle, rec, out).train()  # resumed, to the run's last step
    rec.close(final=False)
    binding, bundle, rec = _start(proof)
    with pytest.raises(IntegrationError, match="nothing is left to train"):
        polchain_trainer(bundle, rec, out)
    rec.close(final=True)
    _bitwise(_verify(proof, binding))


def test_task_code_edited_after_registration_is_refused(tmp_path: Path) -> None:
    """The code that trains must be the code the run registered (before: an edit between
    a crash and the resume, or between register and train, recorded steps that replay of
    the registered code refutes)."""
    from pol_chain.format import BUNDLE_FILE
    from pol_chain.proof import Recorder, RecorderError, build_bundle, make_spec
    from pol_chain.proof.engine import TrainState
    from pol_chain.proof.spec import bundle_bytes

    project = tmp_path / "project"
    project.mkdir()
    task = project / "edited_task.py"  # a module name no other test imports
    task.write_text((PROJECT / "hf_batchnorm.py").read_text())
    sys.path.insert(0, str(project))
    try:
        spec = make_spec("edited_task:build", {}, project=project)
        proof = tmp_path / "proof"
        proof.mkdir()
        (proof / SPEC_FILE).write_bytes(spec.to_bytes())
        (proof / BUNDLE_FILE).write_bytes(bundle_bytes("edited_task:build", project))
        binding = RunBinding.offline(RUN_ID, spec.digest)
        bundle = build_bundle(spec, binding.run_seed)
        state = TrainState.of(bundle)
        Recorder(proof, spec, RUN_ID, binding.run_seed, state=state).close(final=False)
        task.write_text(task.read_text().replace("learning_rate=0.01", "learning_rate=0.02"))
        with pytest.raises(RecorderError, match="edited_task changed since") as caught:
            Recorder(proof, spec, RUN_ID, binding.run_seed, state=state, resume=True)
        assert "bundle.tar" in caught.value.hint
    finally:
        sys.path.remove(str(project))


def test_evaluation_during_training_leaves_a_proof_that_replays(tmp_path: Path) -> None:
    """Evaluation arguments are the trainer's to set: an evaluation every 3 steps (eval
    mode forwards: BatchNorm statistics untouched, the next step reseeded) changes no
    recorded step, so the run replays bitwise through a Trainer that never evaluates."""
    from pol_chain.integrations.hf import PolchainTrainer, training_arguments

    proof = tmp_path / "proof"
    binding, bundle, rec = _start(proof)
    args = training_arguments(
        bundle, str(tmp_path / "out"), max_steps=rec.spec.total_steps,
        eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=32,
    )  # fmt: skip
    trainer = PolchainTrainer(
        model=bundle.model, args=args, train_dataset=bundle.data, eval_dataset=bundle.data,
        data_collator=bundle.collate_fn, recorder=rec, task=bundle,
    )  # fmt: skip
    trainer.train()
    assert any("eval_loss" in entry for entry in trainer.state.log_history)
    rec.close(final=True)
    _bitwise(_verify(proof, binding))


MISMATCHED_TASK = """
from typing import Any
import torch
from pol_chain.integrations.hf import hf_task
from hf_batchnorm import Net, Points

DEFAULT_CONFIG: dict[str, Any] = {"batch_size": 16, "k": 4, "epochs": 1}
ARGUMENTS: dict[str, Any] = {"gradient_accumulation_steps": 2}

def build(config: dict[str, Any], device: torch.device) -> Any:
    return hf_task(Net(), Points(), total_steps=16, learning_rate=0.01, **ARGUMENTS)
"""


def test_a_task_its_own_trainer_would_refuse_is_refused_when_built(tmp_path: Path) -> None:
    """Before, each was registered (a transaction, a run id) and failed only once it
    trained: trainer settings that give the run another shape than its config (2
    micro-batches a step against a config of 1; 16 steps against ``epochs=4``'s 64), a
    ``TrainingArguments`` argument transformers does not take (a bare ``TypeError``), and
    ``load_best_model_at_end`` (the final weights an earlier checkpoint's, not the last
    step's the proof claims)."""
    from pol_chain.format import SpecError
    from pol_chain.integrations import IntegrationError
    from pol_chain.integrations.hf import training_arguments
    from pol_chain.proof import make_spec

    with pytest.raises(SpecError, match="give 16 optimizer steps, its config 64") as caught:
        make_spec(ENTRY, {"epochs": 4}, project=PROJECT)  # the task plans one epoch
    assert "grad_accumulation" in caught.value.hint
    (tmp_path / "mismatched.py").write_text(MISMATCHED_TASK)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SpecError, match="give 2 micro-batches a step, its config 1"):
            make_spec("mismatched:build", {}, project=tmp_path)
        module: Any = sys.modules["mismatched"]
        module.ARGUMENTS = {"warmup_ratio": 0.1}  # dropped by transformers 5
        with pytest.raises(IntegrationError, match="TrainingArguments refuse .*warmup_ratio"):
            make_spec("mismatched:build", {}, project=tmp_path)
        module.ARGUMENTS = {"load_best_model_at_end": True}
        with pytest.raises(IntegrationError, match="load_best_model_at_end would end the run"):
            make_spec("mismatched:build", {}, project=tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mismatched", None)
    binding, bundle, rec = _start(tmp_path / "proof")
    with pytest.raises(IntegrationError, match="load_best_model_at_end") as refused:
        training_arguments(bundle, str(tmp_path / "out"), load_best_model_at_end=True)
    assert "EarlyStoppingCallback" in refused.value.hint
    rec.close(final=False)
