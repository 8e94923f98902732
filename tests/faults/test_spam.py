"""Finding 5: free challenges cannot be spammed at the verifiers."""

from __future__ import annotations

import faults_chain as fc
import pytest

from pol_chain.ledger import errors
from pol_chain.ledger.client import LedgerClient

pytestmark = pytest.mark.fault("agent_stopped")  # spam must not swamp the verifier


def test_unbonded_challenges_are_limited_per_challenger() -> None:
    outcome = fc.spam_challenges(limit=8, attempts=50)
    assert outcome.survived, outcome.detail
    assert outcome.facts == {"opened": 8, "refused": 42, "open_after": 8}


def _finalized_run(client: LedgerClient) -> bytes:
    run = client.register_run(fc.digest("spec"), "bafy").run_id
    client.commit_checkpoints(run, 0, [fc.digest("leaf")], "bafym")
    client.finalize_run(run, fc.digest("model"), "bafymodel")
    return run


def test_limit_is_admin_settable_and_bonded_challenges_are_not_counted(
    ledger: LedgerClient,
) -> None:
    from pol_chain.ledger.accounts import dev_account

    run = _finalized_run(ledger)
    challenger = ledger.with_account(dev_account(6))
    assert ledger.max_open_unbonded() == 8
    tx = ledger.set_max_open_unbonded(1)
    (event,) = ledger.logs("MaxOpenUnbondedChallengesSet", from_block=tx.block_number)
    assert (event["args"]["oldLimit"], event["args"]["newLimit"]) == (8, 1)
    challenger.open_challenge(run)
    with pytest.raises(errors.TooManyOpenChallenges) as info:
        challenger.open_challenge(run)
    assert info.value.values["open"] == 1 and info.value.values["limit"] == 1
    with pytest.raises(errors.InvalidUnbondedLimit):
        ledger.set_max_open_unbonded(0)
    with pytest.raises(errors.AccessControlUnauthorized):
        challenger.set_max_open_unbonded(100)
    ledger.set_bond(10**15)  # with a bond, challenges are paid for: no limit
    for _ in range(3):
        challenger.open_challenge(run)
    assert challenger.open_unbonded(dev_account(6).address) == 1
