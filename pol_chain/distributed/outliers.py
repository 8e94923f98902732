"""Outlying updates: the submissions the coordinator replays whatever the draw says.

A worker's update is its state minus the round's base state, over the model's floating
tensors (parameters and float buffers). Three cheap tests, none of them a verdict — an
outlier is only *replayed*, and rejected only if its replay fails:

- ``duplicate``: the update is (cosine ≥ ``duplicate_cos``) another worker's update of
  this round or any update of the previous round — a copier, or a stale worker
  resubmitting an old update;
- ``norm``: with every tensor scaled by the median (over workers) of its own update
  norm, so that each tensor counts alike (BatchNorm statistics would otherwise dominate
  early rounds), the update's norm is off the median by more than ``norm_factor`` either
  way — a scaled update, a lazy worker's short one, a zero update;
- ``direction``: on the same scaled updates, the cosine with at least half of the other
  workers' updates is below ``direction_cos`` — a sign-flipped or random update; the
  trainable parameters and the other tensors are compared apart, so honest BatchNorm
  statistics cannot hide a random update of the weights.

Thresholds: on digits (4 workers, H = 5, 30 rounds) honest updates stayed within
0.66–1.36 of the median norm and had pairwise cosines ≥ 0.19; a sign flip had ≤ −0.08
with every honest update, a lazy worker doing half its steps 0.24–0.62 of the norm.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["OutlierRule", "find_outliers", "model_update"]


@dataclass(frozen=True)
class OutlierRule:
    """Thresholds of the three tests (see the module docstring)."""

    norm_factor: float = 2.0
    direction_cos: float = 0.1
    duplicate_cos: float = 0.9999


def model_update(
    state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state - base`` per floating ``model.*`` tensor, flattened, float64, CPU."""
    out: dict[str, torch.Tensor] = {}
    for name in sorted(state):
        t = state[name]
        if name.startswith("model.") and t.is_floating_point() and name in base:
            b = base[name].detach().to("cpu", torch.float64).reshape(-1)
            out[name] = t.detach().to("cpu", torch.float64).reshape(-1) - b
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b) / (na * nb)


def find_outliers(
    updates: Mapping[int, Mapping[str, torch.Tensor]],
    previous: Sequence[torch.Tensor] = (),
    rule: OutlierRule | None = None,
    parameters: Collection[str] | None = None,
) -> dict[int, list[str]]:
    """``{rank: [tests it failed]}`` for the round's ``updates`` (from
    :func:`model_update`); ``previous`` holds the last round's flat updates. With
    ``parameters`` (the trainable tensors' names), the direction test looks at the
    parameters and at the other tensors (BatchNorm statistics) apart: an update that
    points elsewhere in either disagrees."""
    rule = rule or OutlierRule()
    ranks = sorted(updates)
    flagged: dict[int, list[str]] = {}

    def flag(rank: int, test: str) -> None:
        if test not in flagged.setdefault(rank, []):
            flagged[rank].append(test)

    if not ranks:
        return flagged
    names = sorted(set.intersection(*(set(updates[r]) for r in ranks)))
    flat = {
        r: torch.cat([updates[r][k] for k in names]) if names else torch.zeros(0) for r in ranks
    }
    for i, a in enumerate(ranks):
        for b in ranks[i + 1 :]:
            if _cos(flat[a], flat[b]) >= rule.duplicate_cos:
                flag(a, "duplicate")
                flag(b, "duplicate")
        for old in previous:
            if old.shape == flat[a].shape and _cos(flat[a], old) >= rule.duplicate_cos:
                flag(a, "duplicate")
    n = len(ranks)
    if n < 2:
        return {r: flagged[r] for r in sorted(flagged)}
    scales = {}
    for k in names:
        norms = sorted(float(updates[r][k].norm()) for r in ranks)
        if norms[n // 2] > 0:
            scales[k] = norms[n // 2]
    if not scales:
        return {r: flagged[r] for r in sorted(flagged)}
    trainable = set(parameters) if parameters is not None else set(scales)
    groups = [
        g
        for g in ([k for k in scales if k in trainable], [k for k in scales if k not in trainable])
        if g
    ]
    scaled = {r: [torch.cat([updates[r][k] / scales[k] for k in g]) for g in groups] for r in ranks}
    sizes = {r: math.sqrt(sum(float(part.norm()) ** 2 for part in scaled[r])) for r in ranks}
    median = sorted(sizes.values())[n // 2]
    if median > 0:
        for r in ranks:
            ratio = sizes[r] / median
            if ratio > rule.norm_factor or ratio < 1.0 / rule.norm_factor:
                flag(r, "norm")
    need = math.ceil((n - 1) / 2)
    for r in ranks:
        against = sum(
            1
            for o in ranks
            if o != r
            and min(_cos(a, b) for a, b in zip(scaled[r], scaled[o], strict=True))
            < rule.direction_cos
        )
        if against >= need:
            flag(r, "direction")
    return {r: flagged[r] for r in sorted(flagged)}
