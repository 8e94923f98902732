"""Momentum steering: optimizer state chosen so that honest replays are pulled to a target.

Every segment is computed honestly (the engine's own step on the run seed's batches), so
the *parameters* of each checkpoint are exactly what a replay produces — except that the
forger writes into each checkpoint the momentum buffer it needs for the next segment:
SGD with momentum carries an initial buffer m over k steps by −Σ_t lr_t·μ^t·m, so choosing
m = (W − target)/Σ_t lr_t·μ^t (then refining it on the last segment by a few fixed-point
passes) drags the trajectory along the straight line to the stolen weights W_T. A
verifier that compares parameters only (the reference) sees exact replays; the stored
momentum never matches the momentum the replay ends with.

Checkpoint 0 carries no optimizer state (pol_chain's init rule forbids it), so segment 1
is plain honest training from W0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import torch

from pol_chain.attacks._proof import (
    AttackCost,
    ForgedProof,
    State,
    StepList,
    checkpoint_meta,
    fresh_bundle,
    honest_segment,
    initial_state,
    load_target,
    param_names,
    require_claim,
    run_order,
    steps_lrs,
    write_proof,
)
from pol_chain.attacks.interpolation import momentum_displacement, segment_bounds
from pol_chain.format import CheckpointMeta
from pol_chain.proof.spec import TaskSpec

__all__ = ["forge_momentum_steering_proof"]


def forge_momentum_steering_proof(
    stolen_model: Path | str | Mapping[str, torch.Tensor],
    out: Path | str,
    spec: TaskSpec,
    run_id: bytes,
    run_seed: bytes,
    *,
    refine_passes: int = 4,
) -> ForgedProof:
    """Forge a momentum-steered proof ending at ``stolen_model`` (see module doc)."""
    cost = AttackCost()
    t0 = time.perf_counter()
    target_model, target = load_target(stolen_model)
    bundle = fresh_bundle(spec, run_seed)
    params = param_names(bundle)
    assert bundle.optimizer is not None
    mu = float(bundle.optimizer.param_groups[0].get("momentum", 0.0))
    if mu <= 0:
        raise ValueError("momentum steering needs an optimizer with momentum")
    cur = initial_state(bundle)
    meta: CheckpointMeta = checkpoint_meta(bundle, 0)
    states: list[tuple[State, CheckpointMeta]] = [(cur, meta)]
    segments: list[StepList] = []
    bounds = segment_bounds(spec)
    n = len(bounds)
    residual = 0.0
    for i, (start, end) in enumerate(bounds, start=1):
        steps = run_order(spec, run_seed, start, end)
        segments.append(steps)
        if i == 1:
            cur, meta = honest_segment(bundle, cur, meta, steps, cost)
            states.append((cur, meta))
            continue
        s = momentum_displacement(steps_lrs(bundle, start, end), mu)
        goal = {k: cur[k] + (target[k] - cur[k]) / (n - i + 1) for k in params}
        buf = {k: (cur[k] - goal[k]) / s for k in params}
        passes = refine_passes if i == n else 1
        for _ in range(passes):
            start_state = dict(cur)
            for pid, key in enumerate(params):
                start_state[f"optim.{pid}.momentum_buffer"] = buf[key]
            landed, landed_meta = honest_segment(bundle, start_state, meta, steps, cost)
            miss = {k: landed[k] - goal[k] for k in params}
            residual = float(torch.cat([m.reshape(-1) for m in miss.values()]).norm())
            buf = {k: buf[k] + miss[k] / s for k in params}
        # the previous checkpoint now stores the steering buffer its replay starts from
        states[-1] = (start_state, states[-1][1])
        if i == n:
            landed = {**landed, **target}  # the stolen weights, exactly
        cur, meta = landed, landed_meta
        states.append((cur, meta))
    leaves, digest = write_proof(out, spec, run_id, states, segments)
    cost.seconds = time.perf_counter() - t0
    cost.notes = {"final_residual_l2": residual, "segments": n}
    require_claim(digest, target_model)
    return ForgedProof(Path(out), run_id, leaves, digest, spec, cost, dict(cost.notes))
