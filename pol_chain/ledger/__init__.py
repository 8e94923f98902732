"""The ProofLedger contract's client (web3.py + eth-account; no torch).

- :mod:`~pol_chain.ledger.reader` — :class:`LedgerReader`, the one read path (JSON-RPC
  with httpx, decoded with eth-abi; no web3): every view and every log.
- :mod:`~pol_chain.ledger.client` — :class:`LedgerClient`, a reader that also signs and
  sends transactions (web3.py, eth-account).
- :mod:`~pol_chain.ledger.history` — history of a run or model rebuilt from logs.
- :mod:`~pol_chain.ledger.anvil` — :class:`EmbeddedChain`, the managed local Anvil.
- :mod:`~pol_chain.ledger.deployments` — ledger address per chain id in the data folder.
- :mod:`~pol_chain.ledger.accounts` — Anvil dev accounts, encrypted keystores.
- :mod:`~pol_chain.ledger.errors` — named errors, one per Solidity custom error.
- :mod:`~pol_chain.ledger.types` — enums and result/view dataclasses.

The public names below load lazily (PEP 562): ``import pol_chain.ledger.reader`` or
``from pol_chain.ledger import ModelHistory`` does not import web3 (about 1.4 s); the
first access to a web3-backed name (``LedgerClient``, ``connect_web3`` …) does.
:func:`pol_chain.compose.context.open_ledger` goes from settings to a ledger.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pol_chain.ledger.accounts import (
        create_keystore,
        dev_account,
        load_keystore,
        resolve_account,
    )
    from pol_chain.ledger.anvil import EmbeddedChain, find_anvil
    from pol_chain.ledger.client import (
        LedgerClient,
        Pending,
        connect_web3,
        load_artifact,
        sign_attestation,
    )
    from pol_chain.ledger.deployments import (
        Deployment,
        Deployments,
        ensure_deployed,
        load_deployed,
    )
    from pol_chain.ledger.errors import ContractRevert, PolchainLedgerError
    from pol_chain.ledger.history import ModelHistory, RunHistory, model_history, run_history
    from pol_chain.ledger.reader import LedgerReader
    from pol_chain.ledger.types import ChallengeStatus, RunStatus

__all__ = [
    "ChallengeStatus",
    "ContractRevert",
    "Deployment",
    "Deployments",
    "EmbeddedChain",
    "LedgerClient",
    "LedgerReader",
    "ModelHistory",
    "Pending",
    "PolchainLedgerError",
    "RunHistory",
    "RunStatus",
    "connect_web3",
    "create_keystore",
    "dev_account",
    "ensure_deployed",
    "find_anvil",
    "load_artifact",
    "load_deployed",
    "load_keystore",
    "model_history",
    "resolve_account",
    "run_history",
    "sign_attestation",
]

_WHERE: dict[str, str] = {
    "create_keystore": "accounts",
    "dev_account": "accounts",
    "load_keystore": "accounts",
    "EmbeddedChain": "anvil",
    "find_anvil": "anvil",
    "LedgerClient": "client",
    "Pending": "client",
    "connect_web3": "client",
    "load_artifact": "client",
    "sign_attestation": "client",
    "resolve_account": "accounts",
    "Deployment": "deployments",
    "Deployments": "deployments",
    "ensure_deployed": "deployments",
    "load_deployed": "deployments",
    "ContractRevert": "errors",
    "PolchainLedgerError": "errors",
    "ModelHistory": "history",
    "RunHistory": "history",
    "model_history": "history",
    "run_history": "history",
    "LedgerReader": "reader",
    "ChallengeStatus": "types",
    "RunStatus": "types",
}


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
