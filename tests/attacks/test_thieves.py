"""Attacks 6.7 and 6.8 on the real ledger: early thief (leaked model, claims first), live
copier (front-runs the honest finalize), late thief (copies the whole public proof)."""

from __future__ import annotations

from pol_chain.attacks import reference_verify
from pol_chain.attacks.onchain import verify_on_chain
from pol_chain.ledger.types import RunStatus

from .conftest import COPIER, EARLY, HONEST, LATE, World
from .helpers import challenge_and_verify


def test_thieves_lose_ownership(world: World) -> None:
    ledger = world.admin
    digest = world.model_digest
    assert world.early.model_digest == digest and world.live_copy.model_digest == digest
    claims = ledger.claims_of(digest)
    order = [c.run_id for c in claims[:4]]
    # the live copier front-ran everyone, the early thief claimed before the honest trainer
    assert order == [
        world.live_copy.run_id,
        world.early.run_id,
        world.honest_run,
        world.late_copy.run_id,
    ]
    assert [c.trainer for c in claims[:4]] == [
        world.client(i).account.address  # type: ignore[union-attr]
        for i in (COPIER, EARLY, HONEST, LATE)
    ]
    owner = ledger.owner_of(digest)
    assert owner is not None and owner.run_id == world.live_copy.run_id

    # proof copying, live: the copy is the honest proof, so the reference accepts it
    live = world.live_copy
    assert live.leaves == [bytes(x) for x in live.leaves] and len(live.leaves) == 10
    ref = reference_verify(live.proof_dir, threads=2)
    assert ref.passed, ref.reasons
    report = challenge_and_verify(world, live.run_id, live.proof_dir)
    assert not report.passed
    assert {"init_mismatch", "data_order"} <= set(report.reasons)
    assert "leaf_mismatch" not in report.reasons  # internally consistent, committed copy
    world.record(
        "proof copying, live + front-run finalize",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost={"steps": 0.0},
    )
    owner = ledger.owner_of(digest)
    assert owner is not None and owner.run_id == world.early.run_id

    # early thief: claimed first with a forged trajectory; the challenge refutes it
    ref = reference_verify(world.early.proof_dir, threads=2)
    assert ref.passed, ref.reasons
    report = challenge_and_verify(world, world.early.run_id, world.early.proof_dir)
    assert not report.passed and "replay_distance" in report.reasons
    owner = ledger.owner_of(digest)
    assert owner is not None
    assert (owner.run_id, owner.trainer) == (world.honest_run, world.client(HONEST).account.address)  # type: ignore[union-attr]
    world.record(
        "early thief (leaked model, claims first)",
        reference="accepts",
        pol_chain=report.reason_codes,
        owner_after="honest",
        cost={"steps": round(world.early.cost.gradient_steps / world.honest_steps, 3)},
    )

    # late thief: whole copy, finalized after the honest run: loses by timestamp alone
    late = world.late_copy
    assert ledger.get_run(late.run_id).status is RunStatus.FINALIZED
    owner = ledger.owner_of(digest)
    assert owner is not None and owner.run_id == world.honest_run
    ref = reference_verify(late.proof_dir, threads=2)
    assert ref.passed, ref.reasons
    report = verify_on_chain(ledger, late.run_id, late.proof_dir, b"\x07" * 32, threads=2)
    assert {"init_mismatch", "data_order"} <= set(report.reasons)
    world.record(
        "proof copying, whole (late thief)",
        reference="accepts",
        pol_chain=report.reason_codes,
        owner_after="honest (by timestamp)",
        cost={"steps": 0.0},
    )
    statuses = {c.run_id: c.status for c in ledger.claims_of(digest)}
    assert statuses[live.run_id] is RunStatus.REFUTED
    assert statuses[world.early.run_id] is RunStatus.REFUTED
    assert statuses[world.honest_run] in (RunStatus.FINALIZED, RunStatus.VERIFIED)
