"""LocalStore behaviour: round trips, pins and gc, damage detection, atomicity, concurrency."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pol_chain.store import (
    ArtefactStore,
    BlockNotFound,
    IntegrityError,
    LocalStore,
    NotAFile,
)
from pol_chain.store.cid import CID

MIB = 1024 * 1024


def _blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_is_an_artefact_store(store: LocalStore) -> None:
    assert isinstance(store, ArtefactStore)


def test_roundtrip_bytes_file_stream(store: LocalStore, tmp_path: Path) -> None:
    data = _blob(2 * MIB + 5)
    cid = store.put_bytes(data)
    assert store.has(cid)
    assert store.get_bytes(cid) == data
    out = store.get_file(cid, tmp_path / "out" / "x.bin")
    assert out.read_bytes() == data
    assert b"".join(store.iter_content(cid)) == data
    assert store.size(cid) == len(data)
    digest = hashlib.sha256(data).digest()
    assert store.get_bytes(cid, expect_sha256=digest) == data
    assert store.get_bytes(cid, expect_sha256="0x" + digest.hex()) == data


def test_expect_sha256_mismatch_returns_nothing(store: LocalStore, tmp_path: Path) -> None:
    data = _blob(MIB + 1)
    cid = store.put_bytes(data)
    wrong = hashlib.sha256(b"other").digest()
    with pytest.raises(IntegrityError):
        store.get_bytes(cid, expect_sha256=wrong)
    dest = tmp_path / "d.bin"
    with pytest.raises(IntegrityError):
        store.get_file(cid, dest, expect_sha256=wrong)
    assert not dest.exists()
    assert list(tmp_path.glob(".d.bin.*")) == []
    # a stream holds back its last chunk until the digest is known
    got = []
    with pytest.raises(IntegrityError):
        for chunk in store.iter_content(cid, expect_sha256=wrong):
            got.append(chunk)
    assert sum(map(len, got)) < len(data)


def test_missing_and_not_a_file(store: LocalStore) -> None:
    cid = store.put_bytes(_blob(3 * MIB), pin=False)
    leaf = str(next(c for c, _ in store.iter_dag(cid) if c.codec == 0x55))
    store._block_path(leaf).unlink()
    assert not store.has(cid)
    with pytest.raises(BlockNotFound):
        store.get_bytes(cid)
    with pytest.raises(BlockNotFound):
        store.pin(cid)
    with pytest.raises(NotAFile):
        store.get_bytes(str(CID(1, 0x71, hashlib.sha256(b"x").digest())))


def test_corrupted_block_found_by_verify_and_refused_by_get(store: LocalStore) -> None:
    data = _blob(3 * MIB)
    cid = store.put_bytes(data)
    leaf = str(next(c for c, _ in store.iter_dag(cid) if c.codec == 0x55))
    path = store._block_path(leaf)
    raw = bytearray(path.read_bytes())
    raw[12345] ^= 0x01
    path.write_bytes(bytes(raw))

    report = store.verify()
    assert report.damaged == [leaf] and not report.ok
    with pytest.raises(IntegrityError):
        store.get_bytes(cid)
    with pytest.raises(IntegrityError):
        b"".join(store.iter_content(cid))
    # repair drops the damaged block; re-putting the same bytes restores it
    assert store.verify(repair=True).removed == [leaf]
    assert store.verify().missing == [leaf]
    assert store.put_bytes(data) == cid
    assert store.verify().ok and store.get_bytes(cid) == data


def test_pins_and_gc(store: LocalStore) -> None:
    keep = store.put_bytes(_blob(2 * MIB, 1), name="keep")
    drop = store.put_bytes(_blob(2 * MIB, 2))
    loose = store.put_bytes(_blob(10, 3), pin=False)
    assert store.pins() == {keep: "keep", drop: ""}
    assert store.unpin(drop) and not store.unpin(drop)
    report = store.gc()
    assert report.removed_blocks == 3 + 1  # drop's 2 leaves + root, and the loose leaf
    assert store.has(keep) and not store.has(drop) and not store.has(loose)
    assert store.verify().ok
    store.pin(keep, "renamed")
    assert store.pins() == {keep: "renamed"}


def test_pins_persist(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "s")
    cid = s.put_bytes(b"persist me", name="p")
    s.close()
    again = LocalStore(tmp_path / "s")
    assert again.pins() == {cid: "p"} and again.is_pinned(cid)
    assert again.get_bytes(cid) == b"persist me"


def test_concurrent_threads(store: LocalStore) -> None:
    blobs = [_blob(MIB * 2 + i, seed=i % 3) for i in range(8)]  # overlapping content
    cids: list[str | None] = [None] * len(blobs)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            cids[i] = store.put_bytes(blobs[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(blobs))]
    gc_thread = threading.Thread(target=store.gc)
    for t in threads:
        t.start()
    gc_thread.start()
    for t in [*threads, gc_thread]:
        t.join()
    assert not errors
    for cid, blob in zip(cids, blobs, strict=True):
        assert cid is not None and store.get_bytes(cid) == blob
    assert store.verify().ok


_WORKER = textwrap.dedent(
    """
    import random, sys
    from pol_chain.store import LocalStore
    s = LocalStore(sys.argv[1])
    out = []
    for i in range(int(sys.argv[2])):
        data = random.Random(i % 3).randbytes(1024 * 1024 * 2 + i)
        out.append(s.put_bytes(data))
    if sys.argv[3] == "gc":
        s.gc()
    print(" ".join(out))
    """
)


def test_concurrent_processes(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    LocalStore(root).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), "6", "gc" if i == 0 else "-"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == outs[2]
    s = LocalStore(root)
    for i, cid in enumerate(outs[0]):
        assert s.get_bytes(cid) == random.Random(i % 3).randbytes(2 * MIB + i)
    assert s.verify().ok


_KILLED = textwrap.dedent(
    """
    import os, sys
    from pol_chain.store import LocalStore
    s = LocalStore(sys.argv[1])
    def endless():
        i = 0
        while True:
            yield os.urandom(1024 * 1024)
            i += 1
    s.put_stream(endless(), name="never finishes")
    """
)


@pytest.mark.parametrize("kill_after_blocks", [3, 40])
def test_killed_put_leaves_store_consistent(tmp_path: Path, kill_after_blocks: int) -> None:
    root = tmp_path / "s"
    store = LocalStore(root)
    kept = store.put_bytes(_blob(MIB + 7), name="before")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(root)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = sum(len(os.listdir(d)) for d in (root / "blocks").iterdir())
        if n >= kill_after_blocks + 3:  # `kept` has 3 blocks
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    report = store.verify()
    assert report.ok, report  # every visible block hashes to its name
    assert store.pins() == {kept: "before"}  # the killed put pinned nothing
    assert store.get_bytes(kept) == _blob(MIB + 7)
    gc = store.gc()
    assert gc.removed_blocks >= kill_after_blocks
    assert list((root / "tmp").iterdir()) == []
    assert store.verify().ok and store.verify().checked == 3  # 2 leaves + root of `kept`


def test_gc_refuses_when_a_pinned_node_is_damaged(store: LocalStore) -> None:
    cid = store.put_bytes(_blob(3 * MIB))
    path = store._block_path(cid)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    before = store.verify().checked
    with pytest.raises(IntegrityError) as info:
        store.gc()
    assert info.value.block == cid
    assert store.verify().checked == before  # nothing was collected
    assert store.verify().damaged == [cid]


def test_usable_after_fork(store: LocalStore) -> None:
    data = _blob(2 * MIB, 9)
    cid = store.put_bytes(data)  # starts the worker pool in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited store must not wait on the parent's dead threads
        try:
            os.write(w, hashlib.sha256(store.get_bytes(cid)).digest())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 32)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == hashlib.sha256(data).digest()
