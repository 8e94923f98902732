"""KuboClient against an in-process HTTP server that answers as Kubo's RPC docs specify."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import httpx
import pytest

from pol_chain.store import (
    IntegrityError,
    KuboClient,
    KuboError,
    KuboUnreachable,
    LocalStore,
)

from .conftest import FakeKubo

MIB = 1024 * 1024


def _client(fk: FakeKubo, **kw: object) -> KuboClient:
    kw.setdefault("backoff", 0.01)
    return KuboClient(fk.url, **kw)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_is_post_and_get_is_refused(fake_kubo: FakeKubo) -> None:
    with _client(fake_kubo) as kubo:
        assert kubo.version()["Version"] == "0.38.1"
    assert fake_kubo.requests[-1][:2] == ("POST", "/api/v0/version")
    # the fake is faithful to the POST-only rule
    assert httpx.get(fake_kubo.url + "/api/v0/version").status_code == 405


def test_add_uses_profile_and_cat(fake_kubo: FakeKubo, store: LocalStore) -> None:
    data = b"x" * (2 * MIB + 3)
    with _client(fake_kubo) as kubo:
        cid = kubo.add(data)
        assert cid == store.put_bytes(data)
        _, path, q = fake_kubo.requests[-1]
        assert path == "/api/v0/add"
        assert q["cid-version"] == ["1"] and q["raw-leaves"] == ["true"]
        assert q["chunker"] == ["size-1048576"] and q["pin"] == ["true"]
        assert kubo.cat(cid) == data
        assert kubo.cat(cid, expect_sha256=hashlib.sha256(data).digest()) == data
        with pytest.raises(IntegrityError):
            kubo.cat(cid, expect_sha256=hashlib.sha256(b"no").digest())


def test_add_file(fake_kubo: FakeKubo, store: LocalStore, tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello world")
    with _client(fake_kubo) as kubo:
        assert kubo.add(f) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_pins(fake_kubo: FakeKubo) -> None:
    with _client(fake_kubo) as kubo:
        cid = kubo.add(b"pin me", pin=False)
        assert not kubo.is_pinned(cid)
        assert kubo.pin_add(cid) == [cid]
        assert kubo.pin_ls(cid) == {cid: "recursive"}
        assert cid in kubo.pin_ls()
        assert kubo.pin_rm(cid) == [cid]
        assert not kubo.is_pinned(cid)


def test_error_body_becomes_kubo_error(fake_kubo: FakeKubo) -> None:
    missing = "bafkreigks6arfsq3xxfpvqrrwonchxcnu6do76auprhhfomao6c273sixm"
    with _client(fake_kubo) as kubo:
        with pytest.raises(KuboError) as info:
            kubo.cat(missing)
        assert info.value.status == 500 and info.value.code == 0
        assert "could not find" in info.value.message
        assert info.value.body["Type"] == "error"
        with pytest.raises(KuboError):
            kubo.pin_rm(missing)


def test_push_and_fetch(fake_kubo: FakeKubo, store: LocalStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB, 5 leaves
    cid = store.put_bytes(data)
    with _client(fake_kubo) as kubo:
        assert kubo.push(store, cid) == cid
        assert fake_kubo.pins[cid] == "recursive"
        assert kubo.cat(cid) == data
        other = LocalStore(tmp_path / "other")
        assert kubo.fetch(other, cid) == cid
        assert other.get_bytes(cid, expect_sha256=hashlib.sha256(data).digest()) == data
    assert list((store.root / "tmp").iterdir()) == []
    assert {method for method, _, _ in fake_kubo.requests} == {"POST"}


def test_push_detects_wrong_root(fake_kubo: FakeKubo, store: LocalStore) -> None:
    cid = store.put_bytes(b"some artefact")
    fake_kubo.lie_root = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    with _client(fake_kubo) as kubo, pytest.raises(IntegrityError):
        kubo.push(store, cid)


def test_fetch_refuses_tampered_blocks(
    fake_kubo: FakeKubo, store: LocalStore, tmp_path: Path
) -> None:
    data = b"a" * (MIB + 10)
    cid = store.put_bytes(data)
    with _client(fake_kubo) as kubo:
        kubo.push(store, cid)
        # a malicious node serves other bytes under a leaf's CID
        for digest, block in fake_kubo.blocks.items():
            if len(block) == 10:
                fake_kubo.blocks[digest] = b"b" * 10
        other = LocalStore(tmp_path / "other")
        with pytest.raises(IntegrityError):
            kubo.fetch(other, cid)
        assert not other.has(cid) and other.pins() == {}


def test_auth_header(tmp_path: Path) -> None:
    fk = FakeKubo(tmp_path / "scratch", auth="Bearer s3cret")
    fk.start()
    try:
        with _client(fk, retries=0) as kubo, pytest.raises(KuboError) as info:
            kubo.version()
        assert info.value.status == 401
        with _client(fk, auth="Bearer s3cret") as kubo:
            assert kubo.version()["Version"]
        assert "s3cret" not in repr(kubo)
    finally:
        fk.stop()


def test_retries_transient_failures(fake_kubo: FakeKubo, store: LocalStore) -> None:
    fake_kubo.fail_next = 2
    with _client(fake_kubo, retries=3) as kubo:
        assert kubo.version()["Version"]
    assert len(fake_kubo.requests) == 3
    cid = store.put_bytes(b"retry the upload")
    fake_kubo.fail_next = 1
    with _client(fake_kubo, retries=3) as kubo:
        assert kubo.push(store, cid) == cid  # the multipart body is re-sent intact
    fake_kubo.fail_next = 5
    with _client(fake_kubo, retries=2) as kubo, pytest.raises(KuboUnreachable) as info:
        kubo.version()
    assert isinstance(info.value.cause, KuboError) and info.value.cause.status == 503


def test_unreachable_node() -> None:
    port = _free_port()
    start = time.monotonic()
    with KuboClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.05, timeout=2) as kubo:
        with pytest.raises(KuboUnreachable) as info:
            kubo.version()
    assert info.value.attempts == 3
    assert time.monotonic() - start < 5


def test_timeout_is_retried_then_unreachable(fake_kubo: FakeKubo) -> None:
    fake_kubo.delay = 0.5
    with _client(fake_kubo, retries=1, timeout=0.1) as kubo:
        with pytest.raises(KuboUnreachable) as info:
            kubo.version()
    assert info.value.attempts == 2 and "Timeout" in str(info.value)
    fake_kubo.delay = 0.0
