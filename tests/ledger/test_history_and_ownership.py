"""Ownership resolution and the history rebuilt from logs."""

from __future__ import annotations

from ledger_helpers import digest, finalized_run, leaves_for, mine
from web3 import Web3

from pol_chain import commitment as cm
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient
from pol_chain.ledger.history import model_history, run_history
from pol_chain.ledger.types import ChallengeStatus, RunStatus


def test_refuted_early_claim_stops_being_owner(w3: Web3, ledger: LedgerClient) -> None:
    model = digest("model-early-thief")
    thief = ledger.with_account(dev_account(6))
    thief_run = finalized_run(thief, model)  # leaked mid-training, claimed first
    honest_run = finalized_run(ledger, model)
    owner = ledger.owner_of(model)
    assert owner is not None and owner.run_id == thief_run

    ledger.grant_verifier(dev_account(1).address)
    cid = ledger.open_challenge(thief_run).challenge_id
    mine(w3, 1)
    ledger.with_account(dev_account(1)).attest(cid, False, digest("report"), "bafyreport")
    owner = ledger.owner_of(model)
    assert owner is not None
    assert (owner.trainer, owner.run_id) == (dev_account(0).address, honest_run)
    statuses = [c.status for c in ledger.claims_of(model)]
    assert statuses == [RunStatus.REFUTED, RunStatus.FINALIZED]


def test_history_rebuilt_from_events_matches_state(w3: Web3, ledger: LedgerClient) -> None:
    model = digest("model-history")
    thief = ledger.with_account(dev_account(6))
    thief_run = finalized_run(thief, model, checkpoints=2)
    honest = ledger.register_run(digest("spec-h"), "bafyspec-h").run_id

    leaves = leaves_for(honest, 0, 5)
    ledger.commit_checkpoints(honest, 0, leaves[:2], "bafym1")
    ledger.commit_checkpoints(honest, 2, leaves[2:], "bafym2")
    ledger.finalize_run(honest, model, "bafymodel")

    ledger.set_quorum(2)
    for i in (1, 2):
        ledger.grant_verifier(dev_account(i).address)
    v1, v2 = (ledger.with_account(dev_account(i)) for i in (1, 2))
    cid = ledger.open_challenge(thief_run).challenge_id
    mine(w3, 1)
    v1.attest(cid, False, digest("r1"), "bafyr1")
    sig = v2.sign_attestation(cid, False, digest("r2"), "bafyr2")
    ledger.attest_by_sig(cid, False, digest("r2"), "bafyr2", sig)

    hist = model_history(ledger, model)
    assert [c.run_id for c in hist.claims] == [c.run_id for c in ledger.claims_of(model)]
    assert hist.owner == ledger.owner_of(model)
    assert hist.owner is not None and hist.owner.run_id == honest
    for claim in hist.claims:
        state = ledger.get_run(claim.run_id)
        assert claim.status is state.status
        assert claim.accumulator == state.accumulator
        assert len(claim.leaves) == state.committed_count
        assert claim.trainer == state.trainer and claim.finalized_at == state.finalized_at
        assert claim.model_digest == state.model_digest == model
    h = run_history(ledger, honest)
    assert h.leaves == leaves and h.accumulator == cm.accumulator(leaves)
    assert [c.manifest_cid for c in h.commits] == ["bafym1", "bafym2"]
    assert all(c.timestamp >= h.registered_at for c in h.commits)
    t = run_history(ledger, thief_run)
    (ch,) = t.challenges
    info = ledger.get_challenge(cid)
    assert ch.status is info.status is ChallengeStatus.FAILED
    assert ch.seed == info.seed and ch.reveal_block == info.reveal_block
    assert [(a.verifier, a.passed) for a in ch.attestations] == [
        (dev_account(1).address, False),
        (dev_account(2).address, False),
    ]
    assert ch.attestations[1].relayer == dev_account(0).address
    kinds = [e.kind for e in t.events]
    assert kinds[:3] == ["RunRegistered", "CheckpointsCommitted", "RunFinalized"]
    assert kinds.count("Attested") == 2 and "ChallengeResolved" in kinds
    assert "RunStatusChanged" in kinds
    doc = hist.to_dict()
    assert doc["owner"]["run_id"] == "0x" + honest.hex()
    assert doc["claims"][0]["status"] == "refuted"
    assert hist.to_json()
