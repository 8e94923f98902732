"""The embedded local store: one file per block under fan-out folders, pins in SQLite.

Layout of ``root``::

    blocks/<xy>/<cid>   one block per file; <xy> = the CID string's next-to-last two chars
    tmp/                 blocks being written (removed by gc)
    pins.sqlite          recursive pins (cid, name, created)
    lock                 flock: writers hold it shared, gc holds it exclusive
    VERSION              layout version

A block file appears only by ``os.replace`` of a fully written (and, with ``durable``,
fsynced) temp file, and every read re-hashes the block, so a crash or a damaged disk can
lose blocks but never make wrong bytes pass as a CID.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .base import ArtefactStore, Digest, normalize_sha256
from .car import CarReader, write_car
from .cid import CID, DAG_PB, RAW
from .errors import (
    BlockCorrupted,
    BlockNotFound,
    CarError,
    ContentMismatch,
    IntegrityError,
    NotAFile,
    StoreError,
)
from .unixfs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WIDTH,
    T_FILE,
    T_RAW,
    FileTreeBuilder,
    decode_pbnode,
    decode_unixfs,
)

__all__ = ["GcReport", "LocalStore", "VerifyReport"]

LAYOUT_VERSION = "1"


@contextlib.contextmanager
def sqlite_transaction(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A fresh connection to the SQLite file ``path`` (60 s busy timeout) for one
    transaction: committed if the block succeeds, rolled back if it raises; then closed."""
    conn = sqlite3.connect(path, timeout=60)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _replaced_atomically(
    dest: Path, *, buffering: int = -1, fsync: bool = False
) -> Iterator[BinaryIO]:
    """A temporary file next to ``dest`` to write; renamed over ``dest`` once the block
    succeeds (after an fsync with ``fsync``), removed if it raises."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as f:
            yield f
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class GcReport:
    """What :meth:`LocalStore.gc` removed."""

    removed_blocks: int
    freed_bytes: int
    kept_blocks: int
    removed_temp: int


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`LocalStore.verify` found."""

    checked: int
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damaged block and no block missing under a pin."""
        return not self.damaged and not self.missing


def _read_chunks(stream: BinaryIO | Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a binary stream or an iterable of byte strings into ``size``-byte chunks."""
    if hasattr(stream, "read"):
        reader: BinaryIO = stream  # type: ignore[assignment]
        while True:
            chunk = reader.read(size)
            if not chunk:
                return
            while len(chunk) < size:
                more = reader.read(size - len(chunk))
                if not more:
                    break
                chunk += more
            yield chunk
            if len(chunk) < size:
                return
    else:
        buf = bytearray()
        for piece in stream:  # type: ignore[union-attr]
            if not buf and len(piece) == size:
                yield bytes(piece)  # the common case (put_bytes): no re-buffering
                continue
            buf += piece
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)


class LocalStore(ArtefactStore):
    """UnixFS-compatible content-addressed store in a folder (see module docstring).

    ``chunk_size`` and ``width`` set the file profile (defaults: 1 MiB, 1024 links, as
    ``ipfs-car pack --no-wrap``); ``durable`` fsyncs blocks before they become visible;
    ``workers`` threads hash and write blocks in parallel (hashlib releases the GIL).
    Safe for concurrent use from threads and processes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        width: int = DEFAULT_WIDTH,
        durable: bool = True,
        workers: int = 2,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.root = Path(root)
        self.chunk_size = chunk_size
        self.width = width
        self.durable = durable
        self._workers = max(1, workers)
        self._blocks = self.root / "blocks"
        self._tmp = self.root / "tmp"
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        version = self.root / "VERSION"
        if not version.exists():
            self._atomic_write(version, LAYOUT_VERSION.encode())
        elif version.read_text().strip() != LAYOUT_VERSION:
            raise StoreError(f"{self.root}: unsupported store layout {version.read_text()!r}")
        self._lock_path = self.root / "lock"
        self._lock_path.touch(exist_ok=True)
        self._db_path = self.root / "pins.sqlite"
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS pins "
                "(cid TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', created REAL NOT NULL)"
            )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._made_dirs: set[str] = set()

    # ------------------------------------------------------------------ plumbing
    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads (the store stays usable; they restart on demand)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # none yet, or forked
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="polstore")
                self._pool_pid = os.getpid()
            return self._pool

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self._db_path)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool = False) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _block_path(self, key: str) -> Path:
        return self._blocks / key[-3:-1] / key

    def _atomic_write(self, final: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix=".blk-")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, final)

    def _fsync_dirs(self, dirs: Iterable[Path]) -> None:
        if not self.durable:
            return
        for d in dirs:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _write_block(self, cid: CID, data: bytes) -> Path:
        key = str(cid)
        final = self._block_path(key)
        sub = final.parent.name
        if sub not in self._made_dirs:
            final.parent.mkdir(exist_ok=True)
            self._made_dirs.add(sub)
        try:
            if final.stat().st_size == len(data):
                return final.parent
        except FileNotFoundError:
            pass
        self._atomic_write(final, data)
        return final.parent

    def _hash_and_write(self, chunk: bytes) -> tuple[CID, Path]:
        cid = CID(1, RAW, hashlib.sha256(chunk).digest())
        return cid, self._write_block(cid, chunk)

    # ------------------------------------------------------------------ blocks
    def has_block(self, cid: str | CID) -> bool:
        """Whether the block file for ``cid`` exists (not re-hashed)."""
        return self._block_path(str(CID.parse(cid))).is_file()

    def _read_block(self, c: CID) -> bytes:
        """Read one block file (unverified) with a single exact-size read."""
        key = str(c)
        try:
            fd = os.open(self._block_path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFound(key) from None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            while len(data) < size and (more := os.read(fd, size - len(data))):
                data += more
        finally:
            os.close(fd)
        return data

    @staticmethod
    def _checked(c: CID, data: bytes) -> bytes:
        """Return ``data`` if it hashes to ``c``, else raise :class:`IntegrityError`."""
        digest = hashlib.sha256(data).digest()
        if digest != c.digest:
            raise BlockCorrupted(f"block {c}", c.digest.hex(), digest.hex(), block=str(c))
        return data

    def get_block(self, cid: str | CID) -> bytes:
        """Return the verified bytes of one block."""
        c = CID.parse(cid)
        return self._checked(c, self._read_block(c))

    def _willneed(self, cid: CID) -> None:
        """Ask the kernel to start reading a block we will need soon (async readahead)."""
        try:
            fd = os.open(self._block_path(str(cid)), os.O_RDONLY)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def put_block(self, cid: str | CID, data: bytes) -> str:
        """Store one block after checking it hashes to ``cid``."""
        c = CID.parse(cid)
        if hashlib.sha256(data).digest() != c.digest:
            raise BlockCorrupted(
                f"block {c}", c.digest.hex(), hashlib.sha256(data).hexdigest(), block=str(c)
            )
        with self._locked():
            self._fsync_dirs([self._write_block(c, data)])
        return str(c)

    def _links(self, cid: CID, data: bytes) -> list[CID]:
        if cid.codec == DAG_PB:
            return [link.cid for link in decode_pbnode(data).links]
        return []

    def iter_dag(self, cid: str | CID) -> Iterator[tuple[CID, bytes]]:
        """Yield ``(cid, verified bytes)`` for every block of the DAG, depth-first pre-order."""
        seen: set[CID] = set()
        stack = [CID.parse(cid)]
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            data = self.get_block(c)
            yield c, data
            stack.extend(reversed(self._links(c, data)))

    def _reachable(
        self,
        cid: CID,
        out: set[str],
        missing: list[str] | None = None,
        damaged: list[str] | None = None,
    ) -> None:
        """Add the keys of every block under ``cid`` to ``out``.

        dag-pb nodes are read and verified (they are small) before their links are trusted;
        leaves are only checked for existence. Without ``missing``/``damaged`` lists the
        first absent or damaged block raises.
        """
        stack = [cid]
        while stack:
            c = stack.pop()
            key = str(c)
            if key in out:
                continue
            if c.codec == DAG_PB:
                try:
                    data = self.get_block(c)
                except BlockNotFound:
                    if missing is None:
                        raise
                    missing.append(key)
                    continue
                except IntegrityError:
                    if damaged is None:
                        raise
                    damaged.append(key)
                    continue
                out.add(key)
                stack.extend(self._links(c, data))
            elif self._block_path(key).is_file():
                out.add(key)
            elif missing is None:
                raise BlockNotFound(key)
            else:
                missing.append(key)

    def discard_block(self, cid: str | CID) -> bool:
        """Delete one block file (e.g. a damaged one, before re-fetching it)."""
        with self._locked(exclusive=True):
            try:
                self._block_path(str(CID.parse(cid))).unlink()
            except FileNotFoundError:
                return False
            return True

    def has(self, cid: str) -> bool:
        """Whether every block of the DAG under ``cid`` is present (not re-hashed)."""
        try:
            self._reachable(CID.parse(cid), set())
        except BlockNotFound:
            return False
        return True

    # ------------------------------------------------------------------ put
    def put_stream(
        self, stream: BinaryIO | Iterable[bytes], *, pin: bool = True, name: str = ""
    ) -> str:
        """Store a binary stream (or iterable of bytes) of any size; return its CID.

        Chunks are hashed and written by the worker threads with a bounded window, so memory
        stays at a few chunks whatever the stream's length.
        """
        node_dirs: set[Path] = set()

        def sink(cid: CID, block: bytes) -> None:
            node_dirs.add(self._write_block(cid, block))

        with self._locked():
            builder = FileTreeBuilder(sink, self.width)
            pool = self._executor()
            window: deque[tuple[Future[tuple[CID, Path]], int]] = deque()
            max_inflight = 2 * self._workers + 2
            count = 0
            try:
                for chunk in _read_chunks(stream, self.chunk_size):
                    window.append((pool.submit(self._hash_and_write, chunk), len(chunk)))
                    count += 1
                    while len(window) > max_inflight:
                        fut, size = window.popleft()
                        cid, d = fut.result()
                        node_dirs.add(d)
                        builder.add_leaf(cid, size)
                if count == 0:
                    window.append((pool.submit(self._hash_and_write, b""), 0))
                while window:
                    fut, size = window.popleft()
                    cid, d = fut.result()
                    node_dirs.add(d)
                    builder.add_leaf(cid, size)
            finally:
                for fut, _ in window:
                    fut.cancel()
            root = builder.finish().cid
            self._fsync_dirs(node_dirs)
            key = str(root)
            if pin:
                self._pin_locked(key, name)
        return key

    def put_bytes(self, data: bytes, *, pin: bool = True, name: str = "") -> str:
        """Store ``data``; return its CID."""
        view = memoryview(data)
        step = self.chunk_size
        return self.put_stream(
            (bytes(view[i : i + step]) for i in range(0, len(view), step)), pin=pin, name=name
        )

    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True, name: str = "") -> str:
        """Store a file's bytes (streamed); return its CID."""
        with open(path, "rb", buffering=0) as f:
            return self.put_stream(f, pin=pin, name=name)

    # ------------------------------------------------------------------ get
    def _pieces(self, cid: CID) -> Iterator[CID | bytes]:
        """Raw leaves (as CIDs, to be read) and inline data of a UnixFS file, in order."""
        if cid.codec == RAW:
            yield cid
            return
        if cid.codec != DAG_PB:
            raise NotAFile(f"{cid}: codec 0x{cid.codec:x} is not a UnixFS file")
        node = decode_pbnode(self.get_block(cid))
        if node.data is None:
            raise NotAFile(f"{cid}: dag-pb node without UnixFS data")
        fs = decode_unixfs(node.data)
        if fs.type not in (T_FILE, T_RAW):
            raise NotAFile(f"{cid}: UnixFS type {fs.type} is not a file")
        if fs.data:
            yield fs.data
        for link in node.links:
            yield from self._pieces(link.cid)

    def iter_content(self, cid: str, *, expect_sha256: Digest | None = None) -> Iterator[bytes]:
        """Stream the content of ``cid`` as verified chunks.

        Each block is checked before its bytes are yielded. With ``expect_sha256`` the last
        chunk is held back until the whole digest matches (earlier chunks have been yielded;
        use :meth:`get_file`/:meth:`get_bytes` for all-or-nothing).
        """
        want = normalize_sha256(expect_sha256)
        root = CID.parse(cid)
        pool = self._executor()
        hasher = hashlib.sha256() if want is not None else None
        window: deque[Future[bytes] | bytes] = deque()
        max_inflight = 2 * self._workers + 4
        held: bytes | None = None

        def emit(piece: bytes) -> Iterator[bytes]:
            nonlocal held
            if hasher is not None:
                hasher.update(piece)
                if held is not None:
                    yield held
                held = piece
            else:
                yield piece

        def lookahead() -> Iterator[CID | bytes]:
            """The pieces, after asking the kernel to read the next few blocks ahead."""
            ahead: deque[CID | bytes] = deque()
            for piece in self._pieces(root):
                if isinstance(piece, CID):
                    self._willneed(piece)
                ahead.append(piece)
                if len(ahead) > max_inflight:
                    yield ahead.popleft()
            yield from ahead

        try:
            for piece in lookahead():
                if isinstance(piece, CID):
                    # read here, hash on the pool: buffers are allocated (and later freed)
                    # by this thread, so they are recycled instead of page-faulted afresh
                    window.append(pool.submit(self._checked, piece, self._read_block(piece)))
                else:
                    window.append(piece)
                while len(window) > max_inflight:
                    item = window.popleft()
                    yield from emit(item if isinstance(item, bytes) else item.result())
            while window:
                item = window.popleft()
                yield from emit(item if isinstance(item, bytes) else item.result())
        finally:
            for item in window:
                if isinstance(item, Future):
                    item.cancel()
        if hasher is not None and want is not None:
            got = hasher.digest()
            if got != want:
                raise ContentMismatch(f"content of {cid}", "0x" + want.hex(), "0x" + got.hex())
            if held is not None:
                yield held

    def get_bytes(self, cid: str, *, expect_sha256: Digest | None = None) -> bytes:
        """Return the verified content of ``cid``."""
        want = normalize_sha256(expect_sha256)
        data = b"".join(self.iter_content(cid))
        if want is not None and hashlib.sha256(data).digest() != want:
            raise ContentMismatch(
                f"content of {cid}", "0x" + want.hex(), "0x" + hashlib.sha256(data).hexdigest()
            )
        return data

    def get_file(
        self,
        cid: str,
        dest: str | os.PathLike[str],
        *,
        expect_sha256: Digest | None = None,
    ) -> Path:
        """Write the verified content of ``cid`` to ``dest`` (temp file + rename)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _replaced_atomically(dest, buffering=0, fsync=self.durable) as f:
            for chunk in self.iter_content(cid, expect_sha256=expect_sha256):
                f.write(chunk)
        return dest

    def size(self, cid: str) -> int:
        """Content length of a UnixFS file (from its root node, no leaf reads)."""
        c = CID.parse(cid)
        data = self.get_block(c)
        if c.codec == RAW:
            return len(data)
        node = decode_pbnode(data)
        if node.data is None:
            raise NotAFile(str(c))
        fs = decode_unixfs(node.data)
        if fs.filesize is not None:
            return fs.filesize
        return len(fs.data or b"") + sum(fs.blocksizes)

    # ------------------------------------------------------------------ pins
    def _pin_locked(self, key: str, name: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO pins (cid, name, created) VALUES (?, ?, ?) "
                "ON CONFLICT(cid) DO UPDATE SET name = CASE WHEN excluded.name != '' "
                "THEN excluded.name ELSE pins.name END",
                (key, name, time.time()),
            )

    def pin(self, cid: str, name: str = "") -> None:
        """Pin the whole DAG of ``cid`` (it must be complete) so gc keeps it."""
        c = CID.parse(cid)
        with self._locked():
            self._reachable(c, set())
            self._pin_locked(str(c), name)

    def unpin(self, cid: str) -> bool:
        """Remove a pin; return whether there was one."""
        with self._db() as db:
            cur = db.execute("DELETE FROM pins WHERE cid = ?", (str(CID.parse(cid)),))
            return cur.rowcount > 0

    def pins(self) -> dict[str, str]:
        """Pinned CIDs and their names."""
        with self._db() as db:
            return dict(db.execute("SELECT cid, name FROM pins ORDER BY created, cid"))

    def is_pinned(self, cid: str) -> bool:
        """Whether ``cid`` itself is pinned."""
        with self._db() as db:
            row = db.execute("SELECT 1 FROM pins WHERE cid = ?", (str(CID.parse(cid)),))
            return row.fetchone() is not None

    # ------------------------------------------------------------------ maintenance
    def _iter_block_files(self) -> Iterator[Path]:
        for sub in sorted(os.scandir(self._blocks), key=lambda e: e.name):
            if sub.is_dir():
                for entry in os.scandir(sub.path):
                    if entry.is_file():
                        yield Path(entry.path)

    def gc(self) -> GcReport:
        """Delete blocks not reachable from a pin, and stale temp files (exclusive lock)."""
        with self._locked(exclusive=True):
            keep: set[str] = set()
            damaged: list[str] = []
            for key in self.pins():
                self._reachable(CID.parse(key), keep, missing=[], damaged=damaged)
            if damaged:  # their children cannot be traced: collect nothing
                raise IntegrityError(
                    "gc refused: pinned DAG node(s) damaged (run verify(repair=True), restore)",
                    "intact nodes",
                    ", ".join(damaged),
                    block=damaged[0],
                )
            removed = freed = kept = 0
            for path in self._iter_block_files():
                if path.name in keep:
                    kept += 1
                    continue
                freed += path.stat().st_size
                path.unlink()
                removed += 1
            temps = 0
            for entry in os.scandir(self._tmp):
                os.unlink(entry.path)
                temps += 1
        return GcReport(removed, freed, kept, temps)

    def _check_file(self, path: Path) -> bool:
        try:
            cid = CID.parse(path.name)
        except StoreError:
            return False
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").digest()
        return digest == cid.digest and path.parent.name == path.name[-3:-1]

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Re-hash every block; report damaged ones and blocks missing under pins.

        With ``repair`` damaged blocks are deleted (so a re-import or re-put restores them).
        """
        pool = self._executor()
        paths = list(self._iter_block_files())
        damaged: list[str] = []
        results = pool.map(self._check_file, paths)
        for path, good in zip(paths, results, strict=True):
            if not good:
                damaged.append(path.name)
        missing: list[str] = []
        for key in self.pins():
            self._reachable(CID.parse(key), set(), missing=missing, damaged=[])
        removed: list[str] = []
        if repair:
            with self._locked(exclusive=True):
                for key in damaged:
                    with contextlib.suppress(FileNotFoundError):
                        self._block_path(key).unlink()
                        removed.append(key)
        return VerifyReport(len(paths), damaged, sorted(set(missing)), removed)

    # ------------------------------------------------------------------ CAR
    def export_car(self, cid: str, dest: str | os.PathLike[str] | BinaryIO) -> int:
        """Write the DAG of ``cid`` as a CARv1 (root first); return the block count."""
        root = CID.parse(cid)
        if hasattr(dest, "write"):
            return write_car(dest, [root], self.iter_dag(root))  # type: ignore[arg-type]
        path = Path(dest)  # type: ignore[arg-type]
        with _replaced_atomically(path) as f:
            return write_car(f, [root], self.iter_dag(root))

    def import_car(
        self, src: str | os.PathLike[str] | BinaryIO, *, pin: bool = True, name: str = ""
    ) -> list[str]:
        """Import every block of a CAR (each checked against its CID); pin complete roots.

        Returns the root CIDs. A block that does not match its CID aborts the import with
        :class:`IntegrityError` (blocks already written are valid ones).
        """
        with contextlib.ExitStack() as stack:
            if hasattr(src, "read"):
                stream: BinaryIO = src  # type: ignore[assignment]
            else:
                stream = stack.enter_context(open(src, "rb"))  # type: ignore[arg-type]
            reader = CarReader(stream)
            dirs: set[Path] = set()
            with self._locked():
                for cid, data in reader:
                    if hashlib.sha256(data).digest() != cid.digest:
                        raise BlockCorrupted(
                            f"CAR block {cid}", cid.digest.hex(), hashlib.sha256(data).hexdigest()
                        )
                    dirs.add(self._write_block(cid, data))
                self._fsync_dirs(dirs)
                roots = [str(r) for r in reader.roots]
                if pin:
                    for r in reader.roots:
                        try:
                            self._reachable(r, set())
                        except BlockNotFound as exc:
                            raise CarError(f"CAR root {r} is incomplete: {exc}") from exc
                        self._pin_locked(str(r), name)
        return roots
