"""Challenges: post-opening randomness, verifier votes (direct and EIP-712), quorum, bonds."""

from __future__ import annotations

import pytest
from ledger_helpers import digest, finalized_run, mine
from web3 import Web3

from pol_chain import commitment as cm
from pol_chain.ledger import errors
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient, sign_attestation
from pol_chain.ledger.types import ChallengeStatus, RunStatus

REPORT = digest("report")


def _verifiers(ledger: LedgerClient, *indexes: int) -> list[LedgerClient]:
    for i in indexes:
        ledger.grant_verifier(dev_account(i).address)
    return [ledger.with_account(dev_account(i)) for i in indexes]


def test_challenge_needs_a_finalized_run(ledger: LedgerClient) -> None:
    run = ledger.register_run(digest("spec"), "bafyspec").run_id
    with pytest.raises(errors.RunNotChallengeable, match="Registered"):
        ledger.open_challenge(run)
    with pytest.raises(errors.UnknownRun):
        ledger.open_challenge(digest("no-such-run"))
    with pytest.raises(errors.UnknownChallenge):
        ledger.get_challenge(1)


def test_randomness_unknown_in_opening_block(w3: Web3, ledger: LedgerClient) -> None:
    run = finalized_run(ledger, digest("model-rand"))
    opened = ledger.open_challenge(run)
    assert opened.challenge_id == 1
    assert opened.reveal_block == opened.tx.block_number + 1
    # In the opening block (and the reveal block itself) the seed does not exist yet:
    # its input, the reveal block's hash, has not been produced.
    with pytest.raises(errors.SeedNotReady):
        ledger.challenge_seed(opened.challenge_id)
    assert w3.eth.block_number == opened.tx.block_number
    with pytest.raises(errors.SeedNotReady):  # mined in the reveal block: still unknown
        ledger.seal_randomness(opened.challenge_id)
    mine(w3, 2)
    reveal_hash = bytes(w3.eth.get_block(opened.reveal_block)["hash"])
    expected = cm.challenge_seed(reveal_hash, opened.challenge_id)
    assert ledger.challenge_seed(opened.challenge_id) == expected
    sealed = ledger.seal_randomness(opened.challenge_id)
    assert sealed.seed == expected and sealed.tx is not None
    mine(w3, 300)  # long after the blockhash window, the sealed value stays
    assert ledger.challenge_seed(opened.challenge_id) == expected
    assert ledger.get_challenge(opened.challenge_id).seed == expected


def test_missed_window_reanchors(w3: Web3, ledger: LedgerClient) -> None:
    run = finalized_run(ledger, digest("model-reanchor"))
    (verifier,) = _verifiers(ledger, 1)
    opened = ledger.open_challenge(run)
    mine(w3, 300)
    with pytest.raises(errors.SeedExpired):
        ledger.challenge_seed(opened.challenge_id)
    with pytest.raises(errors.SeedExpired):
        verifier.attest(opened.challenge_id, True, REPORT, "bafyreport")
    moved = ledger.seal_randomness(opened.challenge_id)
    assert moved.seed is None and moved.reveal_block == moved.tx.block_number + 1  # type: ignore[union-attr]
    mine(w3, 1)
    # attest seals on the way
    verifier.attest(opened.challenge_id, True, REPORT, "bafyreport")
    info = ledger.get_challenge(opened.challenge_id)
    block_hash = bytes(w3.eth.get_block(moved.reveal_block)["hash"])
    assert info.seed == cm.challenge_seed(block_hash, opened.challenge_id)
    assert info.status is ChallengeStatus.PASSED


def test_attest_rejections(w3: Web3, ledger: LedgerClient) -> None:
    run = finalized_run(ledger, digest("model-attest-rej"))
    ledger.set_quorum(2)
    v1, v2 = _verifiers(ledger, 1, 2)
    cid = ledger.open_challenge(run).challenge_id
    mine(w3, 1)
    outsider = ledger.with_account(dev_account(8))
    with pytest.raises(errors.AccessControlUnauthorized, match="VERIFIER_ROLE"):
        outsider.attest(cid, True, REPORT, "bafyreport")
    with pytest.raises(errors.UnknownChallenge):
        v1.attest(99, True, REPORT, "bafyreport")
    v1.attest(cid, True, REPORT, "bafyreport")
    with pytest.raises(errors.AlreadyAttested):
        v1.attest(cid, False, REPORT, "bafyreport")

    # EIP-712: a forged signature (by a non-verifier) and signatures for another chain id
    # or another contract recover to some other address and are rejected.
    forged = sign_attestation(
        dev_account(8),
        cid,
        True,
        REPORT,
        "r",
        chain_id=ledger.chain_id,
        verifying_contract=ledger.address,
    )
    with pytest.raises(errors.SignerNotVerifier, match="not a verifier"):
        outsider.attest_by_sig(cid, True, REPORT, "r", forged)
    wrong_chain = sign_attestation(
        dev_account(2),
        cid,
        True,
        REPORT,
        "r",
        chain_id=ledger.chain_id + 1,
        verifying_contract=ledger.address,
    )
    with pytest.raises(errors.SignerNotVerifier):
        outsider.attest_by_sig(cid, True, REPORT, "r", wrong_chain)
    other = LedgerClient.deploy(w3, dev_account(0))
    wrong_contract = sign_attestation(
        dev_account(2),
        cid,
        True,
        REPORT,
        "r",
        chain_id=ledger.chain_id,
        verifying_contract=other.address,
    )
    with pytest.raises(errors.SignerNotVerifier):
        outsider.attest_by_sig(cid, True, REPORT, "r", wrong_contract)
    good = v2.sign_attestation(cid, False, REPORT, "r")
    with pytest.raises(errors.SignerNotVerifier):  # a tampered message
        outsider.attest_by_sig(cid, True, REPORT, "r", good)
    with pytest.raises(errors.InvalidSignature):
        outsider.attest_by_sig(cid, False, REPORT, "r", b"\x01" * 10)
    # v1's own valid signature replayed after v1 voted directly: one vote per verifier
    v1_sig = v1.sign_attestation(cid, True, REPORT, "r")
    with pytest.raises(errors.AlreadyAttested):
        outsider.attest_by_sig(cid, True, REPORT, "r", v1_sig)
    assert ledger.get_challenge(cid).status is ChallengeStatus.OPEN


def test_quorum_decides_and_refuted_dominates(w3: Web3, ledger: LedgerClient) -> None:
    run = finalized_run(ledger, digest("model-quorum"))
    ledger.set_quorum(2)
    v1, v2, v3 = _verifiers(ledger, 1, 2, 3)
    relayer = ledger.with_account(dev_account(8))

    first = ledger.open_challenge(run).challenge_id
    mine(w3, 1)
    r = v1.attest(first, True, REPORT, "bafyreport")
    assert r.resolved is ChallengeStatus.OPEN
    r = v2.attest(first, False, REPORT, "bafyreport")
    assert r.resolved is ChallengeStatus.OPEN
    sig = v3.sign_attestation(first, True, REPORT, "bafyreport")
    r = relayer.attest_by_sig(first, True, REPORT, "bafyreport", sig)
    assert r.verifier == dev_account(3).address and r.resolved is ChallengeStatus.PASSED
    assert ledger.get_run(run).status is RunStatus.VERIFIED
    with pytest.raises(errors.ChallengeClosed, match="Passed"):
        v2.attest(first, True, REPORT, "bafyreport")
    c = ledger.get_challenge(first)
    assert (c.pass_votes, c.fail_votes, c.quorum) == (2, 1, 2)

    second = ledger.open_challenge(run).challenge_id  # a verified run can be re-challenged
    mine(w3, 1)
    v1.attest(second, False, REPORT, "bafyreport")
    v3.attest(second, False, REPORT, "bafyreport")
    assert ledger.get_run(run).status is RunStatus.REFUTED
    with pytest.raises(errors.RunNotChallengeable, match="Refuted"):
        ledger.open_challenge(run)
    assert ledger.challenges_of(run) == [first, second]


def test_bond_is_paid_out_by_pull(w3: Web3, ledger: LedgerClient) -> None:
    bond = 10**17
    ledger.set_bond(bond)
    (verifier,) = _verifiers(ledger, 1)
    challenger = ledger.with_account(dev_account(9))
    honest_run = finalized_run(ledger, digest("model-bond-honest"))
    with pytest.raises(errors.WrongBond, match=f"{bond} wei"):
        challenger.open_challenge(honest_run, bond=0)
    cid = challenger.open_challenge(honest_run).challenge_id
    mine(w3, 1)
    verifier.attest(cid, True, REPORT, "bafyreport")
    assert ledger.pending_withdrawal(dev_account(0).address) == bond  # trainer gets it

    thief = ledger.with_account(dev_account(6))
    bad_run = finalized_run(thief, digest("model-bond-thief"))
    cid = challenger.open_challenge(bad_run).challenge_id
    mine(w3, 1)
    verifier.attest(cid, False, REPORT, "bafyreport")
    assert ledger.pending_withdrawal(dev_account(9).address) == bond  # refunded
    before = w3.eth.get_balance(dev_account(9).address)
    tx = challenger.withdraw()
    after = w3.eth.get_balance(dev_account(9).address)
    assert after > before and ledger.pending_withdrawal(dev_account(9).address) == 0
    assert tx.gas_used > 0
    with pytest.raises(errors.NothingToWithdraw):
        challenger.withdraw()


def test_admin_only_and_bounds(ledger: LedgerClient) -> None:
    outsider = ledger.with_account(dev_account(8))
    with pytest.raises(errors.AccessControlUnauthorized, match="DEFAULT_ADMIN_ROLE"):
        outsider.set_quorum(3)
    with pytest.raises(errors.InvalidQuorum):
        ledger.set_quorum(0)
    ledger.set_quorum(3)
    assert ledger.quorum() == 3
    ledger.set_bond(5)
    assert ledger.challenge_bond() == 5


def test_eip712_domain_and_digest(ledger: LedgerClient) -> None:
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    from pol_chain.ledger.client import _typed_data

    fields, name, version, chain_id, contract, _salt, _ext = (
        ledger.contract.functions.eip712Domain().call()
    )
    assert (name, version, chain_id, contract) == (
        "ProofLedger",
        "1",
        ledger.chain_id,
        ledger.address,
    )
    assert fields == b"\x0f"
    message = encode_typed_data(
        full_message=_typed_data(3, True, REPORT, "bafyr", ledger.chain_id, ledger.address)
    )
    on_chain = ledger.contract.functions.attestationDigest(3, True, REPORT, "bafyr").call()
    assert on_chain == _hash_eip191_message(message)
