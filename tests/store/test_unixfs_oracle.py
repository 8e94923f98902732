"""Multi-level trees against the official ipfs-unixfs-importer (npm), tiny chunks and width."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path

import pytest

from pol_chain.paths import node_modules_dir, project_root
from pol_chain.store import CID, LocalStore
from pol_chain.store.unixfs import decode_pbnode

ORACLE = Path(__file__).with_name("unixfs_oracle.mjs")


@pytest.fixture(scope="module")
def oracle(node: str) -> str:
    if not (node_modules_dir() / "ipfs-unixfs-importer").is_dir():
        pytest.skip("ipfs-unixfs-importer not installed (run scripts/bootstrap.sh)")
    if node_modules_dir() != project_root() / "node_modules":
        pytest.skip("the oracle script resolves ipfs-unixfs-importer from the checkout")
    return node


def _depth(store: LocalStore, cid: CID) -> int:
    if cid.codec == 0x55:
        return 0
    links = decode_pbnode(store.get_block(cid)).links
    return 1 + max(_depth(store, link.cid) for link in links)


CASES = [
    # (chunk, width, size)
    (256, 4, 5000),  # 20 leaves -> depth 3
    (256, 4, 256 * 16),  # exactly full two levels
    (256, 4, 256 * 16 + 1),  # one leaf over -> a lone chain on the right
    (256, 4, 256 * 64 + 100),  # depth 4
    (100, 3, 2701),  # 28 leaves, width 3
    (1000, 2, 9999),  # binary tree
    (256, 4, 256),  # single chunk -> the raw leaf
    (256, 4, 0),  # empty
    (64, 7, 64 * 7 * 7 * 7 + 5),  # depth 4, width 7
]


@pytest.mark.parametrize(("chunk", "width", "size"), CASES)
def test_matches_ipfs_unixfs_importer(
    oracle: str, tmp_path: Path, chunk: int, width: int, size: int
) -> None:
    src = tmp_path / "f.bin"
    data = random.Random(size * 31 + width).randbytes(size)
    src.write_bytes(data)
    proc = subprocess.run(
        [oracle, str(ORACLE), str(src), str(chunk), str(width)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = json.loads(proc.stdout)
    store = LocalStore(tmp_path / "s", chunk_size=chunk, width=width)
    cid = store.put_file(src)
    assert cid == expected["root"]
    # the oracle's memory blockstore lists blocks by multihash: compare digests
    ours = sorted({c.digest for c, _ in store.iter_dag(cid)})
    theirs = sorted(CID.parse(b).digest for b in expected["blocks"])
    assert ours == sorted(set(theirs))
    assert store.get_bytes(cid) == data
    assert store.size(cid) == size
    if size > chunk * width * width:
        assert _depth(store, CID.parse(cid)) >= 3


@pytest.mark.parametrize(("chunk", "width", "size"), [(256, 4, 5000), (300, 3, 299)])
def test_reads_legacy_cidv0_dags(
    oracle: str, tmp_path: Path, chunk: int, width: int, size: int
) -> None:
    """DAGs a Kubo node makes by default (CIDv0, dag-pb leaves with inline data) read back."""
    src = tmp_path / "f.bin"
    data = random.Random(size).randbytes(size)
    src.write_bytes(data)
    proc = subprocess.run(
        [oracle, str(ORACLE), str(src), str(chunk), str(width), "v0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = json.loads(proc.stdout)
    assert expected["root"].startswith("Qm")
    store = LocalStore(tmp_path / "s")
    for key, b64 in expected["data"].items():
        block = base64.b64decode(b64)
        store.put_block(CID(0, 0x70, CID.parse(key).digest), block)
    assert store.has(expected["root"])
    assert store.get_bytes(expected["root"]) == data
    assert store.size(expected["root"]) == size


CAR_ORACLE = Path(__file__).with_name("ipfs_car_oracle.mjs")


@pytest.mark.parametrize(("chunk", "width", "size"), CASES)
def test_matches_ipfs_car_encoder_with_small_parameters(
    oracle: str, tmp_path: Path, chunk: int, width: int, size: int
) -> None:
    """ipfs-car's own encoder (@ipld/unixfs), only chunk size and width changed."""
    if not (node_modules_dir() / "ipfs-car").is_dir():
        pytest.skip("ipfs-car not installed (run scripts/bootstrap.sh)")
    src = tmp_path / "f.bin"
    data = random.Random(size * 17 + width).randbytes(size)
    src.write_bytes(data)
    proc = subprocess.run(
        [oracle, str(CAR_ORACLE), str(src), str(chunk), str(width)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = json.loads(proc.stdout)
    store = LocalStore(tmp_path / "s", chunk_size=chunk, width=width)
    cid = store.put_file(src)
    assert cid == expected["root"]
    assert sorted(str(c) for c, _ in store.iter_dag(cid)) == sorted(set(expected["blocks"]))
