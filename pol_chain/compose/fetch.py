"""Rebuild a verifiable proof of an on-chain run from the chain and the store.

Everything comes from the chain or is checked against it: the spec bytes must hash to
the registered spec digest, every checkpoint and segment to the digest its (committed)
leaf binds, and the model to the finalized model digest. CIDs — from the manifest
committed last and from the events — are locators only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pol_chain.commitment import run_seed
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.format import Manifest, RoundsManifest
    from pol_chain.ledger import LedgerReader, RunHistory
    from pol_chain.store import ArtefactStore

__all__ = ["FetchedProof", "NothingToVerify", "StoreSource", "fetch_proof"]


class NothingToVerify(PolchainError):
    """The run has nothing committed (or no manifest) to verify."""


class StoreSource:
    """An :class:`~pol_chain.proof.ArtefactSource` over a store: sha256 → CID → bytes.

    Every fetch passes ``expect_sha256``, so the store refuses bytes that do not hash to
    the digest the verifier asked for, whatever the node returned.
    """

    def __init__(self, store: ArtefactStore, cids: dict[bytes, str]) -> None:
        self.store = store
        self.cids = dict(cids)
        self.fetched: list[str] = []

    def get(self, sha256: bytes) -> bytes:
        """Return the artefact with digest ``sha256``; ``KeyError`` when no CID is known."""
        cid = self.cids[bytes(sha256)]
        data = self.store.get_bytes(cid, expect_sha256=bytes(sha256))
        self.fetched.append(cid)
        return data


@dataclass
class FetchedProof:
    """A run's proof as the chain commits it, ready for :func:`pol_chain.proof.verify`."""

    history: RunHistory
    manifest: Manifest | RoundsManifest
    source: StoreSource
    spec_bytes: bytes
    run_seed: bytes
    chain_id: int
    ledger: str

    def verify_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pol_chain.proof.verify`` (all from the chain)."""
        return {
            "run_id": self.history.run_id,
            "run_seed": self.run_seed,
            "spec_bytes": self.spec_bytes,
            "spec_digest": self.history.spec_digest,
            "committed_leaves": self.history.leaves,
            "committed_accumulator": self.history.accumulator,
            "model_digest": self.history.model_digest,
        }


def fetch_proof(client: LedgerReader, store: ArtefactStore, run_id: bytes) -> FetchedProof:
    """Read run ``run_id`` from the chain and fetch its spec and manifest from ``store``."""
    from pol_chain.format import parse_any_manifest
    from pol_chain.ledger import run_history

    history = run_history(client, run_id)
    if not history.commits:
        raise NothingToVerify(f"run 0x{run_id.hex()} has no committed checkpoints")
    spec_bytes = store.get_bytes(history.spec_cid, expect_sha256=history.spec_digest)
    manifest_cid = history.commits[-1].manifest_cid
    manifest = parse_any_manifest(store.get_bytes(manifest_cid))  # either kind of run
    cids: dict[bytes, str] = {history.spec_digest: history.spec_cid, **manifest.cids()}
    if history.model_digest is not None and history.model_cid:
        cids[history.model_digest] = history.model_cid
    seed = run_seed(client.chain_id, client.address, history.run_id)
    return FetchedProof(
        history,
        manifest,
        StoreSource(store, cids),
        spec_bytes,
        seed,
        client.chain_id,
        client.address,
    )
