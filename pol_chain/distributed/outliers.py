"""Outlying updates: the submissions the coordinator replays whatever the draw says.

A worker's update is its state minus the round's base state, over the model's floating
tensors (parameters and float buffers). Three cheap tests, none of them a verdict — an
outlier is only *replayed*, and rejected only if its replay fails:

- ``duplicate``: the update is (cosine ≥ ``duplicate_cos``) another worker's update of
  this round or any update of the previous round — a copier, or a stale worker
  resubmitting an old update;
- ``norm``: with every tensor scaled element-wise by the workers' median RMS of its own
  update (so that no tensor dominates by its units — BatchNorm statistics would in early
  rounds — and every tensor counts by its size), the update's norm is off the median by
  more than ``norm_factor`` either way — a scaled update, a lazy worker's short one, an
  empty one;
- ``direction``: on the same scaled updates, the cosine with at least half of the other
  workers' updates is below ``direction_cos`` — a sign-flipped or random update.

Thresholds, measured on digits (4 workers, H = 10, p = 0.25, ``benchmarks/distributed.py``):
honest updates were 0.57–1.85 of the median norm and no honest one was flagged in 80
(one pair's cosine went down to −0.03 late in training: hence "half of the others", not
"any other"); a sign flip, a random update, a copy and a stale update were flagged in
every round; a lazy worker doing half its steps was 0.24–0.79 of the median norm, flagged
in 5 rounds of 30 — the draw has to catch it the other times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of every row of ``a`` with every row of ``b`` (0 for a zero row)."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    denom = torch.outer(na, nb)
    return torch.where(denom > 0, (a @ b.T) / denom.clamp_min(1e-300), torch.zeros_like(denom))


def find_outliers(
    updates: Mapping[int, Mapping[str, torch.Tensor]],
    previous: Sequence[torch.Tensor] = (),
    rule: OutlierRule | None = None,
) -> dict[int, list[str]]:
    """``{rank: [tests it failed]}`` for the round's ``updates`` (from
    :func:`model_update`); ``previous`` holds the last round's flat updates."""
    rule = rule or OutlierRule()
    ranks = sorted(updates)
    flagged: dict[int, list[str]] = {r: [] for r in ranks}
    if not ranks:
        return {}
    names = sorted(set.intersection(*(set(updates[r]) for r in ranks)))
    if not names:
        return {}
    raw = torch.stack([torch.cat([updates[r][k] for k in names]) for r in ranks])
    n = len(ranks)
    same = _cosines(raw, raw)
    for i in range(n):
        for j in range(i + 1, n):
            if same[i, j] >= rule.duplicate_cos:
                flagged[ranks[i]].append("duplicate")
                flagged[ranks[j]].append("duplicate")
    old = [p for p in previous if p.shape == raw[0].shape]
    if old:
        hits = (_cosines(raw, torch.stack(old)) >= rule.duplicate_cos).any(dim=1)
        for i in range(n):
            if hits[i] and "duplicate" not in flagged[ranks[i]]:
                flagged[ranks[i]].append("duplicate")
    if n >= 2:
        # per-element scale of each tensor: the workers' median RMS of its update
        sizes = [updates[ranks[0]][k].numel() for k in names]
        scale = []
        for k, size in zip(names, sizes, strict=True):
            rms = sorted(float(updates[r][k].norm()) for r in ranks)[n // 2] / math.sqrt(
                max(1, size)
            )
            scale.append(rms if rms > 0 else math.inf)
        scaled = raw / torch.repeat_interleave(
            torch.tensor(scale, dtype=raw.dtype), torch.tensor(sizes)
        )
        length = scaled.norm(dim=1)
        median = float(length.sort().values[n // 2])
        cos = _cosines(scaled, scaled)
        need = math.ceil((n - 1) / 2)
        for i, r in enumerate(ranks):
            if median > 0:
                ratio = float(length[i]) / median
                if ratio > rule.norm_factor or ratio < 1.0 / rule.norm_factor:
                    flagged[r].append("norm")
            against = sum(1 for j in range(n) if j != i and cos[i, j] < rule.direction_cos)
            if against >= need:
                flagged[r].append("direction")
    return {r: tests for r, tests in flagged.items() if tests}
