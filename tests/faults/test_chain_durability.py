"""Finding 1: a SIGKILL of the embedded Anvil must not lose an acknowledged transaction."""

from __future__ import annotations

import faults_chain as fc
import pytest

from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient, connect_web3

pytestmark = pytest.mark.fault("data_lost")


@pytest.mark.parametrize("op", fc.OPS)
def test_sigkill_right_after_an_acknowledged_transaction_loses_nothing(op: str) -> None:
    # register / commit / finalize / vote acknowledged, then Anvil SIGKILLed within its
    # 1 s dump interval: the restart re-sends it from the journal
    outcome = fc.sigkill_after(op)
    assert outcome.survived and not outcome.data_lost, outcome.detail
    assert outcome.facts["resent"] >= 1 and outcome.facts["lost"] == 0
    if op == "register":
        assert outcome.facts["run_id_reissued"] is False


def test_sigkill_before_the_first_dump_replays_the_whole_chain() -> None:
    # nothing was on disk yet: the restarted chain is empty and the journal replays
    # deployment, registration, commit, finalize, challenge and vote in order
    outcome = fc.sigkill_after("vote", settle=False)
    assert outcome.survived and not outcome.data_lost, outcome.detail
    assert outcome.facts["resent"] >= 6


@pytest.mark.parametrize("kind", ["truncated", "empty"])
def test_damaged_state_file_is_restored_from_the_good_copy(kind: str) -> None:
    outcome = fc.damaged_state(kind)
    assert outcome.facts["restored"] and outcome.facts["damaged_copy_kept"], outcome.detail
    assert outcome.survived and not outcome.data_lost, outcome.detail


def test_damaged_state_without_a_good_copy_is_a_clear_error() -> None:
    outcome = fc.damaged_state_without_copy()
    assert outcome.clean and not outcome.data_lost, outcome.detail


def test_reissued_run_id_is_refused_by_the_publisher() -> None:
    # (c): a rollback the journal could not undo hands run id R to run B; proof A, bound
    # to R, is never committed or finalized under it
    outcome = fc.reissued_run_id()
    assert outcome.facts["reissued"], "the rollback did not re-issue the run id"
    assert outcome.survived and outcome.facts["committed"] == 0, outcome.detail
    assert "registered with spec" in outcome.detail


def test_a_dropped_transaction_whose_nonce_was_taken_is_reported_lost() -> None:
    with fc.chain() as node:
        journaled = node.client(fc.TRAINER)
        snapshot = journaled.request("evm_snapshot")
        dropped = journaled.register_run(fc.digest("A"), "bafyA")
        journaled.request("evm_revert", [snapshot])  # a rollback drops it...
        bare = LedgerClient(connect_web3(node.node.url), journaled.address, dev_account(0))
        bare.register_run(fc.digest("B"), "bafyB")  # ...and a journal-less sender takes its nonce
        report = journaled.reconcile()
    assert [e.tx_hash for e in report.lost] == ["0x" + dropped.tx.tx_hash.hex()]
    assert "LOST" in report.summary() and "registerRun" in report.summary()


def test_a_replayed_vote_that_now_reverts_is_reported_lost() -> None:
    # the challenge was opened by a sender without a journal: the rollback takes it away
    # for good, so the re-sent vote reverts; the journal says so instead of "kept"
    with fc.chain() as node:
        trainer = node.client(fc.TRAINER)
        run = trainer.register_run(fc.digest("spec"), "bafy").run_id
        trainer.commit_checkpoints(run, 0, [fc.digest("leaf")], "bafym")
        trainer.finalize_run(run, fc.digest("model"), "bafymodel")
        snapshot = trainer.request("evm_snapshot")
        w3 = connect_web3(node.node.url)
        bare = LedgerClient(w3, trainer.address, dev_account(fc.CHALLENGER))
        challenge = bare.open_challenge(run).challenge_id
        bare.mine(2)
        vote = node.client(fc.VERIFIER).attest(challenge, True, fc.digest("r"), "bafyr")
        trainer.request("evm_revert", [snapshot])
        report = trainer.reconcile()
    assert [e.tx_hash for e in report.lost] == ["0x" + vote.tx.tx_hash.hex()]
    assert report.lost[0].label == "attest"
