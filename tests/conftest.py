"""Shared fixtures: one real Anvil per test session (free port, temp state) and ledgers on it.

Use ``chain`` / ``w3`` for the node, ``ledger`` for a freshly deployed ProofLedger (admin:
Anvil account 0), ``session_ledger`` for one shared across the session, and
``dev_account(i)`` (re-exported from :mod:`pol_chain.ledger.accounts`) for signers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.anvil import EmbeddedChain, free_port
from pol_chain.ledger.client import LedgerClient, connect_web3


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedChain]:
    """A real Anvil on a free port with its own temporary state folder."""
    data: Path = tmp_path_factory.mktemp("polchain-data")
    node = EmbeddedChain(data, port=free_port())
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(chain: EmbeddedChain) -> Web3:
    """web3 connected to the session's Anvil."""
    return connect_web3(chain.url)


@pytest.fixture(scope="session")
def session_ledger(w3: Web3) -> LedgerClient:
    """One ProofLedger shared by the whole session (do not change its quorum or bond)."""
    return LedgerClient.deploy(w3, dev_account(0))


@pytest.fixture
def ledger(w3: Web3) -> LedgerClient:
    """A freshly deployed ProofLedger, admin = Anvil account 0."""
    return LedgerClient.deploy(w3, dev_account(0))


# --- fault-injection bookkeeping (benchmarks/faults.py) ----------------------------------
# A test marked ``@pytest.mark.fault("wrong_verdict" | "data_lost" | "agent_stopped" |
# "bad_input")`` is one scenario of the fault suite; with POLCHAIN_FAULTS_LOG set, its
# outcome is appended to that file as one JSON line, which benchmarks/faults.py counts.

FAULT_KINDS = ("wrong_verdict", "data_lost", "agent_stopped", "bad_input")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(kind): a fault-injection scenario counted by benchmarks/faults.py"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault")
    log = os.environ.get("POLCHAIN_FAULTS_LOG")
    if marker is None or not log or report.when != "call":
        return
    kind = marker.args[0] if marker.args else "wrong_verdict"
    assert kind in FAULT_KINDS, kind
    with open(log, "a") as handle:
        handle.write(
            json.dumps({"test": item.nodeid, "kind": kind, "passed": report.passed}) + "\n"
        )
