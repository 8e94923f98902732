"""The recorder: Lightning-callback-like hooks that turn any PyTorch loop into a proof.

Usage from a plain loop::

    rec = Recorder(proof_dir, spec, run_id, run_seed, model, optimizer, scheduler)
    for step, idx in rec.sampler().steps(rec.step):
        ...                                     # forward/backward/optimizer/scheduler step,
        rec.on_step_end(idx, rec.step_seeds())  # augmentation from rec.generator("augment")
    rec.close(final=True)

A loop that feeds exactly the run's own micro-batches (a ``DataLoader`` with
:meth:`Recorder.batch_sampler`, as the framework callbacks do) calls ``on_step_end()``
without arguments: the writer thread expands those steps from the run's sampler and
seeds at each checkpoint, so the training thread does almost nothing per step.

Every ``k`` steps (and at :meth:`close`) the full state is cloned on its device and put
on a *bounded* queue; a background thread copies it to the CPU, serializes it
(deterministic safetensors), writes checkpoint and segment atomically, computes the leaf,
rewrites the manifest (last) and hands a :class:`CheckpointRecord` to every listener.
When the queue is full, training waits (back-pressure): memory stays bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from pol_chain.format import (
    BUNDLE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    RECORDER_LOCK_FILE,
    CheckpointMeta,
    Manifest,
    SegmentStep,
    TaskSpec,
    read_bundle,
    to_hex,
)
from pol_chain.proof.bundle import changed_modules, requirement_problems
from pol_chain.proof.canonical import sha256
from pol_chain.proof.engine import (
    RunBatchSampler,
    StepSampler,
    TrainState,
    as_micro_batches,
    step_seeds,
)
from pol_chain.proof.errors import RecorderError, ResumeError
from pol_chain.proof.manifest import read_manifest
from pol_chain.proof.seeds import derive_seed, make_generator
from pol_chain.proof.serialization import load_checkpoint_bytes, load_state_bytes
from pol_chain.proof.writer import ProofWriter

__all__ = [
    "MODEL_FILE",
    "CheckpointRecord",
    "FinalRecord",
    "Listener",
    "Recorder",
]


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint that is on disk and in the manifest (handed to listeners)."""

    run_id: bytes
    index: int
    step: int
    checkpoint_path: Path
    checkpoint_sha256: bytes
    segment_path: Path | None
    segment_sha256: bytes
    leaf: bytes
    manifest_path: Path


@dataclass(frozen=True)
class FinalRecord:
    """The final model file, written at ``close(final=True)`` (handed to listeners)."""

    run_id: bytes
    index: int
    step: int
    model_path: Path
    model_sha256: bytes
    manifest_path: Path


Listener = Callable[[CheckpointRecord | FinalRecord], None]


@dataclass
class _Job:
    index: int
    step: int
    tensors: dict[str, torch.Tensor]
    meta: CheckpointMeta
    segment: list[SegmentStep | int] | None  # an int: that step in the run's own order
    final: bool


SEED_BLOCK = 64
"""How many steps' seeds the recorder derives at once (loops ask for them every step)."""

WRITER_NICENESS = 10
"""How much lower the writer thread's CPU priority is than training's (Linux)."""


def _yield_cpu_to_training() -> None:
    """Lower the calling thread's CPU priority (on Linux each thread has its own nice
    value), so that serializing, hashing and writing a checkpoint takes the cores the
    training's threads leave idle rather than stalling them; where the system cannot, the
    writer keeps the priority it has."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is no process id
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + WRITER_NICENESS))
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass


EXIT_FLUSH_SECONDS = 120.0
"""How long a process that exits without ``close`` waits for queued checkpoints."""


def _check_task_code(proof_dir: Path, spec: TaskSpec) -> None:
    """Refuse to record a run whose task code here is not the code its spec commits (the
    registered ``bundle.tar``), or whose required packages are installed here at other
    versions: replay runs the committed code with the committed versions, so steps of
    other code would be refuted, segment after segment."""
    path = proof_dir / BUNDLE_FILE
    if spec.bundle is None or not path.is_file():
        return  # a spec without a bundle, or a directory not made by register
    data = path.read_bytes()
    if sha256(data) != spec.bundle.sha256:
        raise RecorderError(f"{path} is not the code bundle the run's spec commits")
    bundle = read_bundle(data, str(path))
    changed = changed_modules(bundle)
    if changed:
        raise RecorderError(
            f"the task code here is not the code this run registered: {', '.join(changed)} "
            "changed since (a replay would run the registered code, and refute these steps)",
            hint=f"train with the registered code ({path} holds it); "
            "new code is a new run (polchain register)",
        )
    # a package upgraded between register (or a crash) and this start trains with code
    # the verifier, installing the registered versions, would not run
    problems = requirement_problems(bundle)
    if problems:
        raise RecorderError(
            "the packages installed here are not the ones this run registered: "
            + "; ".join(problems),
            hint="install the registered versions (pip install NAME==VERSION); "
            "new versions are a new run (polchain register)",
        )


class _DirectoryLock:
    """An exclusive ``flock`` on a proof directory's lock file: one recorder writes a
    directory at a time (two would overwrite each other's manifest). The kernel drops
    it when the process dies, so a killed run's directory can be resumed at once."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    @classmethod
    def acquire(cls, proof_dir: Path) -> _DirectoryLock:
        handle = open(proof_dir / RECORDER_LOCK_FILE, "a+")  # noqa: SIM115 - held while recording
        if fcntl is None:  # not POSIX: no lock
            return cls(handle)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read(32).strip() or "unknown"
            handle.close()
            raise RecorderError(
                f"{proof_dir} is being recorded by another recorder (process {holder})",
                hint="let it finish or stop it; a recorder that died releases the "
                "directory, and Recorder(..., resume=True) continues from its checkpoint",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(handle)

    def release(self) -> None:
        if self._handle.closed:
            return
        if fcntl is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()


class Recorder:
    """Records checkpoints and segments of a run into ``proof_dir``.

    The state recorded is ``state`` (every optimizer, scheduler and scaler a step
    touches), or the ``model``/``optimizer``/``scheduler`` given. With ``resume=True`` it
    loads the last complete checkpoint of an existing proof directory into that state
    and continues from its step; files left behind by a crash after that checkpoint are
    ignored and overwritten. A run may stop early: :meth:`close` with ``final=True``
    finalizes on the last step recorded. A ``state`` without optimizers (a framework
    builds them when training starts) resumes the model; the checkpoint's optimizer,
    scheduler and scaler state waits for :meth:`attach`, and until then the proof can
    only be finalized.
    """

    def __init__(
        self,
        proof_dir: Path | str,
        spec: TaskSpec,
        run_id: bytes,
        run_seed: bytes,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        state: TrainState | None = None,
        listeners: Iterable[Listener] = (),
        queue_size: int = 2,
        resume: bool = False,
    ) -> None:
        if len(run_id) != 32 or len(run_seed) != 32:
            raise ValueError("run_id and run_seed must be 32 bytes each")
        if state is None:
            if model is None:
                raise ValueError("the recorder needs a model (or a TrainState)")
            state = TrainState(
                model, [optimizer] if optimizer else [], [scheduler] if scheduler else []
            )
        self.proof_dir = Path(proof_dir)
        self.spec, self.run_id, self.run_seed = spec, bytes(run_id), bytes(run_seed)
        self.state = state
        self.k = spec.k
        self._total_steps = spec.total_steps
        self.listeners = list(listeners)
        self.step = 0
        self._checkpointed = 0  # the step of the last checkpoint queued
        self._finalize_only = ""  # why no more steps can be recorded, if so
        self._awaiting: tuple[dict[str, torch.Tensor], CheckpointMeta] | None = None
        self._seed_block: dict[int, dict[str, int]] = {}
        self._segment: list[SegmentStep | int] = []
        self._run_order = self.sampler()  # the writer thread's own: samplers cache an epoch
        self._errors: list[BaseException] = []
        self._closed = False
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.proof_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _DirectoryLock.acquire(self.proof_dir)
        try:
            _check_task_code(self.proof_dir, spec)
            spec_bytes = spec.to_bytes()
            manifest_path = self.proof_dir / MANIFEST_FILE
            if resume and manifest_path.exists():
                self._writer = ProofWriter(self.proof_dir, read_manifest(self.proof_dir))
                self._resume(spec_bytes)
            else:
                if manifest_path.exists():
                    raise ResumeError(f"{self.proof_dir} already holds a proof; pass resume=True")
                self._writer = ProofWriter.create(self.proof_dir, spec, self.run_id)
                self._index = 0
                self._enqueue(final=False)
        except BaseException:
            self._lock.release()
            raise
        self._worker = threading.Thread(target=self._work, name="polchain-recorder", daemon=True)
        self._worker.start()
        # a process that ends on an uncaught error (or returns without close) must not
        # lose the checkpoints already taken: the writer is a daemon thread
        atexit.register(self._flush_at_exit)

    @property
    def manifest(self) -> Manifest:
        """The manifest as written so far (checkpoints the writer thread finished)."""
        return self._writer.manifest

    # -- hooks -------------------------------------------------------------------------
    def sampler(self) -> StepSampler:
        """Return the run's data order (per-epoch permutations from the run seed)."""
        return StepSampler.of(self.spec, self.run_seed)

    def batch_sampler(self, start: int | None = None) -> RunBatchSampler:
        """The run's data order as a ``DataLoader`` ``batch_sampler``: every micro-batch
        from step ``start`` (default: the next step) to the end of training."""
        return RunBatchSampler(self.sampler(), self.step if start is None else start)

    def is_run_order(self, batch_sampler: Any) -> bool:
        """Whether ``batch_sampler`` is this run's data order from its next step (a
        :meth:`batch_sampler` of this recorder, or its equal)."""
        if not isinstance(batch_sampler, RunBatchSampler):
            return False
        mine, theirs = self.sampler(), batch_sampler.sampler
        shape = ("run_seed", "size", "batch_size", "epochs", "accumulation")
        return batch_sampler.start == self.step and all(
            getattr(mine, name) == getattr(theirs, name) for name in shape
        )

    def step_seeds(self, step: int | None = None) -> dict[str, int]:
        """Return the per-step seeds (``augment``, ``dropout``) of ``step`` (default: next)."""
        return dict(self._seeds(self.step if step is None else step))

    def step_seed(self, purpose: str, step: int | None = None) -> int:
        """One of :meth:`step_seeds` (``"augment"`` or ``"dropout"``), without a copy."""
        return self._seeds(self.step if step is None else step)[purpose]

    def _seeds(self, step: int) -> Mapping[str, int]:
        seeds = self._seed_block.get(step)
        if seeds is None:  # derived for a block of steps at once: cheaper than one by one
            block = range(step, step + SEED_BLOCK)
            self._seed_block = {s: step_seeds(self.run_seed, s) for s in block}
            seeds = self._seed_block[step]
        return seeds

    def generator(
        self, purpose: str, step: int | None = None, device: str | torch.device = "cpu"
    ) -> torch.Generator:
        """Return a generator for ``purpose`` at ``step`` (default: the next step)."""
        return make_generator(
            derive_seed(self.run_seed, purpose, self.step if step is None else step), device
        )

    def on_step_end(
        self,
        indices: torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | None = None,
        seeds: Mapping[str, int] | None = None,
    ) -> None:
        """Record one finished optimizer step on ``indices`` (its batch, or the list of
        its micro-batches in the order it consumed them) with its ``seeds`` (default: the
        step's own). Without ``indices`` the step consumed the run's own micro-batches
        for it (:meth:`batch_sampler`) with its own seeds."""
        self._raise_errors()
        if self._finalize_only:
            raise RecorderError(
                f"nothing more can be recorded: {self._finalize_only}",
                hint="close(final=True) finalizes on the last checkpoint",
            )
        if self.step >= self._total_steps:
            raise RecorderError(
                f"the run's spec plans {self._total_steps} steps; step {self.step} is past it",
                hint="stop the loop at spec.total_steps (a run may stop earlier, not later)",
            )
        if indices is None:
            if seeds is not None:
                raise ValueError("a step in the run's own order has the run's own seeds")
            self._segment.append(self.step)
        else:
            if seeds is None:
                seeds = self._seeds(self.step)
            self._segment.append(SegmentStep.of(self.step, as_micro_batches(indices), seeds))
        self.step += 1
        if self.step % self.k == 0:
            self._enqueue(final=False)

    @property
    def resuming(self) -> bool:
        """True while a recorder resumed into a state without optimizers waits for
        :meth:`attach` to restore its last checkpoint's full state."""
        return self._awaiting is not None

    def attach(
        self,
        optimizers: Sequence[torch.optim.Optimizer],
        schedulers: Sequence[Any] = (),
        scaler: Any = None,
    ) -> None:
        """Record the optimizers, schedulers and scaler a framework built when training
        started (Lightning's ``configure_optimizers``, a ``Trainer``'s
        ``create_optimizer``): every later checkpoint captures them. After a resume
        (:attr:`resuming`) the last checkpoint's state is loaded into them and recording
        continues from its step. Attaching mid-run is refused: the parts would not hold
        the state of the steps recorded so far."""
        self._raise_errors()
        if self.step != 0 and self._awaiting is None:
            raise RecorderError(
                f"this recorder is at step {self.step}: new optimizers would not hold the "
                "state of its steps",
                hint="attach the optimizers once, when training starts",
            )
        state = self.state
        state.optimizers[:] = list(optimizers)
        state.schedulers[:] = list(schedulers)
        state.scaler = scaler
        if self._awaiting is not None:
            tensors, meta = self._awaiting
            self.state.restore(tensors, meta, "resume")
            self._awaiting = None
            self._finalize_only = ""

    def discard_pending(self) -> int:
        """Forget the steps recorded since the last checkpoint, because the live state is
        no longer the state after them (training failed inside a step, after the
        optimizer moved). A later ``close(final=True)`` finalizes on the last checkpoint
        (its model file is written from that checkpoint); nothing more can be recorded.
        Returns that checkpoint's step."""
        self._segment = []
        self.step = self._checkpointed
        self._finalize_only = "the steps after the last checkpoint were discarded"
        return self.step

    def close(self, final: bool = True) -> None:
        """Checkpoint any pending steps, write the final model (``final``), and join.

        ``close(final=False)`` is a pause: it checkpoints only where the run's checkpoint
        grid has one (every ``k`` steps, and the last step), because a proof continues
        only from such a checkpoint. Steps since the last one are not written; a resume
        starts from that checkpoint and takes them again (bitwise the same steps).

        A run that recorded no step cannot be finalized (there is no learning to prove):
        ``close(final=True)`` then closes without a final model and raises
        :class:`RecorderError`."""
        if self._closed:
            return
        self._closed = True
        untrained = final and self.step == 0
        on_grid = self.step >= self._total_steps  # (a multiple of k is checkpointed already)
        try:
            if (final and not untrained) or (self._segment and on_grid):
                self._enqueue(final=final, force=bool(self._segment))
            elif self._segment:  # a pause off the grid: the proof stays at its checkpoint
                self._segment = []
                self.step = self._checkpointed
        finally:
            self._stop_writer()
        self._raise_errors()
        if untrained:
            raise RecorderError(
                "the run recorded no training step, so there is no model to finalize",
                hint="train at least one step (the proof directory is kept, not finalized)",
            )

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close(final=True)
        else:
            self._closed = True
            self._stop_writer()  # the checkpoints already taken are written

    def _stop_writer(self, timeout: float | None = None) -> None:
        """Let the writer finish the queued checkpoints, then release the directory."""
        atexit.unregister(self._flush_at_exit)
        try:
            self._queue.put(None, timeout=timeout)
            self._worker.join(timeout)
        finally:
            self._lock.release()

    def _flush_at_exit(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(queue.Full):
                self._stop_writer(timeout=EXIT_FLUSH_SECONDS)

    # -- internals ---------------------------------------------------------------------
    def _raise_errors(self) -> None:
        if self._errors:
            raise RecorderError(f"recorder failed: {self._errors[0]!r}") from self._errors[0]

    def _enqueue(self, final: bool, force: bool = True) -> None:
        tensors, meta = self.state.capture(self.step)
        segment = self._segment if self._index > 0 else None
        if not force:  # final model only; the last checkpoint is already queued
            tensors, segment = {}, None
        job = _Job(self._index, self.step, tensors, meta, segment, final)
        if force:
            self._index += 1
            self._checkpointed = self.step
        self._segment = []
        while True:
            try:
                self._queue.put(job, timeout=1.0)
                return
            except queue.Full:
                worker = getattr(self, "_worker", None)
                if worker is not None and not worker.is_alive():
                    raise RecorderError("recorder thread died") from None

    def _work(self) -> None:
        _yield_cpu_to_training()
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._errors:
                continue
            try:
                self._write(job)
            except BaseException as exc:  # noqa: BLE001 - reported on the training thread
                self._errors.append(exc)

    def _in_run_order(self, step: int) -> SegmentStep:
        """Step ``step`` as the run's sampler and seeds make it (on the writer thread)."""
        return SegmentStep.of(
            step, self._run_order.micro_batches(step), step_seeds(self.run_seed, step)
        )

    def _write(self, job: _Job) -> None:
        writer = self._writer
        if job.tensors:
            cpu = {name: t.to("cpu") for name, t in job.tensors.items()}
            steps = None
            if job.segment is not None:
                steps = [
                    s if isinstance(s, SegmentStep) else self._in_run_order(s) for s in job.segment
                ]
            entry = writer.checkpoint(job.index, cpu, job.meta, steps)
            if job.final:
                writer.model(cpu)
            manifest_path = writer.write_manifest()
            root = self.proof_dir
            self._notify(
                CheckpointRecord(
                    self.run_id,
                    entry.index,
                    entry.step,
                    root / entry.checkpoint.file,
                    entry.checkpoint.sha256,
                    root / entry.segment.file if entry.segment is not None else None,
                    entry.segment_sha256,
                    entry.leaf,
                    manifest_path,
                )
            )
        else:
            last = writer.manifest.entries[-1]
            data = (self.proof_dir / last.checkpoint.file).read_bytes()
            tensors, _ = load_state_bytes(data, "last checkpoint")
            writer.model(tensors)
            manifest_path = writer.write_manifest()
        if job.final:
            fin = writer.manifest.final
            assert fin is not None
            self._notify(
                FinalRecord(
                    self.run_id,
                    fin.index,
                    fin.step,
                    self.proof_dir / fin.model.file,
                    fin.model.sha256,
                    manifest_path,
                )
            )

    def _notify(self, record: CheckpointRecord | FinalRecord) -> None:
        for listener in self.listeners:
            listener(record)

    def _resume(self, spec_bytes: bytes) -> None:
        man = self.manifest
        if man.run_id != self.run_id:
            raise ResumeError(
                f"proof belongs to run {to_hex(man.run_id)}, not {to_hex(self.run_id)}"
            )
        if man.spec_sha256 != sha256(spec_bytes):
            raise ResumeError("proof was recorded under a different spec")
        if not man.entries:
            raise ResumeError("manifest lists no checkpoint to resume from")
        if man.final is not None:
            raise ResumeError("run is already finalized")
        last = man.entries[-1]
        data = (self.proof_dir / last.checkpoint.file).read_bytes()
        if sha256(data) != last.checkpoint.sha256:
            raise ResumeError(f"checkpoint {last.index} does not match its manifest digest")
        tensors, meta = load_checkpoint_bytes(data, f"checkpoint {last.index}")
        if not self.state.optimizers:
            # no optimizer to resume into yet (a framework builds it when training
            # starts): the model now, the rest when attach() hands over the optimizers
            self._awaiting = (tensors, meta)
            self._finalize_only = (
                "it resumed into a state without an optimizer (attach the trainer's first)"
            )
            tensors = {k: v for k, v in tensors.items() if k.startswith("model.")}
        self.step = self.state.restore(tensors, meta, "resume")
        self._checkpointed = self.step
        self._index = last.index + 1
