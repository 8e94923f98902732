"""Finding 2: two processes on one account never collide on nonces; the live publisher
keeps going after an error."""

from __future__ import annotations

import faults_chain as fc
import pytest

pytestmark = pytest.mark.fault("data_lost")


def test_two_processes_on_one_account_never_collide() -> None:
    outcome = fc.two_processes_one_account(journal=True)
    assert outcome.survived, outcome.detail
    assert outcome.facts["nonces_used"] == 30


def test_a_nonce_taken_by_another_process_is_retried() -> None:
    # no journal, so no inter-process lock: "nonce too low" answers are retried
    outcome = fc.two_processes_one_account(journal=False)
    assert outcome.survived, outcome.detail


def test_live_publisher_retries_until_the_chain_is_back() -> None:
    outcome = fc.publisher_error_then_recovery()
    assert len(outcome.facts["errors"]) >= 2, outcome.detail  # it kept trying, with backoff
    assert outcome.facts["committed"] == outcome.facts["total"], outcome.detail
    assert outcome.facts["close_raised"] == "RpcUnreachable"  # no last sync: close() says so
    assert outcome.facts["finalize_idempotent"]
    assert outcome.survived and not outcome.data_lost
