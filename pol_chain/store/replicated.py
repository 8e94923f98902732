"""Local-first replication to Kubo with a persistent push queue.

Every put lands in the :class:`LocalStore` first and its CID is queued in
``<store>/push-queue.sqlite``; the queue is drained (each CID pushed as a CAR through
``dag/import``) right after each put and on :meth:`ReplicatedStore.drain`. A CID leaves the
queue only once the node has reported the same root, so nothing is lost while the remote
is down, across restarts, or when several processes share the store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from .base import ArtefactStore, Digest
from .cid import CID
from .errors import IntegrityError, KuboError, KuboUnreachable, StoreError
from .kubo import KuboClient
from .local import LocalStore, sqlite_transaction

T = TypeVar("T")

__all__ = ["DrainReport", "PushQueue", "QueueEntry", "ReplicatedStore", "open_store"]


@dataclass(frozen=True)
class QueueEntry:
    """A CID waiting to be pushed."""

    cid: str
    name: str
    enqueued: float
    attempts: int
    last_error: str


@dataclass(frozen=True)
class DrainReport:
    """Outcome of one :meth:`ReplicatedStore.drain`."""

    pushed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    remaining: int = 0
    unreachable: bool = False


class PushQueue:
    """A persistent FIFO of CIDs to push (SQLite; safe across threads and processes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS queue (cid TEXT PRIMARY KEY, name TEXT NOT NULL, "
                "enqueued REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
                "last_error TEXT NOT NULL DEFAULT '')"
            )

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.path)

    def add(self, cid: str, name: str = "") -> None:
        """Queue ``cid`` (no-op if already queued)."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO queue (cid, name, enqueued) VALUES (?, ?, ?)",
                (cid, name, time.time()),
            )

    def done(self, cid: str) -> None:
        """Remove ``cid`` from the queue."""
        with self._db() as db:
            db.execute("DELETE FROM queue WHERE cid = ?", (cid,))

    def failed(self, cid: str, error: str) -> None:
        """Record a failed attempt for ``cid``."""
        with self._db() as db:
            db.execute(
                "UPDATE queue SET attempts = attempts + 1, last_error = ? WHERE cid = ?",
                (error[:1000], cid),
            )

    def pending(self) -> list[QueueEntry]:
        """Queued entries, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT cid, name, enqueued, attempts, last_error FROM queue ORDER BY enqueued, cid"
            ).fetchall()
        return [QueueEntry(*row) for row in rows]

    def __len__(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])


class ReplicatedStore(ArtefactStore):
    """A :class:`LocalStore` whose puts are also pushed to a Kubo node, queued when it is down.

    Reads come from the local store; a CID missing locally is fetched from the node with
    every block verified (:meth:`KuboClient.fetch`) and kept (pinned) locally.
    """

    def __init__(self, local: LocalStore, remote: KuboClient, *, auto_drain: bool = True) -> None:
        self.local = local
        self.remote = remote
        self.auto_drain = auto_drain
        self.queue = PushQueue(local.root / "push-queue.sqlite")

    def close(self) -> None:
        """Close the local worker pool and the HTTP client."""
        self.local.close()
        self.remote.close()

    def __enter__(self) -> ReplicatedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _queued(self, cid: str, name: str) -> str:
        self.queue.add(cid, name)
        if self.auto_drain:
            self.drain()
        return cid

    def put_bytes(self, data: bytes, *, pin: bool = True, name: str = "") -> str:
        """Store locally (always pinned), queue the push, try to drain; return the CID."""
        return self._queued(self.local.put_bytes(data, pin=True, name=name), name)

    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True, name: str = "") -> str:
        """Store a file locally (always pinned), queue the push, try to drain; return the CID."""
        return self._queued(self.local.put_file(path, pin=True, name=name), name)

    def put_stream(
        self, stream: BinaryIO | Iterable[bytes], *, pin: bool = True, name: str = ""
    ) -> str:
        """Store a stream locally (always pinned), queue the push, try to drain."""
        return self._queued(self.local.put_stream(stream, pin=True, name=name), name)

    def push(self, cid: str) -> str:
        """Push one CID now (no queue); see :meth:`KuboClient.push`."""
        return self.remote.push(self.local, cid)

    def drain(self) -> DrainReport:
        """Push every queued CID; stop at the first unreachable-node error."""
        report = DrainReport()
        for entry in self.queue.pending():
            try:
                self.remote.push(self.local, entry.cid)
            except KuboUnreachable as exc:
                self.queue.failed(entry.cid, str(exc))
                report.failed[entry.cid] = str(exc)
                return DrainReport(report.pushed, report.failed, len(self.queue), True)
            except StoreError as exc:  # KuboError, IntegrityError, BlockNotFound...
                self.queue.failed(entry.cid, str(exc))
                report.failed[entry.cid] = str(exc)
                continue
            self.queue.done(entry.cid)
            report.pushed.append(entry.cid)
        return DrainReport(report.pushed, report.failed, len(self.queue), False)

    def pending(self) -> list[QueueEntry]:
        """CIDs still waiting to be pushed."""
        return self.queue.pending()

    def _ensure_local(self, cid: str) -> None:
        if not self.local.has(cid):
            self.remote.fetch(self.local, cid)

    def _healing(self, cid: str, read: Callable[[], T]) -> T:
        """Run ``read``; if a local block is damaged, drop it, re-fetch the DAG, retry once."""
        self._ensure_local(cid)
        try:
            return read()
        except IntegrityError as exc:
            if exc.block is None:
                raise  # whole-content digest mismatch: the CID itself is not what was expected
            self.local.discard_block(exc.block)
            self.remote.fetch(self.local, cid)
            return read()

    def get_bytes(self, cid: str, *, expect_sha256: Digest | None = None) -> bytes:
        """Verified content, from the local store or else from the node.

        A damaged local block is dropped and the DAG fetched again (verified) from the node.
        """
        return self._healing(cid, lambda: self.local.get_bytes(cid, expect_sha256=expect_sha256))

    def get_file(
        self,
        cid: str,
        dest: str | os.PathLike[str],
        *,
        expect_sha256: Digest | None = None,
    ) -> Path:
        """Write verified content to ``dest``, fetching (or healing) from the node if needed."""
        return self._healing(
            cid, lambda: self.local.get_file(cid, dest, expect_sha256=expect_sha256)
        )

    def has(self, cid: str) -> bool:
        """Whether the DAG is complete locally, or pinned on the node (if reachable)."""
        if self.local.has(cid):
            return True
        try:
            return self.remote.is_pinned(str(CID.parse(cid)))
        except (KuboError, KuboUnreachable):
            return False


def open_store(
    root: str | os.PathLike[str],
    *,
    kubo_api: str | None = None,
    kubo_auth: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> LocalStore | ReplicatedStore:
    """The store the CLI uses: a :class:`LocalStore` at ``root`` (the CLI passes
    ``<datadir>/store``), replicated to the Kubo RPC at ``kubo_api`` when one is given."""
    local = LocalStore(root)
    if not kubo_api:
        return local
    client = KuboClient(kubo_api, auth=kubo_auth, timeout=timeout, retries=retries)
    return ReplicatedStore(local, client)
