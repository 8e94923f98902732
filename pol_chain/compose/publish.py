"""Publish a proof directory: artefacts into the store, leaves onto the chain.

:class:`Publisher` is idempotent: :meth:`Publisher.sync` stores every checkpoint and
segment not stored yet, uploads a manifest carrying their CIDs, and commits exactly the
leaves the chain does not have (``committedCount`` is the source of truth), so it is safe
to rerun after a crash. :class:`LivePublisher` runs it on its own thread while training
goes on, woken by the recorder's listener calls.

The final checkpoint is held back until the model file exists, so the last manifest on
chain also carries the model's CID.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.commitment import accumulator
from pol_chain.errors import PolchainError
from pol_chain.format import (
    MANIFEST_FILE,
    ArtefactRef,
    FormatError,
    Manifest,
    NotAProofDir,
    RunBinding,
    to_hex,
)

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.store import ArtefactStore

__all__ = ["LivePublisher", "ProofDiverged", "Publisher", "SyncResult"]

CID_CACHE = "published.json"


class ProofDiverged(PolchainError):
    """The proof directory no longer matches what the chain holds for its run."""


@dataclass(frozen=True)
class SyncResult:
    """What one :meth:`Publisher.sync` did."""

    run_id: str
    committed_before: int
    committed_after: int
    available: int
    manifest_cid: str | None
    finalized_locally: bool


class Publisher:
    """Stores and commits what a proof directory holds beyond the chain's view of it."""

    def __init__(
        self,
        proof_dir: Path,
        store: ArtefactStore,
        client: LedgerClient,
        binding: RunBinding | None = None,
    ) -> None:
        self.proof_dir = proof_dir
        self.store = store
        self.client = client
        self.binding = binding or RunBinding.read(proof_dir)
        self._cids: dict[str, str] = self._load_cids()
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------

    def _load_cids(self) -> dict[str, str]:
        path = self.proof_dir / CID_CACHE
        try:
            data = json.loads(path.read_text())
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_cids(self) -> None:
        tmp = self.proof_dir / (CID_CACHE + ".tmp")
        tmp.write_text(json.dumps(self._cids, indent=1, sort_keys=True))
        os.replace(tmp, self.proof_dir / CID_CACHE)

    def _put(self, ref: ArtefactRef) -> str:
        key = to_hex(ref.sha256)
        cid = self._cids.get(key)
        if cid is not None and self.store.has(cid):
            return cid
        path = self.proof_dir / ref.file
        if not path.resolve().is_relative_to(self.proof_dir.resolve()):
            raise ProofDiverged(f"manifest names a file outside the proof directory: {ref.file}")
        cid = self.store.put_file(path, name=f"{self.binding.run_id[:10]}/{ref.file}")
        self._cids[key] = cid
        return cid

    def _manifest(self) -> Manifest:
        path = self.proof_dir / MANIFEST_FILE
        if not path.is_file():
            raise NotAProofDir(self.proof_dir, "no manifest.json (has training started?)")
        try:
            manifest = Manifest.from_bytes(path.read_bytes())
        except FormatError as exc:
            raise ProofDiverged(f"{path}: {exc}") from None
        if manifest.run_id != self.binding.run_id_bytes:
            raise ProofDiverged(
                f"{self.proof_dir}: manifest belongs to run {to_hex(manifest.run_id)}, "
                f"binding says {self.binding.run_id}"
            )
        return manifest

    # -- API -------------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Store and commit every complete checkpoint the chain does not have yet."""
        with self._lock:
            return self._sync()

    def _sync(self) -> SyncResult:
        manifest = self._manifest()
        run_id = self.binding.run_id_bytes
        entries = manifest.entries
        final = manifest.final
        ready = len(entries)
        if final is None and ready and entries[-1].step >= manifest.total_steps:
            ready -= 1  # hold the last checkpoint back until the model file exists
        committed = self.client.committed_count(run_id)
        leaves = manifest.leaves
        if committed > len(leaves):
            raise ProofDiverged(
                f"the chain holds {committed} checkpoints of run {self.binding.run_id}, "
                f"the proof directory only {len(leaves)}"
            )
        if accumulator(leaves[:committed]) != self.client.accumulator_of(run_id):
            raise ProofDiverged(
                f"the leaves in {self.proof_dir} do not match the accumulator on chain "
                f"for run {self.binding.run_id}"
            )
        if ready <= committed:
            return SyncResult(
                self.binding.run_id, committed, committed, len(entries), None, final is not None
            )
        with_model = final is not None and ready == len(entries)
        part = manifest.truncated(ready, keep_final=with_model)
        cids = {ref.sha256: self._put(ref) for entry in part.entries for ref in entry.refs()}
        if part.final is not None:
            cids[part.final.model.sha256] = self._put(part.final.model)
        published = part.published(cids, self.binding.spec_cid)
        self._save_cids()
        manifest_cid = self.store.put_bytes(published.to_bytes(), name="manifest")
        self.client.commit_checkpoints(run_id, committed, leaves[committed:ready], manifest_cid)
        return SyncResult(
            self.binding.run_id, committed, ready, len(entries), manifest_cid, final is not None
        )

    def model(self) -> tuple[bytes, str, Path]:
        """The final model's digest, CID and path (stored on the way)."""
        manifest = self._manifest()
        if manifest.final is None:
            raise PolchainError(
                f"{self.proof_dir}: training has not finished (no final model yet)",
                hint="finish training (or resume it with `polchain train --resume`)",
            )
        model = manifest.final.model
        path = self.proof_dir / model.file
        digest = hashlib.sha256(path.read_bytes()).digest()
        if digest != model.sha256:
            raise ProofDiverged(f"{path} does not hash to the manifest's model digest")
        return digest, self._put(model), path

    def finalize(self) -> Any:
        """Commit what is missing, then finalize the run with the final model."""
        self.sync()
        digest, cid, _ = self.model()
        self._save_cids()
        return self.client.finalize_run(self.binding.run_id_bytes, digest, cid)


class LivePublisher:
    """Runs :meth:`Publisher.sync` on a background thread whenever it is notified.

    Pass the instance as a recorder listener: each call only wakes the thread, so
    training never waits on the store or the chain. :meth:`close` does a last sync and
    re-raises the first error the thread met (nothing is lost: the proof directory holds
    everything, and ``polchain commit`` resumes).
    """

    def __init__(self, publisher: Publisher, on_sync: Any = None) -> None:
        self.publisher = publisher
        self.on_sync = on_sync
        self.error: BaseException | None = None
        self.last: SyncResult | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="polchain-publish", daemon=True)
        self._thread.start()

    def __call__(self, record: object) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.error is None:
                try:
                    self.last = self.publisher.sync()
                    if self.on_sync is not None:
                        self.on_sync(self.last)
                except BaseException as exc:  # noqa: BLE001 - handed to close()
                    self.error = exc
            if self._stop:
                return

    def close(self) -> SyncResult | None:
        """Stop the thread after a final sync; raise the first error it met."""
        self._stop = True
        self._wake.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.last
