"""Build a task from a spec and the run seed, and the ready training loop :func:`train`."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pol_chain.format import TaskSpec, to_hex
from pol_chain.proof.canonical import sha256
from pol_chain.proof.engine import TrainState, run_step, step_seeds
from pol_chain.proof.errors import ProofError, SpecError
from pol_chain.proof.recorder import Listener, Recorder
from pol_chain.proof.seeds import derive_seed
from pol_chain.proof.serialization import digest_model, load_model_bytes
from pol_chain.proof.task import TaskBundle, configure_determinism, resolve_task

__all__ = ["TrainResult", "build_bundle", "model_digest_of", "train"]


def model_digest_of(model: torch.nn.Module) -> bytes:
    """Return the model digest: SHA-256 of the deterministic model file of ``model``."""
    return digest_model(model.state_dict())


def build_bundle(
    spec: TaskSpec,
    run_seed: bytes,
    device: str | torch.device = "cpu",
    parent_model: bytes | None = None,
    dataset: Any = None,
) -> TaskBundle:
    """Build the task of ``spec`` with W0 from the run seed (or the parent model bytes).

    A spec that commits a sharded dataset trains on ``dataset`` (a
    :class:`~pol_chain.proof.shards.ShardDataset` over its shards), handed to the task
    function as its ``dataset`` argument."""
    fn = resolve_task(spec.entry)
    kwargs: dict[str, Any] = {}
    if spec.dataset.sharded:
        if dataset is None:
            raise SpecError("this run trains on a committed dataset: give its ShardDataset")
        if "dataset" not in inspect.signature(fn).parameters:
            raise SpecError(f"task {spec.entry} takes no dataset argument for its committed data")
        kwargs["dataset"] = dataset
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(run_seed, "init"))
        bundle = fn(dict(spec.config), torch.device(device), **kwargs)
    if spec.dataset.sharded and bundle.dataset is None:
        bundle.dataset = dataset
    parent = spec.parent_digest
    if parent is not None:
        if parent_model is None:
            raise SpecError("init kind 'parent' needs the parent model file")
        if sha256(parent_model) != parent:
            raise SpecError(f"parent model does not hash to {to_hex(parent)}")
        tensors = load_model_bytes(parent_model, "parent model")
        bundle.model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=True)
    return bundle


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`."""

    proof_dir: Path
    model_digest: bytes
    steps: int
    checkpoints: int
    seconds: float
    test_accuracy: float | None


def train(
    spec: TaskSpec,
    proof_dir: Path | str,
    run_id: bytes,
    run_seed: bytes,
    *,
    listeners: Iterable[Listener] = (),
    device: str = "cpu",
    resume: bool = False,
    deterministic: bool = True,
    threads: int | None = None,
    parent_model: bytes | None = None,
    dataset: Any = None,
    queue_size: int = 2,
    max_steps: int | None = None,
    should_stop: Callable[[int, TaskBundle], bool] | None = None,
    on_step: Callable[[int, float | None], None] | None = None,
    loss_every: int = 10,
) -> TrainResult:
    """Train ``spec`` end to end while recording its proof into ``proof_dir``.

    ``resume=True`` continues an interrupted run from its last complete checkpoint
    (bitwise identical continuation). ``max_steps`` stops early without finalizing
    (for tests and benchmarks); ``should_stop(steps done, bundle)`` is early stopping: when
    it says so the run stops *and finalizes* on that step. ``on_step(step, loss)`` is
    called after every step, with the loss every ``loss_every`` steps (reading it
    synchronizes a GPU) and None otherwise.
    """
    configure_determinism(deterministic, threads)
    bundle = build_bundle(spec, run_seed, device, parent_model, dataset)
    if bundle.replayer is not None:  # before: an AssertionError from the default step
        frameworks = ", ".join(sorted(bundle.framework)) or "its framework"
        raise ProofError(
            f"task {spec.entry} is trained by its framework's own loop ({frameworks}), "
            "not by pol_chain's",
            hint=f"run the task's training script on the registered proof directory "
            f"{proof_dir} (docs/integrations.md); `polchain commit {proof_dir} --follow` "
            "commits its checkpoints",
        )
    start = time.perf_counter()
    rec = Recorder(
        proof_dir,
        spec,
        run_id,
        run_seed,
        state=TrainState.of(bundle),
        listeners=listeners,
        queue_size=queue_size,
        resume=resume,
    )
    sampler = rec.sampler()
    stop = sampler.total_steps if max_steps is None else min(sampler.total_steps, max_steps)
    stopped_early = False
    try:
        for step in range(rec.step, stop):
            seeds = step_seeds(run_seed, step)
            micro = sampler.micro_batches(step)
            loss = run_step(bundle, micro, seeds, step)
            rec.on_step_end(micro, seeds)
            if on_step is not None:
                on_step(step, float(loss) if step % loss_every == 0 else None)
            if should_stop is not None and should_stop(step + 1, bundle):
                stopped_early = True
                break
    except BaseException:
        rec.__exit__(RuntimeError, None, None)
        raise
    finished = stopped_early or rec.step >= sampler.total_steps
    rec.close(final=finished)  # waits for the last write: part of the recorded time
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    acc = bundle.evaluate(bundle.model) if bundle.evaluate is not None else None
    digest = model_digest_of(bundle.model)
    if finished:
        final = rec.manifest.final
        assert final is not None and final.model.sha256 == digest
    return TrainResult(Path(proof_dir), digest, rec.step, len(rec.manifest.entries), seconds, acc)
