"""Distributed runs with real worker processes (gloo on loopback), a real Anvil ledger
and real digits training: misbehaviours are rejected whenever checked, honest workers
never, a SIGKILLed worker does not stall its round, and the finished run is a proof the
verifier agent passes."""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pol_chain.agent import VerifierAgent
from pol_chain.commitment import leaf
from pol_chain.distributed import DistributedPlan, LocalWorkers
from pol_chain.format import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtefactRef,
    Reason,
    RoundRecord,
    RoundsManifest,
    Submissions,
    model_meta,
)
from pol_chain.format.rounds import (
    global_name,
    round_record_name,
    submissions_name,
    worker_state_name,
)
from pol_chain.ledger import ChallengeStatus, run_history
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient
from pol_chain.proof.canonical import atomic_write, sha256
from pol_chain.proof.engine import model_tensors
from pol_chain.proof.policy import Policy
from pol_chain.proof.rounds import RoundsDirectorySource, aggregate, draw, draw_seed, global_meta
from pol_chain.proof.serialization import load_checkpoint_bytes, serialize_state, write_state
from pol_chain.proof.verifier import verify_dir

from .conftest import CHALLENGER, VERIFIER, Run, start_run

FULL = Policy(full_below=10**6, max_replay_fraction=1.0)
# by round (cycling): worker 1 honest, workers 2 and 3 through every misbehaviour
SCHEDULE = {
    2: ("sign_flip", "lazy", "stale", "random", "honest"),
    3: ("copier", "off_shard", "scale", "honest", "stale"),
}


def records(run: Run, r: int) -> tuple[Submissions, RoundRecord]:
    subs = Submissions.from_bytes((run.out / submissions_name(r)).read_bytes())
    return subs, RoundRecord.from_bytes((run.out / round_record_name(r)).read_bytes())


def behaviour(rank: int, r: int) -> str:
    cycle = SCHEDULE.get(rank, ("honest",))
    return cycle[(r - 1) % len(cycle)]


@pytest.fixture(scope="module")
def checked_run(module_ledger: LedgerClient, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """10 rounds, p = 1 (every submission replayed), nobody excluded."""
    plan = DistributedPlan(
        workers=3, local_steps=3, rounds=10, check_probability=1.0, max_rejections=0
    )
    return start_run(module_ledger, tmp_path_factory.mktemp("checked"), plan, SCHEDULE)


def test_every_misbehaviour_is_rejected_when_checked_and_honest_work_never(
    checked_run: Run,
) -> None:
    seen: set[str] = set()
    for r in range(1, 11):
        subs, rec = records(checked_run, r)
        assert subs.submitted == [1, 2, 3]
        for v in rec.workers:
            how = behaviour(v.rank, r)
            seen.add(how)
            assert "random" in v.checked_by, (r, v)
            if how == "honest":
                assert v.status == "accepted" and not v.reasons, (r, v)
                assert v.metrics is not None and v.metrics.normalized_error == 0.0
            else:
                assert v.status == "rejected", (r, how, v)
                assert set(v.reasons) <= {Reason.REPLAY_DISTANCE, Reason.DIRECTION}, v
                assert Reason.REPLAY_DISTANCE in v.reasons, (r, how, v)
        assert rec.accepted == [w for w in (1, 2, 3) if behaviour(w, r) == "honest"]
    assert seen == {
        "honest",
        "sign_flip",
        "scale",
        "lazy",
        "stale",
        "random",
        "copier",
        "off_shard",
    }
    stats = checked_run.result.workers
    assert stats[1].accepted == 10 and stats[1].rejected == 0 and stats[1].state == "active"


def test_the_draw_comes_from_the_block_that_mined_the_submissions(checked_run: Run) -> None:
    history = run_history(checked_run.client, checked_run.binding.run_id_bytes)
    leaves = history.leaves
    blocks = {
        i: c.block_number
        for c in history.commits
        for i in range(c.first_index, c.first_index + len(c.leaves))
    }
    for r in range(1, 11):
        subs, rec = records(checked_run, r)
        assert rec.draw is not None
        assert rec.draw.block == blocks[2 * r - 1] < blocks[2 * r]  # drawn after the commit
        assert rec.draw.block_hash == checked_run.client.block_hash(rec.draw.block)
        assert rec.draw.seed == draw_seed(rec.draw.block_hash, leaves[2 * r - 1])
        assert rec.draw.picked == draw(rec.draw.seed, subs.submitted, 1.0) == (1, 2, 3)


def test_the_finished_run_verifies_and_the_agent_attests_pass(
    checked_run: Run, tmp_path: Path
) -> None:
    run = checked_run
    assert run.result.finalized
    local = verify_dir(
        run.out,
        run_id=run.binding.run_id_bytes,
        run_seed=run.binding.run_seed,
        challenge_seed=b"\x07" * 32,
    )
    assert local.passed and local.bitwise_identical, local.reason_codes
    assert [s.index for s in local.segments] == list(range(1, 11))
    flipped = tmp_path / "flipped"  # the directory's model file is hashed too
    shutil.copytree(run.out, flipped)
    final = RoundsDirectorySource(flipped).manifest().final
    assert final is not None
    model = flipped / final.model.file
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))
    seeds = {"run_id": run.binding.run_id_bytes, "run_seed": run.binding.run_seed}
    report = verify_dir(flipped, challenge_seed=b"\x07" * 32, **seeds)
    assert report.reason_codes == ["artefact_digest"], report.reason_codes
    challenger = run.client.with_account(dev_account(CHALLENGER))
    opened = challenger.open_challenge(run.binding.run_id_bytes)
    agent = VerifierAgent(
        run.client.with_account(dev_account(VERIFIER)), run.store, tmp_path / "agent", device="cpu"
    )
    outcomes = agent.run_once()
    assert [(o.challenge_id, o.status, o.passed) for o in outcomes] == [
        (opened.challenge_id, "attested", True)
    ], outcomes
    assert run.client.get_challenge(opened.challenge_id).status is ChallengeStatus.PASSED
    owner = run.client.owner_of(run.result.model_digest)
    assert owner is not None and owner.run_id == run.binding.run_id_bytes


def test_a_coordinator_that_aggregates_a_rejected_update_fails_verification(
    checked_run: Run, tmp_path: Path
) -> None:
    """Round 10 rejected worker 3 (stale). A forger re-records it as accepted, aggregates
    it, and commits leaves and a model to match: every record is consistent, only the
    replay of round 10 can tell — and does."""
    forged = tmp_path / "forged"
    shutil.copytree(checked_run.out, forged)
    subs, rec = records(checked_run, 10)
    assert rec.worker(3).status == "rejected"  # type: ignore[union-attr]
    rec = replace(
        rec,
        workers=tuple(
            replace(v, status="accepted", reasons=(), detail="") if v.rank == 3 else v
            for v in rec.workers
        ),
    )
    base, _ = load_checkpoint_bytes((forged / global_name(9)).read_bytes(), "base")
    states = [
        load_checkpoint_bytes((forged / worker_state_name(10, w)).read_bytes(), "s")[0]
        for w in (1, 2, 3)
    ]
    glob = aggregate(base, states)
    atomic_write(forged / round_record_name(10), rec.to_bytes())
    glob_bytes = serialize_state(glob, global_meta(30))
    atomic_write(forged / global_name(10), glob_bytes)
    model = write_state(forged / MODEL_FILE, model_tensors(glob), model_meta())
    manifest = RoundsManifest.from_bytes((forged / MANIFEST_FILE).read_bytes())
    last = manifest.entries[-1]
    g, r = (
        ArtefactRef(global_name(10), sha256(glob_bytes)),
        ArtefactRef(round_record_name(10), rec.digest),
    )
    run_id = checked_run.binding.run_id_bytes
    entry = replace(last, checkpoint=g, record=r, leaf=leaf(run_id, 20, 30, g.sha256, r.sha256))
    manifest = replace(manifest, entries=(*manifest.entries[:-1], entry), final=None)
    manifest = manifest.with_final(ArtefactRef(MODEL_FILE, model))
    atomic_write(forged / MANIFEST_FILE, manifest.to_bytes())
    report = verify_dir(
        forged, run_id=run_id, run_seed=checked_run.binding.run_seed, challenge_seed=b"\x05" * 32
    )
    assert not report.passed and "replay_distance" in report.reason_codes
    assert set(report.reason_codes) <= {"replay_distance", "direction"}
    assert [s.index for s in report.segments if not s.passed] == [10]
    assert report.checks["rounds"].ok is False and report.checks["integrity"].ok


def test_random_checks_catch_what_statistics_cannot(
    module_ledger: LedgerClient, tmp_path: Path
) -> None:
    """p = 0.25 and an off-shard worker (its update looks like any other): rejected in
    exactly the rounds it is checked, excluded at its first rejection, and a round that
    accepted it unchecked fails the full verification of the finished run."""
    plan = DistributedPlan(
        workers=3, local_steps=3, rounds=8, check_probability=0.25, max_rejections=1
    )
    run = start_run(module_ledger, tmp_path, plan, {3: ("off_shard",)})
    slipped: list[int] = []
    excluded_at = None
    for r in range(1, 9):
        subs, rec = records(run, r)
        assert rec.draw is not None
        assert rec.draw.picked == draw(rec.draw.seed, subs.submitted, 0.25)
        for v in rec.workers:
            if v.rank in (1, 2):
                assert v.status == "accepted", (r, v)
            elif excluded_at is None:
                assert v.status == ("rejected" if v.checked_by else "accepted"), (r, v)
                if v.status == "rejected":
                    excluded_at = r
                    assert rec.excluded == (3,)
                else:
                    slipped.append(r)
            else:
                assert v.status == "excluded", (r, v)
    report = verify_dir(
        run.out,
        run_id=run.binding.run_id_bytes,
        run_seed=run.binding.run_seed,
        challenge_seed=b"\x01" * 32,
        policy=FULL,
    )
    assert sorted(s.index for s in report.segments if not s.passed) == slipped
    assert report.passed == (not slipped)
    if slipped:
        assert Reason.REPLAY_DISTANCE in report.reasons


def test_a_sigkilled_worker_does_not_stall_its_round(
    module_ledger: LedgerClient, tmp_path: Path
) -> None:
    plan = DistributedPlan(workers=3, local_steps=3, rounds=3, check_probability=0.25)
    workers = LocalWorkers(3, {2: ("honest", "slow")}, log_dir=tmp_path / "logs")
    killed: dict[str, float] = {}

    def on_event(event: str, r: int) -> None:
        if event == "sent" and r == 2:  # worker 2 is asleep in its round
            os.kill(workers.procs[2].pid, signal.SIGKILL)
            killed["at"] = time.monotonic()
        if event == "round" and r == 2:
            killed["round_done"] = time.monotonic()

    run = start_run(module_ledger, tmp_path, plan, workers=workers, on_event=on_event)
    assert workers.procs[2].returncode == -signal.SIGKILL
    assert killed["round_done"] - killed["at"] < 30  # not the 120 s round deadline
    for r in (1, 2, 3):
        subs, rec = records(run, r)
        assert rec.accepted == ([1, 2, 3] if r == 1 else [1, 3]), (r, rec)
        if r > 1:
            assert subs.worker(2).status == "missing"  # type: ignore[union-attr]
    assert run.result.workers[2].state == "lost"
    report = verify_dir(
        run.out,
        run_id=run.binding.run_id_bytes,
        run_seed=run.binding.run_seed,
        challenge_seed=b"\x02" * 32,
    )
    assert report.passed, report.reason_codes
