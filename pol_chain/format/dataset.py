"""Committed datasets: the index (``polchain-dataset-v1``) and its shards (``polchain-shard-v1``).

A dataset of N samples is cut into shards of ``shard_size`` samples (a power of two;
shard ``j`` holds samples ``j·S .. min((j+1)·S, N) - 1``). The index, canonical JSON::

    {"format": "polchain-dataset-v1", "leaf_rule": "polchain-sample-v1",
     "root": "0x..", "size": N, "shard_size": S,
     "structure": {"kind": "pair" | "dict" | "tensor" | "tuple",
                   "fields": [{"dtype": "float32", "name": "x"}, ...]},
     "shards": [{"count": c, "root": "0x..", "sha256": "0x..", "start": j·S[, "cid": ".."]}, ...]}

``root`` is the Merkle root over every sample's leaf; each shard's ``root`` is the root of
its own samples' leaves, and because shards are powers of two aligned at multiples of
their size, the dataset root is the Merkle tree over the shard roots (the proof engine
checks both). ``sha256`` is the digest of the shard file; ``cid`` a locator only.

A shard is a deterministic safetensors file: sample ``start + o`` is the tensors
``f"{o:06d}.{field}"`` for each field (any shape, so variable-length samples work), and
the ``polchain`` metadata entry is ``{"count", "format": "polchain-shard-v1", "start"}``.

The *structure* says how a loader rebuilds each sample and names its fields (the leaf
hashes fields by name, see :mod:`pol_chain.proof.dataset`):

- ``pair``: a 2-tuple (or 2-list) ``(x, y)`` → fields ``x``, ``y``;
- ``tensor``: one tensor → field ``x``;
- ``tuple``: a tuple (or list) of n ≠ 2 tensors → fields ``"0"``, ``"1"``, … (position);
- ``dict``: a mapping of names to tensors → its names, sorted.

Field dtypes are spelled as the leaf spells them (``float32``, ``int64``, …).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pol_chain.format._json import (
    CanonicalRecord,
    JsonDict,
    JsonObject,
    parse_json,
    to_hex,
)
from pol_chain.format.checkpoint import MAX_TENSORS, TensorInfo, metadata_entry, polchain_meta
from pol_chain.format.errors import FormatError
from pol_chain.format.manifest import MAX_CID
from pol_chain.format.names import DATASET_FORMAT, SAMPLE_LEAF_RULE, SHARD_FORMAT
from pol_chain.format.spec import DatasetCommitment

__all__ = [
    "DATASET_INDEX_FILE",
    "FIELD_DTYPES",
    "MAX_DATASET_SIZE",
    "MAX_FIELDS",
    "MAX_SHARD_SIZE",
    "MAX_SHARDS",
    "DatasetIndex",
    "FieldSpec",
    "SampleKind",
    "SampleStructure",
    "ShardMeta",
    "ShardRef",
    "check_shard_header",
    "field_names",
    "shard_file_name",
    "shard_tensor_name",
]

DATASET_INDEX_FILE = "dataset.json"
"""The index's file name beside the shards in a committed dataset folder."""

FIELD_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
"""A field's dtype (as the leaf header spells it) → its safetensors dtype code."""
DTYPE_OF_CODE: dict[str, str] = {code: name for name, code in FIELD_DTYPES.items()}

MAX_DATASET_SIZE = 1 << 40
MAX_SHARD_SIZE = 1 << 15
"""Largest shard (samples); with the offset spelled in 6 digits and the header's tensor
limit, ``shard_size × fields ≤ 65536``."""
MAX_SHARDS = 1 << 18
MAX_FIELDS = 256
MAX_INDEX_BYTES = 64 * 1024 * 1024
_FIELD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CID = re.compile(r"[A-Za-z0-9]+")
_WHAT = "dataset index"


class SampleKind(enum.StrEnum):
    """The Python structure of a sample (how a loader rebuilds it)."""

    PAIR = "pair"
    DICT = "dict"
    TENSOR = "tensor"
    TUPLE = "tuple"


def field_names(kind: SampleKind, items: int | Sequence[str]) -> tuple[str, ...]:
    """The field names of a sample of ``kind``: ``items`` is the element count of a tuple
    (or pair/tensor) and the keys of a dict. Raises ``ValueError`` when ``kind`` cannot
    have them."""
    if kind is SampleKind.DICT:
        if isinstance(items, int):
            raise ValueError("a dict sample's field names are its keys")
        names = sorted(items)
        if not names or len(set(names)) != len(names) or len(names) > MAX_FIELDS:
            raise ValueError(f"a dict sample needs 1 to {MAX_FIELDS} distinct names")
        for name in names:
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise ValueError(
                    f"field name {name!r} must match {_FIELD_NAME.pattern} (letters, digits, _ . -)"
                )
        return tuple(names)
    count = items if isinstance(items, int) else len(items)
    if kind is SampleKind.PAIR:
        if count != 2:
            raise ValueError("a pair has 2 fields")
        return ("x", "y")
    if kind is SampleKind.TENSOR:
        if count != 1:
            raise ValueError("a tensor sample has 1 field")
        return ("x",)
    if not 1 <= count <= MAX_FIELDS or count == 2:
        raise ValueError(f"a tuple sample has 1 to {MAX_FIELDS} fields, not 2 (that is a pair)")
    return tuple(str(i) for i in range(count))


@dataclass(frozen=True)
class FieldSpec:
    """One field of every sample: its name and dtype."""

    name: str
    dtype: str

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"dtype": self.dtype, "name": self.name}


@dataclass(frozen=True)
class SampleStructure:
    """The kind of every sample and its fields, in the order the loader rebuilds them
    (position for ``pair``/``tuple``, sorted names for ``dict``)."""

    kind: SampleKind
    fields: tuple[FieldSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SampleKind(self.kind))
        names = [f.name for f in self.fields]
        try:
            want = field_names(self.kind, names if self.kind is SampleKind.DICT else len(names))
        except ValueError as exc:
            raise FormatError(_WHAT, str(exc), field="structure.fields") from None
        for pos, (spec, name) in enumerate(zip(self.fields, want, strict=True)):
            if spec.name != name:
                raise FormatError(
                    _WHAT,
                    f"must be {name!r} for a {self.kind.value} sample",
                    field=f"structure.fields[{pos}].name",
                )
            if spec.dtype not in FIELD_DTYPES:
                raise FormatError(
                    _WHAT,
                    f"unsupported dtype {spec.dtype!r} (one of {', '.join(FIELD_DTYPES)})",
                    field=f"structure.fields[{pos}].dtype",
                )

    @classmethod
    def of(cls, kind: SampleKind, dtypes: Mapping[str, str]) -> SampleStructure:
        """The structure of ``kind`` whose fields have ``dtypes`` (by field name)."""
        names = field_names(kind, list(dtypes) if kind is SampleKind.DICT else len(dtypes))
        return cls(kind, tuple(FieldSpec(n, dtypes[n]) for n in names))

    @property
    def names(self) -> tuple[str, ...]:
        """Field names in rebuild order."""
        return tuple(f.name for f in self.fields)

    @property
    def leaf_order(self) -> tuple[FieldSpec, ...]:
        """The fields in the leaf's (and the shard file's) order: sorted by name."""
        return tuple(sorted(self.fields, key=lambda f: f.name))

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"fields": [f.to_json() for f in self.fields], "kind": self.kind.value}

    @classmethod
    def from_json(cls, obj: JsonObject) -> SampleStructure:
        """Parse the index's ``structure``."""
        obj.only(("fields", "kind"))
        kind = obj.str("kind", 16)
        if kind not in {k.value for k in SampleKind}:
            raise obj.fail("kind", f"unknown sample kind {kind!r}")
        fields = []
        for pos, item in enumerate(obj.list("fields", MAX_FIELDS)):
            f = JsonObject(item, obj.what, f"{obj.path}.fields[{pos}]").only(("dtype", "name"))
            fields.append(FieldSpec(f.str("name", 64), f.str("dtype", 16)))
        return cls(SampleKind(kind), tuple(fields))


@dataclass(frozen=True)
class ShardRef:
    """Shard ``start // shard_size``: its samples, their Merkle root, the file's SHA-256
    and (a locator only) its CID."""

    start: int
    count: int
    root: bytes
    sha256: bytes
    cid: str | None = None

    def to_json(self) -> JsonDict:
        """The JSON form."""
        out: JsonDict = {
            "count": self.count,
            "root": to_hex(self.root),
            "sha256": to_hex(self.sha256),
            "start": self.start,
        }
        if self.cid is not None:
            out["cid"] = self.cid
        return out

    @classmethod
    def from_json(cls, obj: JsonObject) -> ShardRef:
        """Parse one shard entry."""
        obj.only(("count", "root", "sha256", "start"), ("cid",))
        cid = obj.opt_str("cid", MAX_CID)
        if cid is not None and not _CID.fullmatch(cid):
            raise obj.fail("cid", "must be letters and digits")
        return cls(
            obj.int("start", 0, MAX_DATASET_SIZE),
            obj.int("count", 1, MAX_SHARD_SIZE),
            obj.digest("root"),
            obj.digest("sha256"),
            cid,
        )


@dataclass(frozen=True)
class DatasetIndex(CanonicalRecord):
    """A committed dataset: size, Merkle root, sample structure and shards."""

    size: int
    root: bytes
    shard_size: int
    structure: SampleStructure
    shards: tuple[ShardRef, ...] = field(default=())
    leaf_rule: str = SAMPLE_LEAF_RULE

    def __post_init__(self) -> None:
        def fail(name: str, detail: str) -> FormatError:
            return FormatError(_WHAT, detail, field=name)

        if self.leaf_rule != SAMPLE_LEAF_RULE:
            raise fail("leaf_rule", f"unknown leaf rule {self.leaf_rule!r}")
        if not 0 <= self.size <= MAX_DATASET_SIZE:
            raise fail("size", f"{self.size} is outside [0, {MAX_DATASET_SIZE}]")
        if len(self.root) != 32:
            raise fail("root", "must be 32 bytes")
        s = self.shard_size
        if not 1 <= s <= MAX_SHARD_SIZE or s & (s - 1):
            raise fail("shard_size", f"{s} is not a power of two in [1, {MAX_SHARD_SIZE}]")
        if s * len(self.structure.fields) > MAX_TENSORS:
            detail = f"{s} samples × {len(self.structure.fields)} fields exceed {MAX_TENSORS}"
            raise fail("shard_size", f"{detail} tensors per shard")
        want = -(-self.size // s)
        if want > MAX_SHARDS:
            raise fail("shards", f"{want} shards exceed the limit of {MAX_SHARDS}")
        if len(self.shards) != want:
            raise fail("shards", f"{len(self.shards)} shards for {self.size} samples of {s}")
        for number, ref in enumerate(self.shards):
            if ref.start != number * s:
                raise fail(f"shards[{number}].start", f"must be {number * s}")
            if ref.count != min(s, self.size - ref.start):
                raise fail(f"shards[{number}].count", f"must be {min(s, self.size - ref.start)}")
            if len(ref.root) != 32 or len(ref.sha256) != 32:
                raise fail(f"shards[{number}]", "root and sha256 must be 32 bytes")

    @property
    def commitment(self) -> DatasetCommitment:
        """What the spec commits to: root, size and leaf rule."""
        return DatasetCommitment(root=self.root, size=self.size, leaf_rule=self.leaf_rule)

    def shard_of(self, index: int) -> int:
        """The number of the shard holding sample ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"sample {index} outside a dataset of {self.size}")
        return index // self.shard_size

    def with_cids(self, cids: Mapping[bytes, str]) -> DatasetIndex:
        """The index with each shard's CID from ``cids`` (by SHA-256; others unchanged)."""
        shards = tuple(replace(r, cid=cids.get(r.sha256, r.cid)) for r in self.shards)
        return replace(self, shards=shards)

    def without_cids(self) -> DatasetIndex:
        """The index without locators (its digest does not depend on where shards lie)."""
        return replace(self, shards=tuple(replace(r, cid=None) for r in self.shards))

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "format": DATASET_FORMAT,
            "leaf_rule": self.leaf_rule,
            "root": to_hex(self.root),
            "shard_size": self.shard_size,
            "shards": [r.to_json() for r in self.shards],
            "size": self.size,
            "structure": self.structure.to_json(),
        }

    @classmethod
    def from_bytes(cls, data: bytes, what: str = _WHAT) -> DatasetIndex:
        """Parse index bytes (canonical JSON, bounded, data only)."""
        return cls.from_json(parse_json(data, what, max_bytes=MAX_INDEX_BYTES, max_depth=6), what)

    @classmethod
    def from_json(cls, value: Any, what: str = _WHAT) -> DatasetIndex:
        """Parse and validate an index object."""
        obj = JsonObject(value, what)
        obj.format(DATASET_FORMAT)
        obj.only(("format", "leaf_rule", "root", "shard_size", "shards", "size", "structure"))
        leaf_rule = obj.str("leaf_rule", 64)
        if leaf_rule != SAMPLE_LEAF_RULE:
            raise obj.fail("leaf_rule", f"unknown leaf rule {leaf_rule!r}")
        size = obj.int("size", 0, MAX_DATASET_SIZE)
        shard_size = obj.int("shard_size", 1, MAX_SHARD_SIZE)
        items = obj.list("shards", MAX_SHARDS)
        try:
            structure = SampleStructure.from_json(obj.obj("structure"))
            shards = tuple(
                ShardRef.from_json(JsonObject(s, what, f"shards[{i}]")) for i, s in enumerate(items)
            )
            return cls(size, obj.digest("root"), shard_size, structure, shards, leaf_rule)
        except FormatError as exc:
            raise FormatError(what, exc.detail, field=exc.field) from None


@dataclass(frozen=True)
class ShardMeta:
    """The ``polchain`` metadata of a shard file: its first sample and sample count."""

    start: int
    count: int

    def to_json(self) -> JsonDict:
        """The metadata object."""
        return {"count": self.count, "format": SHARD_FORMAT, "start": self.start}

    def metadata(self) -> dict[str, str]:
        """The safetensors ``__metadata__`` entry."""
        return metadata_entry(self.to_json())

    @classmethod
    def from_json(cls, obj: JsonObject) -> ShardMeta:
        """Parse (and check the format of) a shard's metadata."""
        obj.format(SHARD_FORMAT)
        obj.only(("count", "format", "start"))
        return cls(obj.int("start", 0, MAX_DATASET_SIZE), obj.int("count", 1, MAX_SHARD_SIZE))

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], what: str) -> ShardMeta:
        """Parse the metadata of a shard file's header."""
        return cls.from_json(polchain_meta(metadata, what))


def shard_tensor_name(offset: int, name: str) -> str:
    """The tensor of field ``name`` of the shard's sample ``offset``."""
    return f"{offset:06d}.{name}"


def shard_file_name(number: int) -> str:
    """The file name of shard ``number`` in a committed dataset folder."""
    return f"shard-{number:06d}.safetensors"


def check_shard_header(
    index: DatasetIndex,
    number: int,
    tensors: Mapping[str, TensorInfo],
    metadata: dict[str, str],
    what: str | None = None,
) -> list[tuple[TensorInfo, ...]]:
    """Check a parsed shard header against ``index``: its metadata names shard
    ``number``'s samples, and it holds exactly their fields with the declared dtypes.
    Return, per sample, its fields' :class:`TensorInfo` in leaf order."""
    what = what or f"dataset shard {number}"
    if not 0 <= number < len(index.shards):
        raise FormatError(what, f"no shard {number} in a dataset of {len(index.shards)}")
    ref = index.shards[number]
    meta = ShardMeta.from_metadata(metadata, what)
    if meta.start != ref.start:
        raise FormatError(what, f"must be {ref.start}", field="__metadata__.polchain.start")
    if meta.count != ref.count:
        raise FormatError(what, f"must be {ref.count}", field="__metadata__.polchain.count")
    fields = index.structure.leaf_order
    if len(tensors) != ref.count * len(fields):
        raise FormatError(what, f"{len(tensors)} tensors, expected {ref.count * len(fields)}")
    out: list[tuple[TensorInfo, ...]] = []
    for offset in range(ref.count):
        infos = []
        for spec in fields:
            name = shard_tensor_name(offset, spec.name)
            info = tensors.get(name)
            if info is None:
                raise FormatError(what, "is missing", field=name)
            if info.dtype != FIELD_DTYPES[spec.dtype]:
                found = DTYPE_OF_CODE.get(info.dtype, info.dtype)
                raise FormatError(what, f"is {found}, expected {spec.dtype}", field=name)
            infos.append(info)
        out.append(tuple(infos))
    return out
