"""Infinitesimal update (Fang et al., EuroS&P'23): many tiny interpolated steps, tiny lr.

The forger claims a learning rate so small that replaying a step barely moves the
weights, and cuts the straight line W0 → W_T into as many checkpoints as it likes (here
``k = 1``: one checkpoint per step, over ``epochs_factor`` times the honest epochs). A verifier with *absolute* thresholds replays a
segment, lands on W_i (the tiny lr moved nothing) and measures ‖W_i − W_{i+1}‖ =
‖W_T − W0‖ / n, which is below its threshold once n is large enough. No gradient step
is needed at all.

``claim="spec"`` writes the tiny lr into the run's own spec (the forger registers that
spec) and every checkpoint; ``claim="checkpoint"`` keeps the honest spec and claims the
tiny lr only in checkpoint metadata (what the reference reads).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from pol_chain.attacks._proof import (
    AttackCost,
    ForgedProof,
    State,
    StepList,
    checkpoint_meta,
    fresh_bundle,
    initial_state,
    load_target,
    param_names,
    require_claim,
    run_order,
    write_proof,
)
from pol_chain.attacks.interpolation import segment_bounds
from pol_chain.format import CheckpointMeta
from pol_chain.proof.spec import TaskSpec

__all__ = ["forge_infinitesimal_proof", "infinitesimal_proof_spec", "infinitesimal_spec"]


def infinitesimal_spec(
    spec: TaskSpec, lr_factor: float = 1e-6, k: int = 1, epochs_factor: int = 2
) -> TaskSpec:
    """The forger's spec: ``spec`` with checkpoints every ``k`` steps, ``epochs_factor``
    times the epochs (more, smaller steps) and the base lr multiplied by ``lr_factor``."""
    lr = spec.config.get("lr")
    if isinstance(lr, dict):
        new_lr: Any = {**lr, "base": float(lr["base"]) * lr_factor}
    else:
        new_lr = float(lr if lr is not None else 0.1) * lr_factor
    return spec.replace(config={"epochs": spec.epochs * epochs_factor, "k": k, "lr": new_lr})


def infinitesimal_proof_spec(
    spec: TaskSpec,
    claim: Literal["spec", "checkpoint"] = "spec",
    *,
    lr_factor: float = 1e-6,
    k: int = 1,
    epochs_factor: int = 2,
) -> TaskSpec:
    """The spec the forged proof carries (register the run with its digest)."""
    tiny = infinitesimal_spec(spec, lr_factor, k, epochs_factor)
    if claim == "spec":
        return tiny
    return spec.replace(config={"epochs": tiny.epochs, "k": k})


def forge_infinitesimal_proof(
    stolen_model: Path | str | Mapping[str, torch.Tensor],
    out: Path | str,
    spec: TaskSpec,
    run_id: bytes,
    run_seed: bytes,
    *,
    lr_factor: float = 1e-6,
    k: int = 1,
    epochs_factor: int = 2,
    claim: Literal["spec", "checkpoint"] = "spec",
) -> ForgedProof:
    """Forge an infinitesimal-update proof ending at ``stolen_model`` (see module doc).

    ``spec`` is the honest task spec; the proof's spec is :func:`infinitesimal_spec` of it
    (``claim="spec"``) or ``spec`` with the longer run and ``k`` only (``claim="checkpoint"``).
    """
    cost = AttackCost()
    t0 = time.perf_counter()
    target_model, target = load_target(stolen_model)
    tiny = infinitesimal_spec(spec, lr_factor, k, epochs_factor)
    proof_spec = infinitesimal_proof_spec(
        spec, claim, lr_factor=lr_factor, k=k, epochs_factor=epochs_factor
    )
    bundle = fresh_bundle(tiny, run_seed)  # W0: the run seed's own init
    w0 = initial_state(bundle)
    params = param_names(bundle)
    bounds = segment_bounds(proof_spec)
    n = len(bounds)
    states: list[tuple[State, CheckpointMeta]] = [(w0, checkpoint_meta(bundle, 0))]
    segments: list[StepList] = []
    for i, (start, end) in enumerate(bounds, start=1):
        t = i / n
        state: State = {}
        for key, value in target.items():
            if i == n:
                state[key] = value.clone()  # exactly the stolen weights
            elif value.is_floating_point():
                state[key] = w0[key] + (value - w0[key]) * t
            else:
                state[key] = w0[key] + end
        for pid, _key in enumerate(params):
            state[f"optim.{pid}.momentum_buffer"] = torch.zeros_like(w0[params[pid]])
        states.append((state, checkpoint_meta(bundle, end)))  # tiny lr claimed here
        segments.append(run_order(proof_spec, run_seed, start, end))
    leaves, digest = write_proof(out, proof_spec, run_id, states, segments)
    cost.seconds = time.perf_counter() - t0
    cost.notes = {"segments": n, "lr_factor": lr_factor, "claim": claim}
    require_claim(digest, target_model)
    return ForgedProof(Path(out), run_id, leaves, digest, proof_spec, cost, dict(cost.notes))
