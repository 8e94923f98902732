"""The round primitives on real digits training, in one process: each worker's data is
its own shard's in the run seed's order, the draw picks every submitter with
probability p, the mean is deterministic, every misbehaviour fails its replay while
honest work replays bitwise, and the outlier tests flag what they claim to."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import torch

from pol_chain.distributed.behaviours import Actor
from pol_chain.distributed.outliers import find_outliers, model_update
from pol_chain.format import DistributedPlan, Reason, TaskSpec
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import Policy
from pol_chain.proof.rounds import (
    Schedule,
    State,
    aggregate,
    check_submission,
    draw,
    global_meta,
    initial_state,
    structure_problem,
    train_local,
)
from pol_chain.proof.task import TaskBundle, configure_determinism

RUN_SEED = hashlib.sha256(b"distributed unit tests").digest()
PLAN = DistributedPlan(workers=4, local_steps=5, rounds=4, check_probability=0.25)


@pytest.fixture(scope="module")
def spec() -> TaskSpec:
    from pol_chain.distributed import distributed_spec

    return distributed_spec("digits", PLAN)


@pytest.fixture(scope="module")
def bundle(spec: TaskSpec) -> Iterator[TaskBundle]:
    prior = torch.get_num_threads()
    configure_determinism(True, 1)
    yield build_bundle(spec, RUN_SEED)
    torch.set_num_threads(prior)


def test_workers_train_their_own_shard_in_the_run_seeds_order(spec: TaskSpec) -> None:
    schedule = Schedule.of(spec, RUN_SEED, PLAN)
    shards = [set(schedule.shard(w).tolist()) for w in range(1, 5)]
    assert set().union(*shards) == set(range(spec.dataset.size))
    assert sum(len(s) for s in shards) == spec.dataset.size  # a partition
    for w in range(1, 5):
        steps = [st for r in range(1, 5) for st in schedule.steps(r, w)]
        assert [st.step for st in steps] == list(range(20))
        assert all(set(st.indices) <= shards[w - 1] for st in steps)
        assert all(len(st.indices) == spec.batch_size for st in steps)
        first_pass = [
            i for st in steps[: len(shards[w - 1]) // spec.batch_size] for i in st.indices
        ]
        assert len(set(first_pass)) == len(first_pass)  # no sample twice in a pass
    again = Schedule.of(spec, RUN_SEED, PLAN)
    assert again.steps(3, 2) == schedule.steps(3, 2)
    assert schedule.steps(1, 1)[0].seeds != schedule.steps(1, 2)[0].seeds
    other = Schedule.of(spec, bytes(32), PLAN)
    assert other.steps(1, 1) != schedule.steps(1, 1)


def test_the_draw_picks_each_submitter_with_probability_p() -> None:
    trials = 4000
    for ranks, p in (((1, 2, 3, 4), 0.25), ((1, 3, 4), 0.25), ((2, 5), 0.4)):
        counts = dict.fromkeys(ranks, 0)
        for i in range(trials):
            picked = draw(hashlib.sha256(i.to_bytes(4, "big")).digest(), list(ranks), p)
            expected = p * len(ranks)
            assert int(expected) <= len(picked) <= int(expected) + 1
            for rank in picked:
                counts[rank] += 1
        for rank, n in counts.items():
            assert abs(n / trials - p) < 0.03, (ranks, rank, n / trials)
    assert draw(b"\x00" * 32, [1, 2, 3], 1.0) == (1, 2, 3)
    assert draw(b"\x00" * 32, [1, 2, 3], 0.0) == ()


def test_the_mean_is_exact_and_integer_tensors_take_the_lower_median() -> None:
    a = {"x": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"x": torch.tensor([2.0, 4.0]), "n": torch.tensor(5)}
    c = {"x": torch.tensor([4.0, 9.0]), "n": torch.tensor(100)}
    out = aggregate(a, [a, b, c])
    assert torch.equal(out["x"], torch.tensor([7.0 / 3, 5.0])) and int(out["n"]) == 5
    assert out["x"].dtype == torch.float32
    assert torch.equal(aggregate(a, [])["x"], a["x"])
    assert structure_problem({"x": torch.tensor([float("nan"), 1.0]), "n": a["n"]}, a)
    assert structure_problem({"x": torch.zeros(3), "n": a["n"]}, a)


def round_two(
    spec: TaskSpec, bundle: TaskBundle
) -> tuple[State, State, list[torch.Tensor], Schedule]:
    """Round 1 trained honestly by every worker and averaged: the base of round 2."""
    schedule = Schedule.of(spec, RUN_SEED, PLAN)
    w0, meta = initial_state(bundle)
    states = [train_local(bundle, w0, meta, schedule.steps(1, w), 5)[0] for w in range(1, 5)]
    base = aggregate(w0, states)
    return w0, base, [torch.cat(list(model_update(s, w0).values())) for s in states], schedule


def test_every_misbehaviour_fails_its_replay_and_is_flagged(
    spec: TaskSpec, bundle: TaskBundle
) -> None:
    w0, base, previous, schedule = round_two(spec, bundle)
    meta, policy = global_meta(5), Policy()
    honest = {w: train_local(bundle, base, meta, schedule.steps(2, w), 10)[0] for w in (1, 2, 3)}
    for w, state in honest.items():
        verdict = check_submission(
            bundle, base, meta, schedule.steps(2, w), state, policy, "honest"
        )
        assert verdict.reasons == () and verdict.bitwise
    flags: dict[str, list[str]] = {}
    for how in ("random", "sign_flip", "scale", "lazy", "stale", "copier", "off_shard"):
        actor = Actor(bundle, schedule, PLAN, RUN_SEED, 4, (how,))
        actor.submit(1, w0, global_meta(0))  # a round-1 update to be stale with
        state, state_meta, steps = actor.submit(2, base, meta)
        assert steps == schedule.steps(2, 4) and state_meta.step == 10  # it lies well
        assert structure_problem(state, honest[1]) is None
        verdict = check_submission(bundle, base, meta, steps, state, policy, how)
        assert Reason.REPLAY_DISTANCE in verdict.reasons, how
        updates = {w: model_update(s, base) for w, s in {**honest, 4: state}.items()}
        found = find_outliers(updates, previous)
        flags[how] = found.get(4, [])
        innocent = {w: t for w, t in found.items() if w != 4 and not (how == "copier" and w == 1)}
        assert innocent == {}, (how, found)
    assert "direction" in flags["sign_flip"] and "direction" in flags["random"]
    assert "norm" in flags["scale"]
    assert "duplicate" in flags["copier"] and "duplicate" in flags["stale"]
