"""ProofLedger against a real Anvil: commitments, runs, claims and ownership."""

from __future__ import annotations

import pytest
from ledger_helpers import digest, finalized_run, leaves_for
from web3 import Web3

from pol_chain import commitment as cm
from pol_chain.ledger import errors
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient
from pol_chain.ledger.types import RunStatus


def test_pure_helpers_mirror_commitment_py(session_ledger: LedgerClient) -> None:
    f = session_ledger.contract.functions
    run = cm.run_id(dev_account(3).address, 7)
    assert f.runIdOf(dev_account(3).address, 7).call() == run
    args = (run, 5, 500, digest("c"), digest("s"))
    assert f.leafOf(*args).call() == cm.leaf(*args)
    assert f.runSeedOf(run).call() == cm.run_seed(
        session_ledger.chain_id, session_ledger.address, run
    )
    assert session_ledger.run_seed(run) == cm.run_seed(
        session_ledger.chain_id, session_ledger.address, run
    )
    assert f.challengeSeedOf(digest("b"), 9).call() == cm.challenge_seed(digest("b"), 9)
    leaves = leaves_for(run, 0, 4)
    assert f.foldLeaves(cm.ZERO32, leaves).call() == cm.accumulator(leaves)


def test_register_assigns_run_ids_from_nonces(session_ledger: LedgerClient) -> None:
    trainer = session_ledger.with_account(dev_account(4))
    nonce = trainer.contract.functions.nonces(dev_account(4).address).call()
    first = trainer.register_run(digest("spec"), "bafyspec")
    second = trainer.register_run(digest("spec"), "bafyspec")
    assert first.run_id == cm.run_id(dev_account(4).address, nonce)
    assert second.run_id == cm.run_id(dev_account(4).address, nonce + 1)
    run = trainer.get_run(first.run_id)
    assert run.trainer == dev_account(4).address
    assert run.status is RunStatus.REGISTERED
    assert run.spec_digest == digest("spec")
    assert run.registered_at > 0 and run.committed_count == 0 and run.accumulator == cm.ZERO32


def test_accumulator_matches_python(session_ledger: LedgerClient) -> None:
    run = session_ledger.register_run(digest("spec"), "bafyspec").run_id
    all_leaves: list[bytes] = []
    for first, count in ((0, 1), (1, 3), (4, 5)):
        batch = leaves_for(run, first, count)
        res = session_ledger.commit_checkpoints(run, first, batch, f"bafymanifest{first}")
        all_leaves += batch
        assert res.accumulator == cm.accumulator(all_leaves)
    assert session_ledger.accumulator_of(run) == cm.accumulator(all_leaves)
    assert session_ledger.committed_count(run) == 9


def test_commit_rejections(session_ledger: LedgerClient) -> None:
    run = session_ledger.register_run(digest("spec"), "bafyspec").run_id
    session_ledger.commit_checkpoints(run, 0, leaves_for(run, 0, 2), "m")
    thief = session_ledger.with_account(dev_account(5))
    with pytest.raises(errors.NotTrainer, match="is not the trainer"):
        thief.commit_checkpoints(run, 2, leaves_for(run, 2, 1), "m")
    with pytest.raises(errors.CheckpointGap, match="next index is 2, got 3"):
        session_ledger.commit_checkpoints(run, 3, leaves_for(run, 3, 1), "m")
    with pytest.raises(errors.CheckpointRewrite, match="already committed"):
        session_ledger.commit_checkpoints(run, 1, leaves_for(run, 1, 2), "m")
    with pytest.raises(errors.EmptyBatch):
        session_ledger.commit_checkpoints(run, 2, [], "m")
    with pytest.raises(errors.UnknownRun):
        session_ledger.commit_checkpoints(digest("nope"), 0, leaves_for(run, 0, 1), "m")
    assert session_ledger.committed_count(run) == 2
    session_ledger.finalize_run(run, digest("model-commit-rej"), "bafymodel")
    with pytest.raises(errors.RunAlreadyFinalized):
        session_ledger.commit_checkpoints(run, 2, leaves_for(run, 2, 1), "m")


def test_finalize_rejections(session_ledger: LedgerClient) -> None:
    run = session_ledger.register_run(digest("spec"), "bafyspec").run_id
    model = digest("model-finalize-rej")
    with pytest.raises(errors.NothingCommitted):
        session_ledger.finalize_run(run, model, "bafymodel")
    session_ledger.commit_checkpoints(run, 0, leaves_for(run, 0, 1), "m")
    with pytest.raises(errors.NotTrainer):
        session_ledger.with_account(dev_account(5)).finalize_run(run, model, "bafymodel")
    with pytest.raises(errors.ZeroModelDigest):
        session_ledger.finalize_run(run, cm.ZERO32, "bafymodel")
    result = session_ledger.finalize_run(run, model, "bafymodel")
    assert result.claim_index == 0
    with pytest.raises(errors.RunAlreadyFinalized, match="already finalized"):
        session_ledger.finalize_run(run, model, "bafymodel")
    info = session_ledger.get_run(run)
    assert info.status is RunStatus.FINALIZED and info.model_digest == model
    assert info.finalized_at is not None and info.finalized_at >= info.registered_at


def test_late_thief_does_not_become_owner(session_ledger: LedgerClient) -> None:
    model = digest("model-late-thief")
    honest_run = finalized_run(session_ledger, model)
    thief = session_ledger.with_account(dev_account(6))
    thief_run = finalized_run(thief, model)
    owner = session_ledger.owner_of(model)
    assert owner is not None
    assert (owner.trainer, owner.run_id) == (dev_account(0).address, honest_run)
    claims = session_ledger.claims_of(model)
    assert [c.run_id for c in claims] == [honest_run, thief_run]
    assert claims[0].finalized_at <= claims[1].finalized_at
    assert session_ledger.owner_of(digest("unclaimed")) is None


def test_many_quick_commits_do_not_collide(w3: Web3, session_ledger: LedgerClient) -> None:
    trainer = session_ledger.with_account(dev_account(7))
    run = trainer.register_run(digest("spec"), "bafyspec").run_id
    leaves = leaves_for(run, 0, 50)
    pending = [trainer.send_commit_checkpoints(run, i, [leaves[i]], "m") for i in range(50)]
    results = [p.wait() for p in pending]
    assert [r.first_index for r in results] == list(range(50))
    assert len({r.tx.tx_hash for r in results}) == 50
    assert trainer.committed_count(run) == 50
    assert trainer.accumulator_of(run) == cm.accumulator(leaves)


@pytest.mark.parametrize(("batch", "target"), [(1, 60_000), (32, 3_000), (128, 1_500)])
def test_commit_gas_targets(session_ledger: LedgerClient, batch: int, target: int) -> None:
    cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    run = session_ledger.register_run(digest("spec"), cid).run_id
    first = session_ledger.commit_checkpoints(run, 0, leaves_for(run, 0, batch), cid)
    steady = session_ledger.commit_checkpoints(run, batch, leaves_for(run, batch, batch), cid)
    assert first.tx.gas_used / batch <= target
    assert steady.tx.gas_used / batch <= target
