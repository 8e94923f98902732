"""Adversarial data (Zhang et al., S&P'22): perturbed batches that steer the verified steps.

The forger follows the blindfold trajectory of :mod:`interpolation` (one "honest" segment
per epoch, straight-line interpolation to the stolen weights W_T elsewhere), but its
honest segments run on *adversarially perturbed* samples: before each step, the batch's
inputs get an L∞-bounded perturbation found by a few sign-gradient ascent passes through
a double backward, maximising ⟨∇_W L(W; x+δ), W − W_T⟩ — so that the step's descent
direction −∇L points at the stolen weights (and is large: the steered segments are the
top-Q updates of their epoch). The perturbed dataset is the data the prover claims it
trained on (``attack/dataset.safetensors`` in the proof directory); a verifier that trusts
prover-supplied data (the reference: its data hash ignores labels and most pixels)
replays those segments exactly. A sample is perturbed only at its first use, so every
steered step replays against the one claimed dataset.

Cost: per steered step, ``iters`` double backward passes (counted as 2 gradient steps
each) plus the step itself.
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
    first_per_epoch,
    fresh_bundle,
    initial_state,
    interpolation_step,
    load_target,
    param_names,
    require_claim,
    run_order,
    write_proof,
)
from pol_chain.attacks.interpolation import segment_bounds, segment_epochs
from pol_chain.format import CheckpointMeta
from pol_chain.proof.engine import capture_state, restore_state, run_step
from pol_chain.proof.seeds import make_generator
from pol_chain.proof.serialization import load_state_bytes, serialize_state
from pol_chain.proof.spec import TaskSpec
from pol_chain.proof.task import TaskBundle

__all__ = ["CLAIMED_DATASET", "forge_adversarial_data_proof", "load_claimed_dataset"]

CLAIMED_DATASET = "attack/dataset.safetensors"
"""Where the forged proof keeps the (perturbed) data it claims to have trained on."""


def load_claimed_dataset(proof_dir: Path | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` a forged proof claims it trained on (safetensors, data only)."""
    tensors, _ = load_state_bytes((Path(proof_dir) / CLAIMED_DATASET).read_bytes(), "dataset")
    return tensors["x"], tensors["y"]


def _perturb(
    bundle: TaskBundle,
    idx: torch.Tensor,
    seeds: Mapping[str, int],
    direction: list[torch.Tensor],
    frozen: torch.Tensor,
    epsilon: float,
    iters: int,
) -> torch.Tensor:
    """Return the steered inputs of one batch (frozen rows unchanged)."""
    assert bundle.train_x is not None and bundle.train_y is not None and bundle.loss_fn
    x0 = bundle.train_x[idx].clone()
    y = bundle.train_y[idx]
    params = [p for p in bundle.model.parameters()]
    buffers = {k: v.clone() for k, v in bundle.model.named_buffers()}
    delta = torch.zeros_like(x0, requires_grad=True)
    free = (~frozen[idx]).view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    step_size = epsilon / max(1, iters) * 1.5
    for _ in range(iters):
        x = (x0 + delta * free).clamp(0.0, 1.0)
        if bundle.augment is not None:
            x = bundle.augment(x, make_generator(int(seeds["augment"])))
        torch.manual_seed(int(seeds["dropout"]))
        bundle.model.train()
        loss = bundle.loss_fn(bundle.model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        objective = sum((g * d).sum() for g, d in zip(grads, direction, strict=True))
        (step,) = torch.autograd.grad(objective, [delta])  # type: ignore[arg-type]
        with torch.no_grad():
            delta += step_size * step.sign()
            delta.clamp_(-epsilon, epsilon)
    with torch.no_grad():  # forward passes moved BatchNorm statistics: put them back
        for name, value in bundle.model.named_buffers():
            value.copy_(buffers[name])
    return (x0 + delta.detach() * free).clamp(0.0, 1.0)


def forge_adversarial_data_proof(
    stolen_model: Path | str | Mapping[str, torch.Tensor],
    out: Path | str,
    spec: TaskSpec,
    run_id: bytes,
    run_seed: bytes,
    *,
    epsilon: float = 0.3,
    iters: int = 3,
) -> ForgedProof:
    """Forge a proof ending at ``stolen_model`` whose verified segments run on perturbed data.

    The perturbed dataset is written to ``out/attack/dataset.safetensors``
    (:func:`load_claimed_dataset`); pass it as the prover's data to a verifier.
    """
    cost = AttackCost()
    t0 = time.perf_counter()
    target_model, target = load_target(stolen_model)
    bundle = fresh_bundle(spec, run_seed)
    assert bundle.train_x is not None and bundle.train_y is not None, "a tensor-pair task"
    bundle.train_x = bundle.train_x.clone()  # the claimed dataset, perturbed in place
    frozen = torch.zeros(len(bundle.train_x), dtype=torch.bool)
    params = param_names(bundle)
    bounds = segment_bounds(spec)
    n = len(bounds)
    steered = first_per_epoch(segment_epochs(spec))
    cur = initial_state(bundle)
    meta: CheckpointMeta = checkpoint_meta(bundle, 0)
    states: list[tuple[State, CheckpointMeta]] = [(dict(cur), meta)]
    segments: list[StepList] = []
    interp_left = n - len(steered)
    for i, (start, end) in enumerate(bounds, start=1):
        steps = run_order(spec, run_seed, start, end)
        segments.append(steps)
        if i in steered:
            private = {k: v.clone() for k, v in cur.items()}
            step = restore_state(
                bundle.model, bundle.optimizer, bundle.scheduler, private, meta, "forger"
            )
            for st in steps:
                idx = torch.tensor(st.indices, dtype=torch.int64)
                direction = [
                    (p.detach() - target[key]).to(p.dtype)
                    for key, p in zip(params, bundle.model.parameters(), strict=True)
                ]
                x_new = _perturb(bundle, idx, st.seeds, direction, frozen, epsilon, iters)
                bundle.train_x[idx] = x_new
                frozen[idx] = True
                run_step(bundle, idx, st.seeds)
                step += 1
                cost.gradient_steps += 1 + 2 * iters
            tensors, meta = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, step)
            cur = {k: v.detach().clone() for k, v in tensors.items()}
        else:
            cur, meta = interpolation_step(bundle, cur, target, params, start, end, interp_left)
            interp_left -= 1
        states.append((dict(cur), meta))
    data = serialize_state({"x": bundle.train_x, "y": bundle.train_y}, {"format": "claimed-data"})
    leaves, digest = write_proof(
        out, spec, run_id, states, segments, extra_files={CLAIMED_DATASET: data}
    )
    require_claim(digest, target_model)
    cost.seconds = time.perf_counter() - t0
    cost.notes = {
        "epsilon": epsilon,
        "perturbed_samples": int(frozen.sum()),
        "steered_segments": steered,
    }
    return ForgedProof(Path(out), run_id, leaves, digest, spec, cost, dict(cost.notes))
