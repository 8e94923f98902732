"""The dataset index and shard metadata: round trip, golden bytes, unknown versions and
malformed fields refused naming the field, the structure's name mapping, shard headers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pol_chain.format import (
    DATASET_FORMAT,
    DatasetCommitment,
    DatasetIndex,
    FieldSpec,
    FormatError,
    JsonObject,
    SampleKind,
    SampleStructure,
    ShardMeta,
    ShardRef,
    TensorInfo,
    UnknownFormat,
    canonical_json,
    check_shard_header,
    field_names,
    shard_file_name,
    shard_tensor_name,
)

Golden = Callable[[str, bytes], None]
D = [bytes([i]) * 32 for i in range(16)]
PAIR = SampleStructure(SampleKind.PAIR, (FieldSpec("x", "float32"), FieldSpec("y", "int64")))


def _index(size: int = 10, shard_size: int = 4) -> DatasetIndex:
    count = -(-size // shard_size)
    shards = tuple(
        ShardRef(n * shard_size, min(shard_size, size - n * shard_size), D[n], D[n + 8])
        for n in range(count)
    )
    return DatasetIndex(size, D[15], shard_size, PAIR, shards)


def test_round_trip_and_golden_bytes(golden: Golden) -> None:
    index = _index()
    data = index.to_bytes()
    assert data == canonical_json(json.loads(data))
    assert DatasetIndex.from_bytes(data) == index
    assert json.loads(data)["format"] == DATASET_FORMAT == "polchain-dataset-v1"
    golden("dataset-index.json", data)
    published = index.with_cids({D[8]: "bafk0", D[10]: "bafk2"})
    assert [s.cid for s in published.shards] == ["bafk0", None, "bafk2"]
    assert DatasetIndex.from_bytes(published.to_bytes()) == published
    assert published.without_cids() == index and published.digest != index.digest
    golden("dataset-index-published.json", published.to_bytes())
    meta = ShardMeta(start=8, count=2)
    assert ShardMeta.from_json(JsonObject(meta.to_json(), "shard")) == meta
    assert ShardMeta.from_metadata(meta.metadata(), "shard") == meta
    golden("shard-meta.json", canonical_json(meta.to_json()))


def test_index_facts() -> None:
    index = _index()
    assert index.commitment == DatasetCommitment(D[15], 10)
    assert [index.shard_of(i) for i in (0, 3, 4, 9)] == [0, 0, 1, 2]
    with pytest.raises(IndexError):
        index.shard_of(10)
    assert shard_tensor_name(7, "x") == "000007.x"
    assert shard_file_name(3) == "shard-000003.safetensors"
    empty = DatasetIndex(0, D[1], 1, PAIR, ())
    assert DatasetIndex.from_bytes(empty.to_bytes()) == empty


def test_unknown_version_is_refused_clearly() -> None:
    value = _index().to_json()
    value["format"] = "polchain-dataset-v9"
    with pytest.raises(UnknownFormat) as info:
        DatasetIndex.from_bytes(canonical_json(value))
    assert info.value.field == "format" and "polchain-dataset-v1" in str(info.value)
    meta = ShardMeta(0, 1).to_json()
    meta["format"] = "polchain-shard-v2"
    with pytest.raises(UnknownFormat, match="polchain-shard-v1"):
        ShardMeta.from_json(JsonObject(meta, "shard"))


def _set_field(pos: int, **change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda v: v["structure"]["fields"][pos].update(change)


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("size", lambda v: v.update(size=-1)),
    ("shards[2].count", lambda v: v.update(size=11)),  # the last shard would hold 3
    ("shard_size", lambda v: v.update(shard_size=3)),
    ("shard_size", lambda v: v.update(shard_size=1 << 16)),
    ("root", lambda v: v.update(root="0x1234")),
    ("leaf_rule", lambda v: v.update(leaf_rule="polchain-sample-v0")),
    ("extra", lambda v: v.update(extra=1)),
    ("shards", lambda v: v["shards"].pop()),
    ("shards[1].start", lambda v: v["shards"][1].update(start=5)),
    ("shards[2].count", lambda v: v["shards"][2].update(count=4)),
    ("shards[0].count", lambda v: v["shards"][0].update(count=0)),
    ("shards[0].sha256", lambda v: v["shards"][0].update(sha256="0x" + "zz" * 32)),
    ("shards[1].root", lambda v: v["shards"][1].pop("root")),
    ("shards[0].cid", lambda v: v["shards"][0].update(cid="../etc/passwd")),
    ("structure.kind", lambda v: v["structure"].update(kind="graph")),
    ("structure.fields[0].name", _set_field(0, name="a")),
    ("structure.fields[1].dtype", _set_field(1, dtype="complex64")),
    ("structure.fields[0].extra", _set_field(0, extra=True)),
    ("structure.fields", lambda v: v["structure"].update(kind="tensor")),
]


@pytest.mark.parametrize(("field", "mutate"), MALFORMED, ids=[f for f, _ in MALFORMED])
def test_malformed_field_is_refused_with_its_name(
    field: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    value = _index().to_json()
    mutate(value)
    with pytest.raises(FormatError) as info:
        DatasetIndex.from_bytes(canonical_json(value))
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)


def test_bounds_of_hostile_indexes() -> None:
    value = _index().to_json()
    value.update(size=1 << 40, shard_size=1)
    with pytest.raises(FormatError, match="exceed the limit") as info:
        DatasetIndex.from_bytes(canonical_json(value))
    assert info.value.field == "shards"
    wide = SampleStructure.of(SampleKind.DICT, {f"f{i}": "uint8" for i in range(4)})
    with pytest.raises(FormatError) as info:
        DatasetIndex(1, D[0], 1 << 15, wide, (ShardRef(0, 1, D[1], D[2]),))
    assert info.value.field == "shard_size"
    with pytest.raises(FormatError, match="exceed the limit"):
        DatasetIndex.from_bytes(b"[" + b" " * (64 << 20) + b"]")


def test_field_names_map_structures_deterministically() -> None:
    assert field_names(SampleKind.PAIR, 2) == ("x", "y")
    assert field_names(SampleKind.TENSOR, 1) == ("x",)
    assert field_names(SampleKind.TUPLE, 3) == ("0", "1", "2")
    assert field_names(SampleKind.DICT, ["mask", "input_ids"]) == ("input_ids", "mask")
    bad: list[tuple[SampleKind, int | list[str]]] = [
        (SampleKind.TUPLE, 2),  # a 2-tuple is a pair
        (SampleKind.TUPLE, 0),
        (SampleKind.PAIR, 3),
        (SampleKind.DICT, []),
        (SampleKind.DICT, ["a b"]),
        (SampleKind.DICT, ["../x"]),
    ]
    for kind, items in bad:
        with pytest.raises(ValueError):
            field_names(kind, items)
    tup = SampleStructure.of(SampleKind.TUPLE, {str(i): "int64" for i in range(12)})
    assert tup.names[:3] == ("0", "1", "2") and tup.names[-1] == "11"
    assert [f.name for f in tup.leaf_order][:4] == ["0", "1", "10", "11"]  # sorted names


def _header(count: int, start: int = 0) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    pos = 0
    for offset in range(count):
        for name, dtype, size in (("x", "F32", 12), ("y", "I64", 8)):
            tensor = shard_tensor_name(offset, name)
            tensors[tensor] = TensorInfo(
                tensor, dtype, (size // 4,) if dtype == "F32" else (), pos, pos + size
            )
            pos += size
    return tensors


def test_shard_header_must_match_the_index() -> None:
    index = _index()
    meta = ShardMeta(4, 4).metadata()
    layout = check_shard_header(index, 1, _header(4), meta)
    assert [[i.name for i in infos] for infos in layout][1] == ["000001.x", "000001.y"]
    with pytest.raises(FormatError) as info:
        check_shard_header(index, 1, _header(4), ShardMeta(0, 4).metadata())
    assert info.value.field == "__metadata__.polchain.start"
    with pytest.raises(FormatError) as info:
        check_shard_header(index, 2, _header(2), ShardMeta(8, 3).metadata())
    assert info.value.field == "__metadata__.polchain.count"
    bad = _header(4)
    bad["000002.y"] = TensorInfo("000002.y", "F64", (), 0, 8)
    with pytest.raises(FormatError, match="expected int64") as info:
        check_shard_header(index, 1, bad, meta)
    assert info.value.field == "000002.y"
    renamed = _header(4)
    renamed["000009.y"] = renamed.pop("000003.y")
    with pytest.raises(FormatError, match="missing") as info:
        check_shard_header(index, 1, renamed, meta)
    assert info.value.field == "000003.y"
    with pytest.raises(FormatError, match="tensors"):
        check_shard_header(index, 1, _header(3), meta)
    with pytest.raises(FormatError, match="polchain metadata"):
        check_shard_header(index, 1, _header(4), {})
    with pytest.raises(FormatError, match="no shard 3"):
        check_shard_header(index, 3, _header(4), meta)
