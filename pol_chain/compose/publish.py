"""Publish a proof directory: artefacts into the store, leaves onto the chain.

:class:`Publisher` is idempotent: :meth:`Publisher.sync` stores every checkpoint and
segment not stored yet, uploads a manifest carrying their CIDs, and commits exactly the
leaves the chain does not have (``committedCount`` is the source of truth), so it is safe
to rerun after a crash. :class:`LivePublisher` runs it on its own thread while training
goes on, woken by the recorder's listener calls.

The final checkpoint is held back until the model file exists, so the last manifest on
chain also carries the model's CID.

Before anything is committed the publisher checks that the chain's run is the proof
directory's (trainer and spec digest from ``getRun`` equal the binding's), and every file
is re-hashed against the manifest's digest before it is stored: a proof that would fail
its own verification is never committed (:class:`ProofDiverged`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.commitment import ZERO32, accumulator
from pol_chain.errors import PolchainError
from pol_chain.format import (
    MANIFEST_FILE,
    SPEC_FILE,
    ArtefactRef,
    FormatError,
    Manifest,
    NotAProofDir,
    RunBinding,
    TaskSpec,
    to_hex,
)

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.store import ArtefactStore

__all__ = ["LivePublisher", "ParentClaimRefused", "ProofDiverged", "Publisher", "SyncResult"]

CID_CACHE = "published.json"
_log = logging.getLogger(__name__)


class ParentClaimRefused(PolchainError):
    """A fine-tune's final model is its parent's (docs/protocol.md §2: never claimed)."""


class ProofDiverged(PolchainError):
    """The proof directory no longer matches what the chain holds for its run."""

    hint = (
        "nothing was committed; check the proof directory (a damaged file, or a directory "
        "bound to another run) before committing again"
    )


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


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
        self._cids_saved = dict(self._cids)
        # a sync at checkpoint n looked at all n entries again: walking each stored DAG
        # (a block a 256 KiB of a checkpoint) and folding every leaf, so a long run's
        # publisher slowed down as it grew. What this process stored or found complete
        # is not walked again (a new process checks again); the chain's accumulator is
        # folded on from the last prefix that matched it.
        self._present: set[str] = set()
        self._folded: tuple[list[bytes], bytes] = ([], ZERO32)
        self._lock = threading.Lock()
        self._run_checked = False

    # -- helpers ---------------------------------------------------------------------------

    def _load_cids(self) -> dict[str, str]:
        path = self.proof_dir / CID_CACHE
        try:
            data = json.loads(path.read_text())
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_cids(self) -> None:
        if self._cids == self._cids_saved:
            return
        tmp = self.proof_dir / (CID_CACHE + ".tmp")
        tmp.write_text(json.dumps(self._cids, indent=1, sort_keys=True))
        os.replace(tmp, self.proof_dir / CID_CACHE)
        self._cids_saved = dict(self._cids)

    def _put(self, ref: ArtefactRef) -> str:
        key = to_hex(ref.sha256)
        cid = self._cids.get(key)
        if cid is not None and (cid in self._present or self.store.has(cid)):
            self._present.add(cid)
            return cid
        path = self.proof_dir / ref.file
        if not path.resolve().is_relative_to(self.proof_dir.resolve()):
            raise ProofDiverged(f"manifest names a file outside the proof directory: {ref.file}")
        try:
            actual = _file_sha256(path)
        except OSError as exc:
            raise ProofDiverged(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if actual != ref.sha256:
            raise ProofDiverged(
                f"{path} does not hash to its digest in the manifest "
                f"({to_hex(actual)[:18]}… instead of {to_hex(ref.sha256)[:18]}…): "
                "it changed after it was recorded (truncated or overwritten)"
            )
        cid = self.store.put_file(path, name=f"{self.binding.run_id[:10]}/{ref.file}")
        self._cids[key] = cid
        self._present.add(cid)
        return cid

    def _accumulator(self, leaves: list[bytes]) -> bytes:
        """The fold of ``leaves``, continued from the last fold whose leaves they extend."""
        prefix, acc = self._folded
        if leaves[: len(prefix)] != prefix:
            prefix, acc = [], ZERO32
        acc = accumulator(leaves[len(prefix) :], start=acc)
        self._folded = (list(leaves), acc)
        return acc

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
        if to_hex(manifest.spec_sha256) != self.binding.spec_sha256.lower():
            raise ProofDiverged(
                f"{self.proof_dir}: manifest was recorded under spec "
                f"{to_hex(manifest.spec_sha256)}, the binding registered {self.binding.spec_sha256}"
            )
        return manifest

    def check_run(self) -> None:
        """Check the chain's run is this directory's: it exists, and its trainer and spec
        digest are the binding's (a rolled-back and re-issued run id is someone else's)."""
        if self._run_checked:
            return
        from pol_chain.ledger.errors import UnknownRun

        binding = self.binding
        try:
            run = self.client.get_run(binding.run_id_bytes)
        except UnknownRun:
            raise ProofDiverged(
                f"run {binding.run_id} of {self.proof_dir} is not on chain "
                f"{self.client.chain_id} (was the chain reset or rolled back?)"
            ) from None
        if run.trainer.lower() != binding.trainer.lower():
            raise ProofDiverged(
                f"run {binding.run_id} on chain belongs to trainer {run.trainer}, but "
                f"{self.proof_dir} was registered by {binding.trainer}"
            )
        if to_hex(run.spec_digest) != binding.spec_sha256.lower():
            raise ProofDiverged(
                f"run {binding.run_id} on chain was registered with spec "
                f"{to_hex(run.spec_digest)}, but {self.proof_dir} holds spec "
                f"{binding.spec_sha256}: the directory belongs to another run"
            )
        self._run_checked = True

    # -- API -------------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Store and commit every complete checkpoint the chain does not have yet."""
        with self._lock:
            return self._sync()

    def _sync(self) -> SyncResult:
        manifest = self._manifest()
        self.check_run()
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
        if self._accumulator(leaves[:committed]) != self.client.accumulator_of(run_id):
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
        digest = _file_sha256(path)
        if digest != model.sha256:
            raise ProofDiverged(f"{path} does not hash to the manifest's model digest")
        return digest, self._put(model), path

    def finalize(self) -> Any:
        """Commit what is missing, then finalize the run with the final model.

        Idempotent: a run the chain already finalized with this model (e.g. a finalize
        whose reply was lost, re-sent from the journal) gives its recorded claim."""
        from pol_chain.ledger.types import FinalizeResult, RunStatus, TxInfo
        from pol_chain.proof.errors import ProofError
        from pol_chain.proof.manifest import check_final_model

        self.sync()
        digest, cid, _ = self.model()
        try:
            check_final_model(self.proof_dir)
        except (ProofError, FormatError, OSError) as exc:
            raise ProofDiverged(
                f"not claiming a model no verifier would pass: {exc}",
                hint="finalize the run with its own recorder (close(final=True))",
            ) from None
        spec_file = self.proof_dir / SPEC_FILE
        if spec_file.is_file():
            spec = TaskSpec.from_bytes(spec_file.read_bytes())
            if spec.init.model_digest == digest:
                raise ParentClaimRefused(
                    f"the final model of {self.proof_dir} is its parent's own "
                    f"{to_hex(digest)}: a fine-tune never claims its parent",
                    hint="train the fine-tune (it changed nothing), then finalize",
                )
        self._save_cids()
        run_id = self.binding.run_id_bytes
        run = self.client.get_run(run_id)
        if run.status is RunStatus.REGISTERED:
            return self.client.finalize_run(run_id, digest, cid)
        if run.model_digest != digest:
            raise ProofDiverged(
                f"run {self.binding.run_id} is already finalized with model "
                f"{to_hex(run.model_digest or b'')}, not {to_hex(digest)}"
            )
        (log,) = self.client.logs("RunFinalized", runId=run_id)[-1:]
        receipt = self.client.request(
            "eth_getTransactionReceipt", ["0x" + log["transactionHash"].hex()]
        )
        tx = TxInfo(log["transactionHash"], log["blockNumber"], int(receipt["gasUsed"], 16))
        return FinalizeResult(run_id, digest, int(log["args"]["claimIndex"]), tx)


class LivePublisher:
    """Runs :meth:`Publisher.sync` on a background thread whenever it is notified.

    Pass the instance as a recorder listener: each call only wakes the thread, so
    training never waits on the store or the chain. A failed sync is logged (and handed
    to ``on_error``) and retried with exponential backoff (``backoff`` seconds doubling up
    to ``max_backoff``), so a chain or store that comes back is caught up with;
    :meth:`close` does a last sync (with ``final_tries`` tries) and raises its error if it
    cannot be done (nothing is lost: the proof directory holds everything, and
    ``polchain commit`` resumes).
    """

    def __init__(
        self,
        publisher: Publisher,
        on_sync: Callable[[SyncResult], None] | None = None,
        *,
        on_error: Callable[[BaseException, float], None] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        final_tries: int = 3,
    ) -> None:
        self.publisher = publisher
        self.on_sync = on_sync
        self.on_error = on_error
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.final_tries = max(1, final_tries)
        self.error: BaseException | None = None
        self.errors = 0
        self.last: SyncResult | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="polchain-publish", daemon=True)
        self._thread.start()

    def __call__(self, record: object) -> None:
        self._wake.set()

    def _sync_once(self) -> bool:
        try:
            self.last = self.publisher.sync()
        except Exception as exc:  # noqa: BLE001 - logged, retried, raised by close()
            self.error = exc
            self.errors += 1
            return False
        self.error = None
        if self.on_sync is not None:
            self.on_sync(self.last)
        return True

    def _report(self, delay: float) -> None:
        assert self.error is not None
        if self.on_error is not None:
            self.on_error(self.error, delay)
        else:
            _log.warning("publishing failed (%s); retrying in %.1f s", self.error, delay)

    def _loop(self) -> None:
        delay = self.backoff
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            if self._sync_once():
                delay = self.backoff
                continue
            self._report(delay)
            # wait out the backoff (a stop cuts it short); then retry even if not woken
            deadline = time.monotonic() + delay
            while not self._stop and time.monotonic() < deadline:
                time.sleep(min(0.05, delay))
            delay = min(delay * 2, self.max_backoff)
            self._wake.set()

    def close(self, tries: int | None = None) -> SyncResult | None:
        """Stop the thread, then do a last sync (``tries`` tries, default
        ``final_tries``); raise its error if it cannot be done."""
        self._stop = True
        self._wake.set()
        self._thread.join()
        delay = self.backoff
        tries = self.final_tries if tries is None else max(1, tries)
        for attempt in range(tries):
            if self._sync_once():
                return self.last
            if attempt + 1 < tries:
                self._report(delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        assert self.error is not None
        raise self.error
