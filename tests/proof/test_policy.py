"""Default policy: ≤ 5% of steps replayed and ≥ 95% detection of a 10% forgery, by
computation and by simulation; small runs are verified in full."""

from __future__ import annotations

import hashlib

from pol_chain.proof.policy import (
    Policy,
    detection_probability,
    draw_random,
    min_random_segments,
    plan_cost,
    select_segments,
)

STEPS, K = 78_125, 100  # ResNet-20 on CIFAR-10, 200 epochs, batch 128


def _run_shape() -> tuple[list[int], list[int], list[float]]:
    n = -(-STEPS // K)
    steps = [K] * (STEPS // K) + [STEPS % K]
    epochs = [min(199, ((i + 1) * K - 1) // 391) for i in range(n)]
    sizes = [1.0 + ((i * 7919) % 101) / 100 for i in range(n)]  # arbitrary honest update sizes
    return steps, epochs, sizes


def test_default_policy_by_computation() -> None:
    p = Policy()
    assert min_random_segments(0.1, 0.95) == 29 <= p.m
    cost = plan_cost(STEPS, K, p)
    assert cost["replay_fraction"] <= 0.05
    assert cost["detection"] >= 0.95
    assert detection_probability(0.1, p.m, 782) >= detection_probability(0.1, p.m)


def test_selection_respects_budget_and_contents() -> None:
    steps, epochs, sizes = _run_shape()
    chosen = select_segments(Policy(), b"\x07" * 32, steps, epochs, sizes)
    assert sum(steps[i - 1] for i in chosen) <= 0.05 * STEPS
    assert 1 in chosen and len(steps) in chosen
    assert sum("random" in why for why in chosen.values()) == 30
    assert any("top_q" in why for why in chosen.values())
    assert chosen == select_segments(Policy(), b"\x07" * 32, steps, epochs, sizes)  # deterministic


def test_forgery_of_ten_percent_detected_by_simulation() -> None:
    steps, epochs, sizes = _run_shape()
    n = len(steps)
    # blindfold forger: forges the 10% of segments with the *smallest* updates, avoiding
    # first, last and every top-Q candidate
    forged = set(sorted(range(2, n), key=lambda i: sizes[i - 1])[: -(-n // 10)])
    trials = 2000
    hits = 0
    for t in range(trials):
        seed = hashlib.sha256(b"sim" + t.to_bytes(4, "big")).digest()
        hits += bool(forged & set(select_segments(Policy(), seed, steps, epochs, sizes)))
    rate = hits / trials
    assert rate >= 0.95
    assert abs(rate - detection_probability(len(forged) / n, 30, n)) < 0.02


def test_random_draw_is_uniform_and_distinct() -> None:
    counts = [0] * 10
    for t in range(3000):
        picks = draw_random(t.to_bytes(32, "big"), 10, 3)
        assert len(set(picks)) == 3
        for p in picks:
            counts[p - 1] += 1
    assert max(counts) - min(counts) < 200  # each ≈ 900


def test_small_runs_verified_in_full() -> None:
    chosen = select_segments(Policy(), b"\x01" * 32, [10] * 9, [0] * 9, [1.0] * 9)
    assert sorted(chosen) == list(range(1, 10))
    assert plan_cost(88, 10, Policy())["replay_fraction"] == 1.0
