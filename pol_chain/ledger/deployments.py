"""Deployed ledger addresses per chain id, kept in ``<data>/deployments.json``.

:class:`Deployments` reads and writes the file without web3 (the read-only path uses
it); :func:`load_deployed` and :func:`ensure_deployed` build transaction clients.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.ledger.errors import ContractNotDeployed, PolchainLedgerError
from pol_chain.paths import data_dir

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from pol_chain.ledger.client import LedgerClient
    from pol_chain.ledger.journal import TxJournal

__all__ = ["Deployment", "Deployments", "ensure_deployed", "load_deployed"]


@dataclass(frozen=True)
class Deployment:
    """Where the ledger lives on one chain."""

    chain_id: int
    address: str
    block: int
    source_digest: str


class Deployments:
    """The ``deployments.json`` file of a data folder: ``{"<chain id>": Deployment}``."""

    def __init__(self, data: str | Path | None = None) -> None:
        self.path = Path(data if data is not None else data_dir()) / "deployments.json"

    def _read(self) -> dict[str, dict[str, object]]:
        if not self.path.exists():
            return {}
        try:
            content = json.loads(self.path.read_text())
        except ValueError as exc:
            raise PolchainLedgerError(f"{self.path} is not valid JSON: {exc}") from exc
        if not isinstance(content, dict):
            raise PolchainLedgerError(f"{self.path} is not a JSON object")
        return content

    def get(self, chain_id: int) -> Deployment | None:
        """The recorded deployment on ``chain_id``, if any."""
        row = self._read().get(str(chain_id))
        if not isinstance(row, dict) or "address" not in row:
            return None
        return Deployment(
            chain_id=chain_id,
            address=str(row["address"]),
            block=int(str(row.get("block", 0))),
            source_digest=str(row.get("source_digest", "")),
        )

    def record(self, deployment: Deployment) -> None:
        """Record (or replace) the deployment of its chain id."""
        rows = self._read()
        rows[str(deployment.chain_id)] = {
            k: v for k, v in asdict(deployment).items() if k != "chain_id"
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)


def load_deployed(
    w3: Web3,
    account: LocalAccount | None = None,
    data: str | Path | None = None,
    *,
    journal: TxJournal | None = None,
) -> LedgerClient:
    """The ledger recorded for ``w3``'s chain; ContractNotDeployed when none is recorded
    or no code is at the recorded address (e.g. the chain was reset)."""
    from pol_chain.ledger.client import LedgerClient

    chain_id = w3.eth.chain_id
    dep = Deployments(data).get(chain_id)
    if dep is None:
        raise ContractNotDeployed(chain_id, None)
    return LedgerClient(w3, dep.address, account, deploy_block=dep.block, journal=journal)


def ensure_deployed(
    w3: Web3,
    account: LocalAccount,
    data: str | Path | None = None,
    *,
    force: bool = False,
    journal: TxJournal | None = None,
) -> tuple[LedgerClient, bool]:
    """Return (client, deployed_now): reuse the recorded ledger when its code exists,
    else deploy one with ``account`` as admin and record it."""
    from pol_chain.ledger.client import LedgerClient, load_artifact

    if not force:
        try:
            return load_deployed(w3, account, data, journal=journal), False
        except ContractNotDeployed:
            pass
    client = LedgerClient.deploy(w3, account, journal=journal)
    Deployments(data).record(
        Deployment(
            chain_id=client.chain_id,
            address=client.address,
            block=client.deploy_block,
            source_digest=str(load_artifact()["sourceDigest"]),
        )
    )
    return client, True
