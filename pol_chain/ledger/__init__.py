"""The ProofLedger contract's client (web3.py + eth-account; no torch).

- :mod:`~pol_chain.ledger.client` — :class:`LedgerClient` (deploy, every call, views).
- :mod:`~pol_chain.ledger.history` — history of a run or model rebuilt from logs.
- :mod:`~pol_chain.ledger.anvil` — :class:`EmbeddedChain`, the managed local Anvil.
- :mod:`~pol_chain.ledger.connect` — :func:`open_ledger`: settings → ready client.
- :mod:`~pol_chain.ledger.deployments` — ledger address per chain id in the data folder.
- :mod:`~pol_chain.ledger.accounts` — Anvil dev accounts, encrypted keystores.
- :mod:`~pol_chain.ledger.errors` — named errors, one per Solidity custom error.
- :mod:`~pol_chain.ledger.types` — enums and result/view dataclasses.
"""

from pol_chain.ledger.accounts import create_keystore, dev_account, load_keystore
from pol_chain.ledger.anvil import EmbeddedChain, find_anvil
from pol_chain.ledger.client import (
    LedgerClient,
    Pending,
    connect_web3,
    load_artifact,
    sign_attestation,
)
from pol_chain.ledger.connect import open_ledger, resolve_account
from pol_chain.ledger.deployments import Deployment, Deployments, ensure_deployed, load_deployed
from pol_chain.ledger.errors import ContractRevert, PolchainLedgerError
from pol_chain.ledger.history import ModelHistory, RunHistory, model_history, run_history
from pol_chain.ledger.types import ChallengeStatus, RunStatus

__all__ = [
    "ChallengeStatus",
    "ContractRevert",
    "Deployment",
    "Deployments",
    "EmbeddedChain",
    "LedgerClient",
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
    "open_ledger",
    "resolve_account",
    "run_history",
    "sign_attestation",
]
