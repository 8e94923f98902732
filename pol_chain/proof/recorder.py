"""The recorder: Lightning-callback-like hooks that turn any PyTorch loop into a proof.

Usage from a plain loop::

    rec = Recorder(proof_dir, spec, run_id, run_seed, model, optimizer, scheduler)
    for step, idx in rec.sampler().steps(rec.step):
        ...                                     # forward/backward/optimizer/scheduler step,
        rec.on_step_end(idx, rec.step_seeds())  # augmentation from rec.generator("augment")
    rec.close(final=True)

Every ``k`` steps (and at :meth:`close`) the full state is cloned on its device and put
on a *bounded* queue; a background thread copies it to the CPU, serializes it
(deterministic safetensors), writes checkpoint and segment atomically, computes the leaf,
rewrites the manifest (last) and hands a :class:`CheckpointRecord` to every listener.
When the queue is full, training waits (back-pressure): memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pol_chain.commitment import ZERO32
from pol_chain.commitment import leaf as make_leaf
from pol_chain.proof.canonical import atomic_write, canonical_json, from_hex, sha256, to_hex
from pol_chain.proof.engine import (
    StepSampler,
    capture_state,
    model_tensors,
    restore_state,
    step_seeds,
)
from pol_chain.proof.errors import RecorderError, ResumeError
from pol_chain.proof.manifest import Manifest, checkpoint_name, segment_name
from pol_chain.proof.seeds import derive_seed, make_generator
from pol_chain.proof.serialization import load_state_bytes, write_state
from pol_chain.proof.spec import TaskSpec

__all__ = [
    "MODEL_FILE",
    "SEGMENT_FORMAT",
    "CheckpointRecord",
    "FinalRecord",
    "Listener",
    "Recorder",
]

SEGMENT_FORMAT = "polchain-segment-v1"
MODEL_FILE = "model.safetensors"


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
    meta: dict[str, Any]
    segment: list[dict[str, Any]] | None
    final: bool


class Recorder:
    """Records checkpoints and segments of a run into ``proof_dir``.

    With ``resume=True`` it loads the last complete checkpoint of an existing proof
    directory into ``model``/``optimizer``/``scheduler`` and continues from its step;
    files left behind by a crash after that checkpoint are ignored and overwritten.
    """

    def __init__(
        self,
        proof_dir: Path | str,
        spec: TaskSpec,
        run_id: bytes,
        run_seed: bytes,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        listeners: Iterable[Listener] = (),
        queue_size: int = 2,
        resume: bool = False,
    ) -> None:
        if len(run_id) != 32 or len(run_seed) != 32:
            raise ValueError("run_id and run_seed must be 32 bytes each")
        self.proof_dir = Path(proof_dir)
        self.spec, self.run_id, self.run_seed = spec, bytes(run_id), bytes(run_seed)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.k = spec.k
        self.listeners = list(listeners)
        self.step = 0
        self._segment: list[dict[str, Any]] = []
        self._errors: list[BaseException] = []
        self._closed = False
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.proof_dir.mkdir(parents=True, exist_ok=True)
        spec_bytes = spec.to_bytes()
        manifest_path = self.proof_dir / "manifest.json"
        if resume and manifest_path.exists():
            self.manifest = Manifest.from_bytes(manifest_path.read_bytes())
            self._resume(spec_bytes)
        else:
            if manifest_path.exists():
                raise ResumeError(f"{self.proof_dir} already holds a proof; pass resume=True")
            atomic_write(self.proof_dir / "spec.json", spec_bytes)
            self.manifest = Manifest.new(self.run_id, spec.digest, self.k, spec.total_steps)
            self._index = 0
            self._enqueue(final=False)
        self._worker = threading.Thread(target=self._work, name="polchain-recorder", daemon=True)
        self._worker.start()

    # -- hooks -------------------------------------------------------------------------
    def sampler(self) -> StepSampler:
        """Return the run's data order (per-epoch permutations from the run seed)."""
        return StepSampler(
            self.run_seed, self.spec.dataset.size, self.spec.batch_size, self.spec.epochs
        )

    def step_seeds(self, step: int | None = None) -> dict[str, int]:
        """Return the per-step seeds (``augment``, ``dropout``) of ``step`` (default: next)."""
        return step_seeds(self.run_seed, self.step if step is None else step)

    def generator(
        self, purpose: str, step: int | None = None, device: str | torch.device = "cpu"
    ) -> torch.Generator:
        """Return a generator for ``purpose`` at ``step`` (default: the next step)."""
        return make_generator(
            derive_seed(self.run_seed, purpose, self.step if step is None else step), device
        )

    def on_step_end(
        self, indices: torch.Tensor | Sequence[int], seeds: Mapping[str, int] | None = None
    ) -> None:
        """Record one finished optimizer step on batch ``indices`` with its ``seeds``."""
        self._raise_errors()
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else [int(i) for i in indices]
        entry = {
            "indices": idx,
            "seeds": dict(seeds) if seeds is not None else self.step_seeds(),
            "step": self.step,
        }
        self._segment.append(entry)
        self.step += 1
        if self.step % self.k == 0:
            self._enqueue(final=False)

    def close(self, final: bool = True) -> None:
        """Checkpoint any pending steps, write the final model (``final``), and join."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._segment or final:
                self._enqueue(final=final, force=bool(self._segment))
        finally:
            self._queue.put(None)
            self._worker.join()
        self._raise_errors()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close(final=True)
        else:
            self._closed = True
            self._queue.put(None)
            self._worker.join()

    # -- internals ---------------------------------------------------------------------
    def _raise_errors(self) -> None:
        if self._errors:
            raise RecorderError(f"recorder failed: {self._errors[0]!r}") from self._errors[0]

    def _enqueue(self, final: bool, force: bool = True) -> None:
        tensors, meta = capture_state(self.model, self.optimizer, self.scheduler, self.step)
        segment = self._segment if self._index > 0 else None
        if not force:  # final model only; the last checkpoint is already queued
            tensors, segment = {}, None
        job = _Job(self._index, self.step, tensors, meta, segment, final)
        if force:
            self._index += 1
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

    def _write(self, job: _Job) -> None:
        root = self.proof_dir
        if job.tensors:
            cpu = {name: t.to("cpu") for name, t in job.tensors.items()}
            ckpt_digest = write_state(root / checkpoint_name(job.index), cpu, job.meta)
            seg_digest, seg_entry = ZERO32, None
            if job.segment is not None:
                body = canonical_json(
                    {
                        "end_step": job.step,
                        "format": SEGMENT_FORMAT,
                        "index": job.index,
                        "start_step": job.step - len(job.segment),
                        "steps": job.segment,
                    }
                )
                atomic_write(root / segment_name(job.index), body)
                seg_digest = sha256(body)
                seg_entry = {"file": segment_name(job.index), "sha256": to_hex(seg_digest)}
            leaf = make_leaf(self.run_id, job.index, job.step, ckpt_digest, seg_digest)
            self.manifest.entries.append(
                {
                    "checkpoint": {
                        "file": checkpoint_name(job.index),
                        "sha256": to_hex(ckpt_digest),
                    },
                    "index": job.index,
                    "leaf": to_hex(leaf),
                    "segment": seg_entry,
                    "step": job.step,
                }
            )
            if job.final:
                self._write_model(cpu, job)
            self.manifest.write(root)
            record = CheckpointRecord(
                self.run_id,
                job.index,
                job.step,
                root / checkpoint_name(job.index),
                ckpt_digest,
                root / segment_name(job.index) if job.segment is not None else None,
                seg_digest,
                leaf,
                root / "manifest.json",
            )
            self._notify(record)
        else:
            last = self.manifest.entries[-1]
            data = (root / last["checkpoint"]["file"]).read_bytes()
            tensors, _ = load_state_bytes(data, "last checkpoint")
            self._write_model(tensors, job)
            self.manifest.write(root)
        if job.final:
            fin = self.manifest.final
            assert fin is not None
            self._notify(
                FinalRecord(
                    self.run_id,
                    int(fin["index"]),
                    int(fin["step"]),
                    root / MODEL_FILE,
                    from_hex(fin["model"]["sha256"]),
                    root / "manifest.json",
                )
            )

    def _write_model(self, tensors: Mapping[str, torch.Tensor], job: _Job) -> None:
        last = self.manifest.entries[-1]
        digest = write_state(
            self.proof_dir / MODEL_FILE, model_tensors(tensors), {"format": "polchain-model-v1"}
        )
        self.manifest.data["final"] = {
            "index": int(last["index"]),
            "model": {"file": MODEL_FILE, "sha256": to_hex(digest)},
            "step": int(last["step"]),
        }

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
        data = (self.proof_dir / last["checkpoint"]["file"]).read_bytes()
        if sha256(data) != from_hex(last["checkpoint"]["sha256"]):
            raise ResumeError(f"checkpoint {last['index']} does not match its manifest digest")
        tensors, meta = load_state_bytes(data, f"checkpoint {last['index']}")
        self.step = restore_state(
            self.model, self.optimizer, self.scheduler, tensors, meta, "resume"
        )
        self._index = int(last["index"]) + 1
