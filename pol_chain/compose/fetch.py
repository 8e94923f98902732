"""Rebuild a verifiable proof of an on-chain run from the chain and the store.

Everything comes from the chain or is checked against it: the run's history is read
from logs *and* checked against the contract's own view of the run (committed count,
accumulator, model digest) at one pinned block, so an RPC that drops a log cannot pass
for a trainer's gap; the spec bytes must hash to the registered spec digest, every
checkpoint and segment to the digest its committed leaf binds, and the model to the
finalized model digest. CIDs — from the manifest committed last and from the events —
are locators only.

Errors say whose trouble they are (docs/protocol.md §4): :class:`ProofRefused` is the
trainer's (a verdict: fail with its reason); :class:`LedgerInconsistent`, a store outage
or local block damage are the verifier's (no vote, retry);
:class:`~pol_chain.proof.errors.ArtefactUnavailable` is the trainer's only once the
availability deadline has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pol_chain.commitment import run_seed
from pol_chain.errors import PolchainError
from pol_chain.format import FormatError, Reason, parse_any_manifest, to_hex

if TYPE_CHECKING:
    from pol_chain.format import Manifest, RoundsManifest
    from pol_chain.ledger import LedgerReader, RunHistory
    from pol_chain.store import ArtefactStore

__all__ = [
    "FetchedProof",
    "LedgerInconsistent",
    "NothingToVerify",
    "ProofRefused",
    "StoreSource",
    "fetch_proof",
    "shard_locators",
    "spec_locators",
]


class NothingToVerify(PolchainError):
    """The run has nothing committed (or no manifest) to verify."""


class ProofRefused(PolchainError):
    """The committed proof itself is at fault before any replay (a malformed manifest, a
    spec CID naming other bytes than the committed spec): a verdict, with its reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LedgerInconsistent(PolchainError):
    """What the RPC's logs say disagrees with the contract's own state (a dropped or
    extra log): the verifier's view is wrong, not the proof."""


class StoreSource:
    """An :class:`~pol_chain.proof.ArtefactSource` over a store: sha256 → CID → bytes.

    Every fetch passes ``expect_sha256``, so the store refuses bytes that do not hash to
    the digest the verifier asked for. A CID whose blocks are intact but whose content is
    not the committed bytes is the proof's fault (``IntegrityError``); a block that does
    not match its own CID is this store's damage and propagates as the store error.
    """

    def __init__(self, store: ArtefactStore, cids: dict[bytes, str]) -> None:
        self.store = store
        self.cids = dict(cids)
        self.fetched: list[str] = []

    def get(self, sha256: bytes) -> bytes:
        """The artefact with digest ``sha256``; ``KeyError`` when no CID is known or the
        store lacks a block."""
        from pol_chain.proof.errors import IntegrityError
        from pol_chain.store import ContentMismatch

        cid = self.cids[bytes(sha256)]
        try:
            data = self.store.get_bytes(cid, expect_sha256=bytes(sha256))
        except ContentMismatch as exc:
            raise IntegrityError(f"CID {cid} holds other bytes: {exc}") from None
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
    block: int

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


def check_history(ledger: LedgerReader, history: RunHistory, block: int) -> None:
    """Raise :class:`LedgerInconsistent` unless the logs of ``history`` agree with the
    contract's view of the run at ``block``: contiguous commits, the committed count, the
    accumulator and the model digest."""
    expected = 0
    for commit in history.commits:
        if commit.first_index != expected:
            raise LedgerInconsistent(
                f"run {to_hex(history.run_id)}: the logs skip leaves {expected}.."
                f"{commit.first_index - 1} (a log was dropped by {ledger.url})",
                hint="retry later, or point rpc_url at a node that serves every log",
            )
        expected += len(commit.leaves)
    view = ledger.get_run(history.run_id, block=block)
    checks = (
        ("committed count", view.committed_count, len(history.leaves)),
        ("accumulator", view.accumulator, history.accumulator),
        ("model digest", view.model_digest, history.model_digest),
    )
    for what, on_chain, from_logs in checks:
        if on_chain != from_logs:
            raise LedgerInconsistent(
                f"run {to_hex(history.run_id)}: the {what} from the logs of {ledger.url} "
                f"({from_logs!r}) differs from the contract's ({on_chain!r}) at block {block}",
                hint="retry later, or point rpc_url at a node that serves every log",
            )


def spec_locators(spec_bytes: bytes) -> dict[bytes, str]:
    """``{sha256: cid}`` of what the spec locates (code bundle, dataset index, parent
    model); nothing when it does not parse (the verifier then reports spec_invalid)."""
    from pol_chain.format import TaskSpec

    try:
        spec = TaskSpec.from_bytes(spec_bytes)
    except FormatError:
        return {}
    found = {}
    for locator in (spec.bundle, spec.dataset.index):
        if locator is not None and locator.cid:
            found[locator.sha256] = locator.cid
    if spec.init.model_digest is not None and spec.init.model_cid:
        found[spec.init.model_digest] = spec.init.model_cid
    return found


def shard_locators(store: ArtefactStore, spec_bytes: bytes) -> dict[bytes, str]:
    """``{sha256: cid}`` of the shards of the dataset index the spec commits (fetched and
    checked against the spec's index digest); nothing when there is none, or it is not
    available or not an index (the verifier then reports it)."""
    from pol_chain.format import DatasetIndex, TaskSpec
    from pol_chain.store import ContentMismatch

    try:
        locator = TaskSpec.from_bytes(spec_bytes).dataset.index
        if locator is None or not locator.cid:
            return {}
        index = DatasetIndex.from_bytes(store.get_bytes(locator.cid, expect_sha256=locator.sha256))
    except (FormatError, KeyError, ContentMismatch):
        return {}
    return {ref.sha256: ref.cid for ref in index.shards if ref.cid}


def fetch_proof(ledger: LedgerReader, store: ArtefactStore, run_id: bytes) -> FetchedProof:
    """Read run ``run_id`` from the chain (logs checked against the contract's state at
    one pinned block) and fetch its spec and manifest from ``store``."""
    from pol_chain.ledger import run_history
    from pol_chain.proof.errors import ArtefactUnavailable
    from pol_chain.store import ContentMismatch

    block = ledger.block_number()
    history = run_history(ledger, run_id, to_block=block)
    check_history(ledger, history, block)
    if not history.commits:
        raise NothingToVerify(f"run 0x{run_id.hex()} has no committed checkpoints")
    try:
        spec_bytes = store.get_bytes(history.spec_cid, expect_sha256=history.spec_digest)
    except KeyError:
        raise ArtefactUnavailable("spec", history.spec_digest) from None
    except ContentMismatch as exc:
        raise ProofRefused(
            Reason.ARTEFACT_DIGEST, f"the registered spec CID holds other bytes: {exc}"
        ) from None
    manifest_cid = history.commits[-1].manifest_cid
    try:
        manifest = parse_any_manifest(store.get_bytes(manifest_cid))  # either kind of run
    except KeyError:
        raise ArtefactUnavailable(f"manifest {manifest_cid}", b"\x00" * 32) from None
    except FormatError as exc:
        raise ProofRefused(Reason.MALFORMED_ARTEFACT, f"committed manifest: {exc}") from None
    cids: dict[bytes, str] = {history.spec_digest: history.spec_cid, **manifest.cids()}
    if history.model_digest is not None and history.model_cid:
        cids[history.model_digest] = history.model_cid
    cids.update(spec_locators(spec_bytes))
    cids.update(shard_locators(store, spec_bytes))
    seed = run_seed(ledger.chain_id, ledger.address, history.run_id)
    return FetchedProof(
        history,
        manifest,
        StoreSource(store, cids),
        spec_bytes,
        seed,
        ledger.chain_id,
        ledger.address,
        block,
    )
