"""Interpolation forgeries: blindfold top-Q (Fang et al.) and rank-matched init (Zhang et al.).

:func:`forge_interpolated_proof` writes a proof that ends at stolen weights W_T for a
run id / run seed of the adversary's own. Its trajectory is a straight line from W0 to
W_T cut into the spec's segments, except one *honest* segment per epoch: there the forger
really runs the spec's k steps from the current checkpoint (the engine's own training
step, the run seed's batches), so a replay of it is bitwise exact. A verifier that only
replays the top-Q segments per epoch by update size (the reference) sees only those:

- the honest segments are made the largest of their epoch by seeding their starting
  momentum buffer along ``W − W_T`` (``boost``: the fraction of the remaining distance the
  momentum alone would cover); their update sizes exceed every interpolation step;
- every other segment is an interpolation step ``(W_T − W)/(interpolation steps left)``
  with a plausible momentum buffer and BatchNorm counters, never replayed by top-Q.

``init="seeded"`` keeps W0 the run seed's own initialisation (so pol_chain's init rule
passes and only replay can catch the forgery: the blindfold attack); ``init="rank_matched"``
reorders a fresh initialisation inside every Conv/Linear tensor to follow the ranks of
W_T's values (Zhang et al.): the value distribution is exactly an init's, so the
reference's KS test passes, while ‖W_T − W0‖ over those tensors shrinks (to ≈ 0.3× on
digits).

Cost: ``segments_per_epoch × k`` honest steps of the epochs' honest segments; no
gradient step elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from pol_chain.attacks._proof import (
    AttackCost,
    ForgedProof,
    State,
    StepList,
    checkpoint_meta,
    first_per_epoch,
    fresh_bundle,
    honest_segment,
    interpolation_step,
    load_target,
    param_names,
    require_claim,
    run_order,
    steps_lrs,
    write_proof,
)
from pol_chain.attacks.reference import init_layers
from pol_chain.format import CheckpointMeta
from pol_chain.proof.spec import TaskSpec

__all__ = [
    "InitKind",
    "forge_interpolated_proof",
    "momentum_displacement",
    "rank_matched_init",
    "segment_bounds",
    "segment_epochs",
]

InitKind = Literal["seeded", "rank_matched"]


def rank_matched_init(
    init: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], layers: list[str]
) -> State:
    """Reorder each tensor of ``init`` named in ``layers`` so its ranks follow ``target``'s
    (the i-th smallest init value goes where ``target`` has its i-th smallest value)."""
    out = {k: v.clone() for k, v in init.items()}
    for name in layers:
        flat = init[name].reshape(-1)
        order = torch.argsort(target[name].reshape(-1), stable=True)
        permuted = torch.empty_like(flat)
        permuted[order] = torch.sort(flat, stable=True).values
        out[name] = permuted.reshape(init[name].shape)
    return out


def segment_bounds(spec: TaskSpec) -> list[tuple[int, int]]:
    """``(start_step, end_step)`` of segments 1..n of a run of ``spec``."""
    k, total = spec.k, spec.total_steps
    return [(s, min(s + k, total)) for s in range(0, total, k)]


def segment_epochs(spec: TaskSpec) -> list[int]:
    """The epoch of segments 1..n (pol_chain's and the reference's rule: the end step's)."""
    return [max(0, end - 1) // max(1, spec.steps_per_epoch) for _, end in segment_bounds(spec)]


def momentum_displacement(lrs: list[float], momentum: float) -> float:
    """Σ_t lr_t·μ^t: how far k SGD-momentum steps carry a unit initial momentum buffer."""
    return sum(lr * momentum ** (t + 1) for t, lr in enumerate(lrs))


def forge_interpolated_proof(
    stolen_model: Path | str | Mapping[str, torch.Tensor],
    out: Path | str,
    spec: TaskSpec,
    run_id: bytes,
    run_seed: bytes,
    *,
    init: InitKind = "seeded",
    boost: float = 0.5,
    honest_segments: list[int] | None = None,
) -> ForgedProof:
    """Forge a proof in ``out`` that ends at ``stolen_model``, bound to ``run_id``/``run_seed``.

    ``stolen_model``: the model file (path) or its tensors (names without ``model.``).
    ``honest_segments``: segment numbers (1-based) computed honestly; default: the second
    segment of epoch 0 and the first segment of every later epoch (segment 1 starts at W0,
    which may carry no momentum, so it cannot be boosted).
    The returned proof's last checkpoint holds exactly the stolen model (its digest).
    """
    cost = AttackCost()
    start_time = time.perf_counter()
    target_model, target = load_target(stolen_model)
    bundle = fresh_bundle(spec, run_seed)
    w0_model = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    if init == "rank_matched":
        w0_model = rank_matched_init(w0_model, target_model, init_layers(bundle))
    elif init != "seeded":
        raise ValueError(f"unknown init kind {init!r}")
    bounds = segment_bounds(spec)
    epochs = segment_epochs(spec)
    n = len(bounds)
    if honest_segments is None:
        honest_segments = first_per_epoch(epochs)
    honest = set(honest_segments)
    if 1 in honest or n in honest:
        raise ValueError("the first and last segment cannot be the honest ones here")
    param_keys = param_names(bundle)
    pids = {key: i for i, key in enumerate(param_keys)}
    assert bundle.optimizer is not None
    momentum = float(bundle.optimizer.param_groups[0].get("momentum", 0.0))
    cur: State = {f"model.{k}": v for k, v in w0_model.items()}
    meta: CheckpointMeta = checkpoint_meta(bundle, 0)
    states: list[tuple[State, CheckpointMeta]] = [(dict(cur), meta)]
    segments: list[StepList] = []
    interp_left = n - len(honest)
    for i, (start, end) in enumerate(bounds, start=1):
        steps = run_order(spec, run_seed, start, end)
        segments.append(steps)
        if i in honest:
            lrs = steps_lrs(bundle, start, end)
            scale = boost / max(1e-12, momentum_displacement(lrs, momentum))
            boosted = dict(cur)
            for key in param_keys:  # the momentum buffer a replay will start from
                boosted[f"optim.{pids[key]}.momentum_buffer"] = (cur[key] - target[key]) * scale
            states[-1] = (boosted, states[-1][1])
            cur, meta = honest_segment(bundle, boosted, states[-1][1], steps, cost)
        else:
            cur, meta = interpolation_step(bundle, cur, target, param_keys, start, end, interp_left)
            interp_left -= 1
        states.append((dict(cur), meta))
    leaves, digest = write_proof(out, spec, run_id, states, segments)
    cost.seconds = time.perf_counter() - start_time
    cost.notes = {"honest_segments": sorted(honest), "init": init, "segments": n}
    require_claim(digest, target_model)
    return ForgedProof(
        Path(out), run_id, leaves, digest, spec, cost, {"honest_segments": sorted(honest)}
    )
