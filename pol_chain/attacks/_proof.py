"""Forger's toolkit shared by the adversaries: read and write proof directories.

Everything here goes through the engine's public functions (the same serializer,
leaf definition, data order and training step the honest recorder uses), so a forged
proof is byte-for-byte in the format a verifier expects; only its *content* lies.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pol_chain.format import (
    CheckpointMeta,
    Segment,
    SegmentStep,
    TaskSpec,
    checkpoint_name,
)
from pol_chain.proof.canonical import atomic_write
from pol_chain.proof.engine import (
    StepSampler,
    capture_state,
    restore_state,
    run_step,
    step_seeds,
)
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import read_manifest
from pol_chain.proof.serialization import (
    digest_model,
    load_checkpoint_bytes,
    load_model_bytes,
)
from pol_chain.proof.task import TaskBundle
from pol_chain.proof.writer import ProofWriter

__all__ = [
    "AttackCost",
    "ForgedProof",
    "State",
    "StepList",
    "checkpoint_meta",
    "first_per_epoch",
    "fresh_bundle",
    "honest_segment",
    "initial_state",
    "interpolate",
    "interpolation_step",
    "iter_steps",
    "leaves_of",
    "load_checkpoint",
    "load_model_file",
    "load_target",
    "model_digest",
    "model_state",
    "param_names",
    "read_manifest",
    "read_segments",
    "require_claim",
    "run_order",
    "steps_lrs",
    "write_proof",
]

State = dict[str, torch.Tensor]
StepList = list[SegmentStep]


@dataclass
class AttackCost:
    """What a forgery cost: optimizer steps (forward+backward passes) and wall time.

    ``gradient_steps`` counts every forward/backward pass the adversary ran (a double
    backprop counts as two); ``seconds`` is the forger's wall time. Divide by an honest
    run's ``steps`` / ``seconds`` for the cost ratio.
    """

    gradient_steps: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def ratio(self, honest_steps: int, honest_seconds: float) -> dict[str, float]:
        """Return ``{"steps": …, "time": …}``: attacker cost ÷ honest training cost."""
        return {
            "steps": self.gradient_steps / max(1, honest_steps),
            "time": self.seconds / max(1e-9, honest_seconds),
        }


@dataclass(frozen=True)
class ForgedProof:
    """A proof directory written by an adversary, bound to ``run_id``."""

    proof_dir: Path
    run_id: bytes
    leaves: list[bytes]
    model_digest: bytes | None
    spec: TaskSpec
    cost: AttackCost
    details: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self, cost: AttackCost) -> None:
        self.cost = cost

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost.seconds += time.perf_counter() - self.start


def load_checkpoint(proof_dir: Path | str, index: int) -> tuple[State, CheckpointMeta]:
    """Load checkpoint ``index`` of a proof directory (safetensors, data only)."""
    data = (Path(proof_dir) / checkpoint_name(index)).read_bytes()
    return load_checkpoint_bytes(data, f"checkpoint {index}")


def load_model_file(path: Path | str) -> State:
    """Load a model file (``model.safetensors``: parameters and buffers), data only."""
    return load_model_bytes(Path(path).read_bytes(), str(path))


def load_target(stolen_model: Path | str | Mapping[str, torch.Tensor]) -> tuple[State, State]:
    """The stolen model (a model file's path, or its tensors named without ``model.``) as
    ``(model-file tensors, checkpoint-named copies)``."""
    target_model = (
        load_model_file(stolen_model)
        if isinstance(stolen_model, str | Path)
        else dict(stolen_model)
    )
    return target_model, model_state(target_model)


def initial_state(bundle: TaskBundle) -> State:
    """Checkpoint-named copies of the model's current tensors (parameters and buffers)."""
    return {f"model.{n}": v.detach().clone() for n, v in bundle.model.state_dict().items()}


def param_names(bundle: TaskBundle) -> list[str]:
    """Checkpoint names (``model.<name>``) of the model's trainable parameters, in order."""
    return [f"model.{n}" for n, _ in bundle.model.named_parameters()]


def run_order(spec: TaskSpec, run_seed: bytes, start: int, end: int) -> StepList:
    """Segment entries (indices and per-step seeds) of steps ``start..end-1`` of a run."""
    sampler = StepSampler(run_seed, spec.dataset.size, spec.batch_size, spec.epochs)
    return [
        SegmentStep(t, tuple(sampler.batch(t).tolist()), step_seeds(run_seed, t))
        for t in range(start, end)
    ]


def checkpoint_meta(bundle: TaskBundle, step: int) -> CheckpointMeta:
    """The metadata an honest checkpoint at ``step`` carries (lr per group from the spec's
    schedule at that position)."""
    _, meta = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, 0)
    lrs: tuple[float | None, ...] = meta.lr
    sched = bundle.scheduler
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        lrs = tuple(
            float(b * fn(step)) for b, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)
        )
    return CheckpointMeta(step=step, scheduler_position=step, lr=lrs)


def steps_lrs(bundle: TaskBundle, start: int, end: int) -> list[float]:
    """The (first group's) lr of steps ``start..end-1`` under the bundle's schedule."""
    sched = bundle.scheduler
    assert bundle.optimizer is not None
    base = float(bundle.optimizer.param_groups[0]["initial_lr"]) if sched is not None else None
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR) and base is not None:
        return [base * sched.lr_lambdas[0](t) for t in range(start, end)]
    return [float(bundle.optimizer.param_groups[0]["lr"])] * (end - start)


def first_per_epoch(epochs: Sequence[int]) -> list[int]:
    """The first segment (1-based) of each epoch, given each segment's epoch, never the
    run's first or last segment (epochs with no other segment get none)."""
    n = len(epochs)
    chosen: list[int] = []
    for e in sorted(set(epochs)):
        members = [i + 1 for i, ep in enumerate(epochs) if ep == e and i + 1 not in (1, n)]
        if members:
            chosen.append(members[0])
    return chosen


def interpolation_step(
    bundle: TaskBundle,
    cur: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    params: Sequence[str],
    start: int,
    end: int,
    left: int,
) -> tuple[State, CheckpointMeta]:
    """A forged segment ``start..end`` that moves ``cur`` 1/``left`` of the straight line to
    ``target`` (exactly ``target`` when ``left`` is 1; integer buffers advance by the step
    count), with the momentum buffers that would carry that jump at the segment's lr;
    returns the checkpoint and its metadata."""
    t = 1.0 / left
    nxt: State = {}
    for key, value in target.items():
        if left == 1:
            nxt[key] = value.clone()  # exactly the stolen weights
        elif value.is_floating_point():
            nxt[key] = cur[key] + (value - cur[key]) * t
        else:
            nxt[key] = cur[key] + (end - start)
    lr = steps_lrs(bundle, start, end)
    for pid, key in enumerate(params):  # velocity that would carry the jump at this lr
        nxt[f"optim.{pid}.momentum_buffer"] = (cur[key] - nxt[key]) / (sum(lr) or 1.0)
    return nxt, checkpoint_meta(bundle, end)


def honest_segment(
    bundle: TaskBundle,
    state: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    cost: AttackCost | None = None,
) -> tuple[State, CheckpointMeta]:
    """Run ``steps`` honestly from ``state`` with the engine's own step (what a replay of
    that segment computes); return the end state and its metadata."""
    # clone: the optimizer adopts the given tensors and updates them in place
    private = {k: v.detach().clone() for k, v in state.items()}
    step = restore_state(bundle.model, bundle.optimizer, bundle.scheduler, private, meta, "forger")
    for st in steps:
        run_step(bundle, torch.tensor(st.indices, dtype=torch.int64), st.seeds)
        step += 1
    if cost is not None:
        cost.gradient_steps += len(steps)
    tensors, out_meta = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, step)
    return {k: v.detach().cpu() for k, v in tensors.items()}, out_meta


def write_proof(
    proof_dir: Path | str,
    spec: TaskSpec,
    run_id: bytes,
    states: Sequence[tuple[Mapping[str, torch.Tensor], CheckpointMeta]],
    segments: Sequence[StepList],
    *,
    final: bool = True,
    extra_files: Mapping[str, bytes] | None = None,
) -> tuple[list[bytes], bytes | None]:
    """Write a complete proof directory for ``run_id`` with the engine's own writer: spec,
    checkpoints ``states`` (index 0 is W0), ``segments`` (``segments[i-1]`` leads to
    checkpoint i), leaves and manifest, and the final model file when ``final``. Returns
    ``(leaves, model digest)``."""
    if len(segments) != len(states) - 1:
        raise ValueError(f"{len(states)} checkpoints need {len(states) - 1} segments")
    root = Path(proof_dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    writer = ProofWriter.create(root, spec, run_id)
    for index, (tensors, meta) in enumerate(states):
        writer.checkpoint(index, dict(tensors), meta, segments[index - 1] if index else None)
    digest = writer.model(dict(states[-1][0])).sha256 if final else None
    for name, data in (extra_files or {}).items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    writer.write_manifest()
    return writer.manifest.leaves, digest


def read_segments(proof_dir: Path | str) -> dict[int, StepList]:
    """Every segment's steps of a proof directory (canonical JSON, data only)."""
    root = Path(proof_dir)
    out: dict[int, StepList] = {}
    for entry in read_manifest(root).entries:
        if entry.segment is not None:
            seg = Segment.from_bytes((root / entry.segment.file).read_bytes())
            out[entry.index] = list(seg.steps)
    return out


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], t: float) -> State:
    """``(1-t)·a + t·b`` for floating tensors; integer tensors taken from ``b`` if ``t ≥ 1``
    else from ``a``."""
    out: State = {}
    for k, va in a.items():
        vb = b[k]
        if va.is_floating_point():
            out[k] = (va + (vb - va) * t).to(va.dtype)
        else:
            out[k] = (vb if t >= 1 else va).clone()
    return out


def model_state(tensors: Mapping[str, torch.Tensor]) -> State:
    """Prefix a model file's tensors with ``model.`` (checkpoint naming)."""
    return {f"model.{k}": v.clone() for k, v in tensors.items()}


def fresh_bundle(spec: TaskSpec, run_seed: bytes) -> TaskBundle:
    """The task built from ``spec`` with W0 from ``run_seed`` (the engine's builder)."""
    return build_bundle(spec, run_seed)


def model_digest(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The model digest of model-file tensors (no ``model.`` prefix)."""
    return digest_model(dict(tensors))


def require_claim(digest: bytes | None, stolen: Mapping[str, torch.Tensor]) -> bytes:
    """Check that a forged proof's model digest is the stolen model's; return it."""
    want = model_digest(stolen)
    if digest != want:
        raise RuntimeError("the forged proof does not end at the stolen model's digest")
    return want


def leaves_of(proof_dir: Path | str) -> list[bytes]:
    """The manifest's leaves."""
    return read_manifest(proof_dir).leaves


def iter_steps(segments: Iterable[StepList]) -> Iterable[SegmentStep]:
    """Flatten segments into steps."""
    for seg in segments:
        yield from seg
