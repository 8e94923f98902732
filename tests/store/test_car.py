"""CAR edge cases: CARv2 wrapper, truncation, tampered and missing blocks; memory bound."""

from __future__ import annotations

import io
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pol_chain.store import CarError, IntegrityError, LocalStore
from pol_chain.store.car import CarReader, write_car
from pol_chain.store.cid import CID

MIB = 1024 * 1024


def _car(store: LocalStore, cid: str) -> bytes:
    buf = io.BytesIO()
    store.export_car(cid, buf)
    return buf.getvalue()


def test_carv2_is_read_through_its_data_section(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(b"q" * (MIB + 3))
    v1 = _car(store, cid)
    pragma = bytes.fromhex("0aa16776657273696f6e02")
    header = bytes(16) + struct.pack("<QQQ", len(pragma) + 40, len(v1), 0)
    other = LocalStore(tmp_path / "o")
    assert other.import_car(io.BytesIO(pragma + header + v1 + b"index would be here")) == [cid]
    assert other.get_bytes(cid) == b"q" * (MIB + 3)


def test_truncated_car(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(b"t" * (MIB + 3))
    data = _car(store, cid)
    with pytest.raises(CarError):
        LocalStore(tmp_path / "o").import_car(io.BytesIO(data[:-5]))
    with pytest.raises(CarError):
        CarReader(io.BytesIO(b"\x05abc"))


def test_tampered_block_is_refused(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(b"m" * (MIB + 3))
    blocks = [(c, d) for c, d in store.iter_dag(cid)]
    c, d = blocks[-1]
    blocks[-1] = (c, b"n" * len(d))
    buf = io.BytesIO()
    write_car(buf, [CID.parse(cid)], blocks)
    other = LocalStore(tmp_path / "o")
    with pytest.raises(IntegrityError):
        other.import_car(io.BytesIO(buf.getvalue()))
    assert not other.has(cid) and other.pins() == {}


def test_incomplete_car_is_not_pinned(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(b"i" * (MIB + 3))
    blocks = list(store.iter_dag(cid))[:-1]
    buf = io.BytesIO()
    write_car(buf, [CID.parse(cid)], blocks)
    other = LocalStore(tmp_path / "o")
    with pytest.raises(CarError):
        other.import_car(io.BytesIO(buf.getvalue()))
    assert other.pins() == {}
    assert other.import_car(io.BytesIO(buf.getvalue()), pin=False) == [cid]
    assert not other.has(cid)


def test_stream_put_memory_is_bounded(store: LocalStore) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    total = 64

    def gen() -> Iterator[bytes]:
        for i in range(total):
            yield chunk[:-1] + bytes([i])  # distinct blocks

    tracemalloc.start()
    try:
        cid = store.put_stream(gen())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.size(cid) == total * MIB
    assert peak < 24 * MIB, peak
