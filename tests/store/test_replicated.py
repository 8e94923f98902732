"""ReplicatedStore: local first, persistent push queue, drain when the node comes back."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from pol_chain.store import ArtefactStore, KuboClient, LocalStore, ReplicatedStore, open_store

from .conftest import FakeKubo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _open(root: Path, port: int) -> ReplicatedStore:
    kubo = KuboClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=2)
    return ReplicatedStore(LocalStore(root), kubo)


def test_remote_down_queues_then_drains(tmp_path: Path) -> None:
    port = _free_port()
    root = tmp_path / "store"
    rs = _open(root, port)
    assert isinstance(rs, ArtefactStore)

    data = b"checkpoint bytes" * 100_000
    cid = rs.put_bytes(data, name="ckpt-1")  # node down: local ok, queued
    f = tmp_path / "spec.json"
    f.write_bytes(b'{"spec": 1}')
    cid2 = rs.put_file(f, name="spec")
    assert rs.get_bytes(cid, expect_sha256=hashlib.sha256(data).digest()) == data
    pending = rs.pending()
    assert [e.cid for e in pending] == [cid, cid2]
    assert pending[0].attempts >= 1 and "unreachable" in pending[0].last_error
    report = rs.drain()
    assert report.unreachable and report.remaining == 2
    rs.close()

    # restart: the queue is still there; the node comes up on the same port
    fk = FakeKubo(tmp_path / "scratch")
    fk.start(port)
    try:
        rs = _open(root, port)
        assert [e.cid for e in rs.pending()] == [cid, cid2]
        report = rs.drain()
        assert report.pushed == [cid, cid2] and report.remaining == 0
        assert not report.unreachable
        assert fk.pins == {cid: "recursive", cid2: "recursive"}
        assert rs.pending() == []
        # later puts are pushed right away
        cid3 = rs.put_bytes(b"later")
        assert cid3 in fk.pins and rs.pending() == []
        rs.close()
    finally:
        fk.stop()
        fk.scratch.close()


def test_get_falls_back_to_remote(fake_kubo: FakeKubo, tmp_path: Path) -> None:
    writer = ReplicatedStore(LocalStore(tmp_path / "a"), KuboClient(fake_kubo.url, backoff=0.01))
    data = bytes(range(256)) * 9000
    cid = writer.put_bytes(data)
    assert cid in fake_kubo.pins
    reader = ReplicatedStore(LocalStore(tmp_path / "b"), KuboClient(fake_kubo.url, backoff=0.01))
    assert not reader.local.has(cid) and reader.has(cid)
    out = reader.get_file(cid, tmp_path / "out.bin", expect_sha256=hashlib.sha256(data).digest())
    assert out.read_bytes() == data
    assert reader.local.has(cid) and reader.local.is_pinned(cid)
    writer.close()
    reader.close()


def test_kubo_error_keeps_entry_queued(fake_kubo: FakeKubo, tmp_path: Path) -> None:
    rs = ReplicatedStore(
        LocalStore(tmp_path / "s"), KuboClient(fake_kubo.url, backoff=0.01), auto_drain=False
    )
    cid = rs.put_bytes(b"x" * 10)
    fake_kubo.lie_root = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    report = rs.drain()
    assert cid in report.failed and report.remaining == 1 and not report.unreachable
    fake_kubo.lie_root = None
    assert rs.drain().pushed == [cid]
    rs.close()


def test_open_store(fake_kubo: FakeKubo, tmp_path: Path) -> None:
    plain = open_store(tmp_path / "a")
    assert isinstance(plain, LocalStore)
    rep = open_store(tmp_path / "b", kubo_api=fake_kubo.url)
    assert isinstance(rep, ReplicatedStore)
    cid = rep.put_bytes(b"via open_store")
    assert cid in fake_kubo.pins
    rep.close()
    plain.close()


def test_damaged_local_block_is_healed_from_remote(fake_kubo: FakeKubo, tmp_path: Path) -> None:
    rs = ReplicatedStore(LocalStore(tmp_path / "s"), KuboClient(fake_kubo.url, backoff=0.01))
    data = bytes(range(256)) * 8192  # 2 MiB
    cid = rs.put_bytes(data)
    assert cid in fake_kubo.pins
    leaf = next(c for c, _ in rs.local.iter_dag(cid) if c.codec == 0x55)
    path = rs.local._block_path(str(leaf))
    path.write_bytes(b"\0" * path.stat().st_size)
    assert rs.get_bytes(cid, expect_sha256=hashlib.sha256(data).digest()) == data
    assert rs.local.verify().ok
    rs.close()
