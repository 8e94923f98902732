"""Challenge policy: which segments a verifier replays, and what that buys (docs/protocol.md §4).

Segments are numbered 1..n (segment i leads from checkpoint i-1 to checkpoint i). A
challenge replays: the first and last segment, ``m`` segments drawn without replacement
from the challenge seed, and, within a replay budget of ``max_replay_fraction`` of all
training steps, the top-``q`` segments per epoch by update size (epoch candidates
ranked by update size fill the budget left by the mandatory picks). Runs of at most
``full_below`` segments are replayed in full.

Defaults: for ResNet-20 on CIFAR-10, 200 epochs (78,125 steps) with k = 100 (782
segments), 2 + 30 mandatory segments replay 3,125 steps and the budget of 3,906 steps
adds 7 top-Q segments: ≤ 5% of the steps; a forgery covering ≥ 10% of the segments is
missed by all 30 random draws with probability ≤ 0.9^30 ≈ 0.042 (detection ≥ 95.8%).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pol_chain.errors import PolchainError
from pol_chain.format.names import CHALLENGE_DOMAIN

__all__ = [
    "Policy",
    "PolicyError",
    "detection_probability",
    "draw_random",
    "min_random_segments",
    "plan_cost",
    "select_segments",
]


class PolicyError(PolchainError, ValueError):
    """A verification policy value is out of its range."""


@dataclass(frozen=True)
class Policy:
    """Verification policy; ``k`` is the recommended checkpoint interval for new runs."""

    k: int = 100
    q: int = 1
    m: int = 30
    rho: float = 0.01
    c: float = 0.99
    max_replay_fraction: float = 0.05
    full_below: int = 40

    def __post_init__(self) -> None:
        if self.k < 1 or self.q < 0 or self.m < 0 or self.full_below < 0:
            raise PolicyError(
                f"policy needs k ≥ 1 and q, m, full_below ≥ 0 (got k={self.k}, q={self.q}, "
                f"m={self.m}, full_below={self.full_below})"
            )
        if not (self.rho > 0 and -1 <= self.c <= 1 and 0 < self.max_replay_fraction <= 1):
            raise PolicyError(
                f"policy needs rho > 0, -1 ≤ c ≤ 1, 0 < max_replay_fraction ≤ 1 (got "
                f"rho={self.rho}, c={self.c}, max_replay_fraction={self.max_replay_fraction})",
                hint="set --rho / --cos (or [policy] rho, cos) within those ranges",
            )

    def to_json(self) -> dict[str, Any]:
        """JSON form (for the report)."""
        return asdict(self)


def detection_probability(f: float, m: int, n: int | None = None) -> float:
    """Probability that ``m`` random segments hit a forgery covering fraction ``f``.

    Without ``n``: the with-replacement bound ``1 - (1-f)^m``. With ``n`` segments:
    the exact without-replacement (hypergeometric) value, which is at least the bound.
    """
    if n is None:
        return 1.0 - (1.0 - f) ** m
    bad = math.ceil(f * n)
    if m > n - bad:
        return 1.0
    return 1.0 - math.comb(n - bad, m) / math.comb(n, m)


def min_random_segments(f: float = 0.1, p: float = 0.95) -> int:
    """Smallest ``m`` with ``1 - (1-f)^m ≥ p``."""
    return math.ceil(math.log(1.0 - p) / math.log(1.0 - f))


def draw_random(challenge_seed: bytes, n: int, m: int) -> list[int]:
    """Draw ``min(m, n)`` distinct segments of 1..n from the challenge seed (Fisher-Yates
    with SHA-256(``CHALLENGE_DOMAIN`` ‖ seed ‖ u64 j ‖ u64 counter) as the random source)."""
    pool = list(range(1, n + 1))
    out: list[int] = []
    for j in range(min(m, n)):
        span = n - j
        # rejection sampling keeps the draw exactly uniform
        limit = (1 << 256) - (1 << 256) % span
        counter = 0
        while True:
            h = hashlib.sha256(
                CHALLENGE_DOMAIN
                + bytes(challenge_seed)
                + j.to_bytes(8, "big")
                + counter.to_bytes(8, "big")
            ).digest()
            value = int.from_bytes(h, "big")
            if value < limit:
                break
            counter += 1
        pick = j + value % span
        pool[j], pool[pick] = pool[pick], pool[j]
        out.append(pool[j])
    return out


def select_segments(
    policy: Policy,
    challenge_seed: bytes,
    segment_steps: Sequence[int],
    segment_epochs: Sequence[int],
    update_sizes: Sequence[float],
) -> dict[int, list[str]]:
    """Return ``{segment: [why chosen...]}`` for segments 1..n (lists index i-1 ↔ segment i)."""
    n = len(segment_steps)
    chosen: dict[int, list[str]] = {}
    if n == 0:
        return chosen
    if n <= policy.full_below:
        return {i: ["full"] for i in range(1, n + 1)}

    def add(i: int, why: str) -> None:
        chosen.setdefault(i, []).append(why)

    add(1, "first")
    add(n, "last")
    for i in draw_random(challenge_seed, n, policy.m):
        add(i, "random")
    budget = math.floor(policy.max_replay_fraction * sum(segment_steps))
    used = sum(segment_steps[i - 1] for i in chosen)
    by_epoch: dict[int, list[int]] = {}
    for i in range(1, n + 1):
        by_epoch.setdefault(segment_epochs[i - 1], []).append(i)
    candidates: list[int] = []
    for members in by_epoch.values():
        members.sort(key=lambda i: (-update_sizes[i - 1], i))
        candidates.extend(members[: policy.q])
    candidates.sort(key=lambda i: (-update_sizes[i - 1], i))
    for i in candidates:
        if i in chosen:
            add(i, "top_q")
        elif used + segment_steps[i - 1] <= budget:
            add(i, "top_q")
            used += segment_steps[i - 1]
    return dict(sorted(chosen.items()))


def plan_cost(total_steps: int, k: int, policy: Policy, f: float = 0.1) -> dict[str, float]:
    """Worst-case replay fraction and detection probability of ``policy`` for a run."""
    steps = [k] * (total_steps // k) + ([total_steps % k] if total_steps % k else [])
    n = len(steps)
    if n <= policy.full_below:
        return {"segments": n, "replayed_segments": n, "replay_fraction": 1.0, "detection": 1.0}
    mandatory = min(n, policy.m + 2)
    # worst case: mandatory picks are all full-length segments
    used = min(total_steps, mandatory * k)
    budget = math.floor(policy.max_replay_fraction * total_steps)
    extra = max(0, (budget - used) // k) if used <= budget else 0
    replayed = min(n, mandatory + extra)
    return {
        "segments": n,
        "replayed_segments": replayed,
        "replay_fraction": max(used, min(budget, replayed * k)) / total_steps,
        "detection": detection_probability(f, policy.m),
    }
