"""Datasets as committed artefacts: the shard/root argument, committing datasets and
folders into shards, loading them back, and checking shards and indexes."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pol_chain.format import (
    DATASET_INDEX_FILE,
    DatasetIndex,
    FieldSpec,
    FormatError,
    SampleKind,
    SampleStructure,
    ShardMeta,
    ShardRef,
    parse_header,
    shard_file_name,
    shard_tensor_name,
)
from pol_chain.proof import IntegrityError, MembershipError, commit_dataset, verify_membership
from pol_chain.proof.dataset import (
    MerkleTree,
    sample_leaf,
    structured_leaf,
)
from pol_chain.proof.serialization import serialize_state
from pol_chain.proof.shards import (
    DirectoryShards,
    FolderDataset,
    ShardDataset,
    check_index,
    commit_dataset_shards,
    membership_proof,
    shards_for,
    verify_shard,
)
from pol_chain.tasks.digits import load_split


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return (
        isinstance(a, tuple)
        and isinstance(b, tuple)
        and len(a) == len(b)
        and all(_same(p, q) for p, q in zip(a, b, strict=True))
    )


# --------------------------------------------------------------------------- shard/root argument
def _shard_index(leaves: list[bytes], shard_size: int) -> DatasetIndex:
    n = len(leaves)
    shards = tuple(
        ShardRef(
            s,
            len(leaves[s : s + shard_size]),
            MerkleTree(leaves[s : s + shard_size]).root,
            b"\0" * 32,
        )
        for s in range(0, n, shard_size)
    )
    pair = SampleStructure(SampleKind.PAIR, (FieldSpec("x", "float32"), FieldSpec("y", "int64")))
    return DatasetIndex(n, MerkleTree([s.root for s in shards]).root, shard_size, pair, shards)


@pytest.mark.parametrize("shard_size", [1, 2, 4, 8, 16, 64, 256])
def test_dataset_root_is_the_tree_over_shard_roots(shard_size: int) -> None:
    """For every N in 1..200: MerkleTree(shard roots) == MerkleTree(all leaves), the last
    partial shard included, and a shard's path + the top path is the sample's path."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(200)]
    for n in range(1, 201):
        full = MerkleTree(leaves[:n])
        index = _shard_index(leaves[:n], shard_size)
        assert index.root == full.root, (n, shard_size)
        check_index(index)
        top = MerkleTree([s.root for s in index.shards])
        for i in {0, n // 2, n - 1, min(n - 1, shard_size), n - 1 - (n - 1) % shard_size}:
            shard = index.shards[i // shard_size]
            path = membership_proof(index, i, leaves[shard.start : shard.start + shard.count], top)
            assert path == full.proof(i), (n, shard_size, i)
            assert verify_membership(leaves[i], i, n, path, index.root)


# --------------------------------------------------------------------------- commit and load
@pytest.mark.parametrize(
    ("size", "shard_size"),
    [(1, 1), (2, 1), (3, 1), (7, 4), (8, 4), (9, 4), (33, 8), (200, 64), (200, 256)],
)
def test_committed_shards_open_every_sample_to_the_root(
    tmp_path: Path, size: int, shard_size: int
) -> None:
    gen = torch.Generator().manual_seed(size)
    x, y = torch.randn(size, 3, 4, generator=gen), torch.randint(0, 10, (size,), generator=gen)
    index = commit_dataset_shards(
        TensorDataset(x, y), tmp_path, shard_size=shard_size, durable=False
    )
    commitment, tree = commit_dataset(x, y)
    assert index.commitment == commitment and index.shard_size == shard_size
    assert len(index.shards) == -(-size // shard_size)
    assert DatasetIndex.from_bytes((tmp_path / DATASET_INDEX_FILE).read_bytes()) == index
    check_index(index, commitment)
    source = DirectoryShards(tmp_path)
    top = MerkleTree([s.root for s in index.shards])
    for number in range(len(index.shards)):
        leaves = verify_shard(index, number, source(number))
        start = index.shards[number].start
        for offset, leaf in enumerate(leaves):
            i = start + offset
            assert leaf == sample_leaf(x[i], y[i])
            assert membership_proof(index, i, leaves, top) == tree.proof(i)
    data = ShardDataset(index, source, cache_size=1)
    assert len(data) == size
    assert all(_same(data[i], (x[i], y[i])) for i in range(size))


def test_digits_as_shards_load_back_through_a_dataloader(tmp_path: Path) -> None:
    tx, ty, _, _ = load_split()
    index = commit_dataset_shards(TensorDataset(tx, ty), tmp_path / "a", shard_size=256)
    assert index.root == commit_dataset(tx, ty)[0].root and len(index.shards) == 6
    assert index.shards[-1].count == 1438 - 5 * 256
    one = commit_dataset_shards(TensorDataset(tx, ty), tmp_path / "b", shard_size=256, threads=1)
    assert one == index  # threads change nothing
    auto = commit_dataset_shards(TensorDataset(tx, ty), tmp_path / "c", durable=False)
    assert auto.root == index.root and auto.shard_size == 2048 and len(auto.shards) == 1
    data = ShardDataset(index, DirectoryShards(tmp_path / "a"))
    loader = DataLoader(data, batch_size=100, shuffle=False)
    xs, ys = zip(*loader, strict=True)
    assert torch.equal(torch.cat(xs), tx) and torch.equal(torch.cat(ys), ty)
    assert shards_for(index, [0, 255, 256, 1437, 3]) == [0, 1, 5]
    with pytest.raises(MembershipError):
        shards_for(index, [1438])
    with pytest.raises(IndexError):
        data[1438]


class _Records(torch.utils.data.Dataset[Any]):
    """Variable-length token records as dicts with a Python int label."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(5)
        self.lengths = torch.randint(0, 40, (n,), generator=gen).tolist()
        self.tokens = [torch.randint(0, 50_000, (k,), generator=gen) for k in self.lengths]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.tokens[i]
        return {"input_ids": t, "mask": torch.ones_like(t, dtype=torch.bool), "label": i % 3}


@pytest.mark.parametrize("kind", ["dict", "tuple", "tensor", "list"])
def test_any_structure_round_trips(tmp_path: Path, kind: str) -> None:
    records = _Records(37)
    by_kind: dict[str, list[Any]] = {
        "dict": [records[i] for i in range(37)],
        "tuple": [
            (t, t.float() / 7, torch.tensor([i], dtype=torch.int16))
            for i, t in enumerate(records.tokens)
        ],
        "tensor": [t.to(torch.int32) for t in records.tokens],
        "list": [[t, i] for i, t in enumerate(records.tokens)],
    }
    samples = by_kind[kind]
    index = commit_dataset_shards(samples, tmp_path, shard_size=8, durable=False)
    assert index.root == MerkleTree([structured_leaf(s) for s in samples]).root
    data = ShardDataset(index, DirectoryShards(tmp_path))
    for i, sample in enumerate(samples):
        want: Any
        if kind == "dict":
            want = {
                k: torch.tensor(v) if isinstance(v, int) else v for k, v in sorted(sample.items())
            }
        elif kind == "list":
            want = (sample[0], torch.tensor(sample[1]))
        else:
            want = sample
        assert _same(data[i], want), i
    with pytest.raises(ValueError, match="sample 3"):
        commit_dataset_shards(samples[:3] + [torch.zeros(2, dtype=torch.float16)], tmp_path / "bad")


def test_a_folder_is_one_sample_per_file_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "b").mkdir(parents=True)
    arrays = {
        "a.npy": np.arange(6, dtype=np.float32),
        "b/c.npy": np.ones((2, 2), np.float32),
        "c.npy": np.zeros(0, np.float32),
    }
    for name, array in arrays.items():
        np.save(root / name, array)
    (root / ".hidden.npy").write_bytes(b"ignored")
    index = commit_dataset_shards(root, tmp_path / "out", shard_size=2, durable=False)
    data = ShardDataset(index, DirectoryShards(tmp_path / "out"))
    assert index.structure.kind is SampleKind.TENSOR and len(data) == 3
    for i, name in enumerate(sorted(arrays)):
        assert torch.equal(data[i], torch.from_numpy(arrays[name]))
    # raw files are uint8 bytes; safetensors files are dict samples
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(5):
        (raw / f"{i}.txt").write_bytes(b"doc %d" % i * i)
    got = ShardDataset(
        commit_dataset_shards(raw, tmp_path / "o2", durable=False), DirectoryShards(tmp_path / "o2")
    )
    assert [bytes(got[i].numpy()) for i in range(5)] == [b"doc %d" % i * i for i in range(5)]
    st = tmp_path / "st"
    st.mkdir()
    for i in range(4):
        tensors = {"y": torch.tensor(i), "x": torch.full((i,), float(i))}
        (st / f"{i:02d}.safetensors").write_bytes(serialize_state(tensors, {"format": "sample"}))
    index = commit_dataset_shards(st, tmp_path / "o3", durable=False)
    assert index.structure.kind is SampleKind.DICT and index.structure.names == ("x", "y")
    assert (
        index.root
        == MerkleTree(
            [sample_leaf(torch.full((i,), float(i)), torch.tensor(i)) for i in range(4)]
        ).root
    )
    with pytest.raises(ValueError, match="sample"):  # mixed structures
        np.save(st / "99.npy", np.zeros(1, np.float32))
        commit_dataset_shards(FolderDataset(st), tmp_path / "o4")


# --------------------------------------------------------------------------- checks
def _claimed_root(data: bytes, count: int) -> bytes:
    """The root of the leaves in pair-shard bytes ``data`` (what a forger would claim)."""
    from safetensors.torch import load

    parse_header(data, "forged shard")
    t = load(data)
    return MerkleTree(
        [
            sample_leaf(t[shard_tensor_name(o, "x")], t[shard_tensor_name(o, "y")])
            for o in range(count)
        ]
    ).root


def test_tampered_shards_and_indexes_are_named_errors(tmp_path: Path) -> None:
    x, y = torch.randn(20, 5), torch.arange(20)
    index = commit_dataset_shards(TensorDataset(x, y), tmp_path, shard_size=8)
    source = DirectoryShards(tmp_path)
    good = source(1)
    flipped = bytearray(good)
    flipped[-3] ^= 1
    with pytest.raises(IntegrityError, match="shard 1"):
        verify_shard(index, 1, bytes(flipped))
    with pytest.raises(IntegrityError):
        verify_shard(index, 0, good)  # another shard's bytes
    with pytest.raises(MembershipError):
        verify_shard(index, 3, good)

    def forged(number: int, data: bytes, root: bytes | None = None) -> DatasetIndex:
        """The index a forger would publish to make ``data`` shard ``number``."""
        ref = index.shards[number]
        refs = list(index.shards)
        refs[number] = ShardRef(
            ref.start, ref.count, root or ref.root, hashlib.sha256(data).digest()
        )
        return DatasetIndex(index.size, index.root, index.shard_size, index.structure, tuple(refs))

    # tampered bytes with a matching digest: the leaves no longer fold to the shard root
    with pytest.raises(MembershipError, match="shard 1"):
        verify_shard(forged(1, bytes(flipped)), 1, bytes(flipped))
    # a consistent shard root the dataset root does not hold
    fake = forged(1, bytes(flipped), _claimed_root(bytes(flipped), 8))
    verify_shard(fake, 1, bytes(flipped))
    with pytest.raises(MembershipError, match="do not fold"):
        check_index(fake)
    with pytest.raises(MembershipError, match="do not fold"):
        ShardDataset(fake, source)
    # wrong dtypes, wrong structure, pickles: malformed, never loaded as code
    doubles = {shard_tensor_name(o, "x"): x[8 + o].double() for o in range(8)}
    doubles.update({shard_tensor_name(o, "y"): y[8 + o] for o in range(8)})
    wrong = serialize_state(doubles, ShardMeta(8, 8).to_json())
    with pytest.raises(FormatError, match="expected float32") as info:
        verify_shard(forged(1, wrong), 1, wrong)
    assert info.value.field == "000000.x"
    payload = pickle.dumps({"x": 1})
    with pytest.raises(FormatError):
        verify_shard(forged(1, payload), 1, payload)
    with pytest.raises(MembershipError, match="not the committed"):
        check_index(index, commit_dataset(x[:19], y[:19])[0])
    # a ShardDataset refuses a tampered file it loads (and counts loads: the LRU)
    calls: list[int] = []

    def counting(number: int) -> bytes:
        calls.append(number)
        return bytes(flipped) if number == 1 else source(number)

    data = ShardDataset(index, counting, cache_size=1)
    assert _same(data[0], (x[0], y[0])) and _same(data[7], (x[7], y[7]))
    assert _same(data[19], (x[19], y[19])) and _same(data[3], (x[3], y[3]))
    assert calls == [0, 2, 0]
    with pytest.raises(IntegrityError):
        data[9]
    (tmp_path / shard_file_name(2)).write_bytes(b"")
    with pytest.raises(IntegrityError):
        ShardDataset(index, source)[16]


def test_large_samples_odd_dtypes_and_the_writer_are_consistent(tmp_path: Path) -> None:
    """Samples of ≥ 8 KiB (leaves hashed on the workers), non-contiguous and grad-tracking
    tensors, every dtype; the shard file is byte-identical to the deterministic writer's;
    ``out_dir=None`` gives the same index without writing."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(21, 3, 32, 32, generator=gen)  # 12 KiB per sample
    y = torch.randint(0, 9, (21,), generator=gen)
    index = commit_dataset_shards(TensorDataset(x, y), tmp_path / "a", shard_size=8)
    assert index.root == commit_dataset(x, y)[0].root
    assert commit_dataset_shards(TensorDataset(x, y), None, shard_size=8, threads=1) == index
    assert not (tmp_path / "b").exists()
    from safetensors.torch import load

    data = DirectoryShards(tmp_path / "a")(2)
    meta = ShardMeta(16, 5).to_json()
    assert serialize_state(dict(load(data)), meta) == data
    w = torch.randn(4, 6, generator=gen, requires_grad=True)
    samples = [
        {
            "bf16": torch.randn(5, generator=gen).to(torch.bfloat16),
            "f16": torch.randn(2, 2, generator=gen).half(),
            "f64": torch.randn(3, generator=gen).double(),
            "i8": torch.tensor([-1, 2], dtype=torch.int8),
            "i16": torch.tensor([i], dtype=torch.int16),
            "i32": torch.tensor([i, -i], dtype=torch.int32),
            "flag": torch.tensor([True, False]),
            "u8": torch.arange(i, dtype=torch.uint8),
            "w": w * i,  # requires grad
            "wt": x[i, 0].t(),  # not contiguous
        }
        for i in range(6)
    ]
    index = commit_dataset_shards(samples, tmp_path / "c", shard_size=4, durable=False)
    assert index.root == MerkleTree([structured_leaf(s) for s in samples]).root
    loaded = ShardDataset(index, DirectoryShards(tmp_path / "c"))
    for i, sample in enumerate(samples):
        want = {k: v.detach().contiguous() for k, v in sorted(sample.items())}
        assert _same(loaded[i], want), i
    for bad in (3, 1 << 16):
        with pytest.raises(ValueError, match="power of two"):
            commit_dataset_shards(samples, None, shard_size=bad)
    with pytest.raises(ValueError, match="empty"):
        commit_dataset_shards([], None)
