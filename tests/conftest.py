"""Shared fixtures: one real Anvil per test session (free port, temp state) and ledgers on it.

Use ``chain`` / ``w3`` for the node, ``ledger`` for a freshly deployed ProofLedger (admin:
Anvil account 0), ``session_ledger`` for one shared across the session, and
``dev_account(i)`` (re-exported from :mod:`pol_chain.ledger.accounts`) for signers.
"""

from __future__ import annotations

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
