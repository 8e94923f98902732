"""CID and CAR compatibility with ipfs-car (an implementation no one here wrote)."""

from __future__ import annotations

import io
import random
import subprocess
from pathlib import Path

import pytest

from pol_chain.store import CID, LocalStore

MIB = 1024 * 1024
SIZES = [0, 1, MIB - 1, MIB, MIB + 1, 3_000_000, 7_654_321, 20_000_000]


def _run(tool: Path, *args: str | Path) -> str:
    proc = subprocess.run(
        [str(tool), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _blocks(tool: Path, car: Path) -> list[str]:
    return sorted(_run(tool, "blocks", car).split())


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def test_hello_world_known_cid(store: LocalStore) -> None:
    cid = store.put_bytes(b"hello world")
    assert cid == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


@pytest.mark.parametrize("size", SIZES)
def test_same_root_and_blocks_as_ipfs_car(
    ipfs_car: Path, store: LocalStore, tmp_path: Path, size: int
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(_data(size))
    car = tmp_path / "f.car"
    expected_root = _run(ipfs_car, "pack", src, "--no-wrap", "--output", car).split()[0]

    cid = store.put_file(src)
    assert cid == expected_root
    ours = sorted(str(c) for c, _ in store.iter_dag(cid))
    assert ours == _blocks(ipfs_car, car)
    # our CAR differs from theirs only in block order: same header bytes, same sections
    mine = io.BytesIO()
    store.export_car(cid, mine)
    theirs = car.read_bytes()
    header_len = theirs[0] + 1  # one-byte varint for a single-root header
    assert mine.getvalue()[:header_len] == theirs[:header_len]
    assert len(mine.getvalue()) == len(theirs)
    # and their CAR imports into our store (into a fresh one: every block re-checked)
    other = LocalStore(tmp_path / "other")
    assert other.import_car(car) == [cid]
    assert other.get_bytes(cid) == src.read_bytes()
    assert other.verify().ok


@pytest.mark.parametrize("size", [0, 11, MIB + 1, 5 * MIB + 123])
def test_ipfs_car_reads_our_car(
    ipfs_car: Path, store: LocalStore, tmp_path: Path, size: int
) -> None:
    data = _data(size)
    cid = store.put_bytes(data)
    car = tmp_path / "ours.car"
    n = store.export_car(cid, car)
    assert _run(ipfs_car, "roots", car).split() == [cid]
    blocks = _blocks(ipfs_car, car)
    assert len(blocks) == n
    assert blocks == sorted(str(c) for c, _ in store.iter_dag(cid))
    out = tmp_path / "unpacked.bin"
    _run(ipfs_car, "unpack", car, "--output", out)
    assert out.read_bytes() == data


def test_stream_put_matches_file_put(ipfs_car: Path, store: LocalStore, tmp_path: Path) -> None:
    data = _data(3 * MIB + 17)
    src = tmp_path / "s.bin"
    src.write_bytes(data)
    expected = _run(ipfs_car, "pack", src, "--no-wrap", "--output", tmp_path / "s.car").split()[0]
    # irregular pieces must be re-cut into exact 1 MiB chunks
    rng = random.Random(1)
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 700_000)
        pieces.append(data[pos : pos + step])
        pos += step
    assert store.put_stream(iter(pieces)) == expected
    with open(src, "rb") as f:
        assert store.put_stream(f) == expected


def test_cid_parse_roundtrip() -> None:
    text = "bafybeicubrdwsk7yg624dyck6uect36o35yviaqm6ir7xdvew45xodv4ti"
    cid = CID.parse(text)
    assert str(cid) == text and cid.codec == 0x70 and cid.version == 1
    v0 = CID(0, 0x70, cid.digest)
    assert str(v0).startswith("Qm") and CID.parse(str(v0)) == v0
    assert CID.parse(str(v0)).to_v1() == cid
    # cross-check with the multiformats package (independent base32/base58/varint code)
    from multiformats import CID as MfCID

    mf = MfCID.decode(text)
    assert bytes(mf.digest)[-32:] == cid.digest and mf.codec.code == 0x70
    assert str(MfCID.decode(str(v0))) == str(v0)
