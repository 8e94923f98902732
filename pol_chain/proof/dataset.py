"""Dataset commitment: per-sample leaves and a Merkle root with membership proofs.

Leaf rule (``pol_chain.format.SAMPLE_LEAF_RULE``), over a sample given as named tensors::

    leaf = SHA-256(0x00 ‖ LEAF_RULE ‖ u32be(len(h)) ‖ h ‖ bytes(f_1) ‖ … ‖ bytes(f_n))
    h    = canonical JSON {name: {"dtype", "shape"} for every field}

with the fields ``f_1 … f_n`` in sorted-name order (the order canonical JSON lists them
in ``h``), each tensor's bytes C-contiguous, little-endian. So every name, dtype, shape
and byte of the sample is bound, and ``h`` fixes where each field's bytes end. A sample
``(x, y)`` is the fields ``x`` and ``y``: :func:`sample_leaf` is that case. Any other
structure maps to names by :func:`sample_fields` (a bare tensor is ``x``; a tuple of
n ≠ 2 is ``"0"``, ``"1"``, …; a dict keeps its names; Python numbers become 0-d tensors,
see :mod:`pol_chain.format.dataset`).

Internal nodes are ``SHA-256(0x01 ‖ left ‖ right)``. A level with an odd number of nodes
carries its last node up unchanged (no duplication, so no second-preimage by repetition).
The root of an empty dataset is SHA-256(0x02). The size N is committed beside the root.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from pol_chain.format import (
    FIELD_DTYPES,
    SAMPLE_LEAF_RULE,
    DatasetCommitment,
    SampleKind,
    SampleStructure,
    canonical_json,
    field_names,
)
from pol_chain.proof.errors import MembershipError

__all__ = [
    "LEAF_RULE",
    "DatasetCommitment",
    "LeafHasher",
    "MerkleTree",
    "RawField",
    "Sample",
    "Signature",
    "commit_dataset",
    "fields_leaf",
    "raw_fields",
    "rebuild_sample",
    "sample_fields",
    "sample_leaf",
    "structure_of",
    "structured_leaf",
    "torch_dtype",
    "verify_membership",
]

Sample: TypeAlias = Any
"""A sample as a dataset returns it: a tensor, a tuple/list of tensors, a mapping of
names to tensors; Python ``bool``/``int``/``float`` and numpy arrays become tensors."""

LEAF_RULE = SAMPLE_LEAF_RULE
_LEAF_PREFIX = b"\x00" + LEAF_RULE.encode()
_NODE_PREFIX = b"\x01"


RawField: TypeAlias = tuple[str, tuple[int, ...], bytes | memoryview]
"""One field as the leaf and the shard file see it: dtype name, shape, raw bytes (C order,
little-endian; a view of a contiguous CPU tensor's memory from 8 KiB, else a copy)."""

_VIEW_BYTES = 8 * 1024
"""Tensors of at least this size are read in place; smaller ones are copied (cheaper than
a view, which the garbage collector would track)."""
_TORCH_DTYPES: dict[str, torch.dtype] = {n: getattr(torch, n) for n in FIELD_DTYPES}
_DTYPE_NAMES: dict[torch.dtype, str] = {d: n for n, d in _TORCH_DTYPES.items()}
_NUMPY_NAMES: dict[np.dtype[Any], str] = {np.dtype(n): n for n in FIELD_DTYPES if n != "bfloat16"}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a field dtype name (``float32`` → ``torch.float32``)."""
    return _TORCH_DTYPES[name]


def _split(sample: Sample) -> tuple[SampleKind, list[tuple[str, Any]]]:
    """The kind of ``sample`` and its ``(name, value)`` fields (the naming rule)."""
    try:
        if isinstance(sample, tuple | list):
            if len(sample) == 2:
                return SampleKind.PAIR, [("x", sample[0]), ("y", sample[1])]
            names = field_names(SampleKind.TUPLE, len(sample))
            return SampleKind.TUPLE, list(zip(names, sample, strict=True))
        if isinstance(sample, torch.Tensor):
            return SampleKind.TENSOR, [("x", sample)]
        if isinstance(sample, Mapping):
            names = field_names(SampleKind.DICT, list(sample))
            return SampleKind.DICT, [(n, sample[n]) for n in names]
    except ValueError as exc:
        raise TypeError(f"sample: {exc}") from None
    return SampleKind.TENSOR, [("x", sample)]


def _raw_field(value: Any, name: str) -> RawField:
    if isinstance(value, torch.Tensor):
        dtype = _DTYPE_NAMES.get(value.dtype)
        if dtype is None:
            raise TypeError(f"field {name!r}: unsupported dtype {value.dtype}")
        t = value if value.is_cpu and not value.requires_grad else value.detach().cpu()
        try:
            array = (t.view(torch.int16) if dtype == "bfloat16" else t).numpy()
        except (RuntimeError, TypeError) as exc:
            raise TypeError(f"field {name!r}: not a dense tensor ({exc})") from None
        if array.nbytes >= _VIEW_BYTES and array.flags.c_contiguous:  # read in place
            return dtype, tuple(t.shape), memoryview(array).cast("B")  # type: ignore[arg-type]
        return dtype, tuple(t.shape), array.tobytes()
    if isinstance(value, bool):
        return "bool", (), b"\x01" if value else b"\x00"
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            raise TypeError(f"field {name!r}: {value} does not fit int64")
        return "int64", (), struct.pack("<q", value)
    if isinstance(value, float):
        return "float64", (), struct.pack("<d", value)
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        dtype = _NUMPY_NAMES.get(array.dtype)
        if dtype is None:
            raise TypeError(f"field {name!r}: unsupported dtype {array.dtype}")
        return dtype, tuple(array.shape), array.tobytes()
    kind = type(value).__name__
    raise TypeError(f"field {name!r}: a sample field must be a tensor or a number, got {kind}")


def raw_fields(sample: Sample) -> tuple[SampleKind, dict[str, RawField]]:
    """The kind of ``sample`` and each field's :data:`RawField`, by name (as
    :func:`sample_fields` names them). A contiguous CPU tensor of 8 KiB or more is read
    in place: its bytes are a view of its memory, so it must not change while they are
    used."""
    kind, items = _split(sample)
    return kind, {n: _raw_field(v, n) for n, v in items}


def sample_fields(sample: Sample) -> tuple[SampleKind, dict[str, torch.Tensor]]:
    """The kind of ``sample`` and its fields by name (the leaf's and the shard's names):
    a 2-tuple/list is a ``pair`` (``x``, ``y``); a tuple/list of n ≠ 2 a ``tuple``
    (``"0"``, ``"1"``, …); a mapping a ``dict`` (its names); anything else one ``tensor``
    (``x``). Python ``bool``/``int``/``float`` become 0-d ``bool``/``int64``/``float64``
    tensors, numpy arrays tensors. Raises ``TypeError`` for what cannot be a sample."""
    kind, raw = raw_fields(sample)
    return kind, {n: _tensor_of(field) for n, field in raw.items()}


def _tensor_of(field: RawField) -> torch.Tensor:
    dtype, shape, data = field
    if not data:
        return torch.empty(shape, dtype=_TORCH_DTYPES[dtype])
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if dtype == "bfloat16":
        return flat.view(torch.int16).view(torch.bfloat16).reshape(shape)
    return flat.view(_TORCH_DTYPES[dtype]).reshape(shape)


def structure_of(kind: SampleKind, fields: Mapping[str, RawField]) -> SampleStructure:
    """The :class:`SampleStructure` of a sample of ``kind`` with ``fields``."""
    return SampleStructure.of(kind, {n: f[0] for n, f in fields.items()})


def rebuild_sample(structure: SampleStructure, fields: Mapping[str, torch.Tensor]) -> Sample:
    """The sample of ``structure`` from its ``fields`` (inverse of :func:`sample_fields`;
    lists come back as tuples, numbers as 0-d tensors)."""
    kind = structure.kind
    if kind is SampleKind.TENSOR:
        return fields["x"]
    if kind is SampleKind.DICT:
        return {n: fields[n] for n in structure.names}
    return tuple(fields[n] for n in structure.names)


Signature: TypeAlias = tuple[tuple[str, str, tuple[int, ...]], ...]
"""A sample's ``(name, dtype, shape)`` per field, in sorted-name order."""


class LeafHasher:
    """Leaves of samples given as fields in sorted-name order: ``(name, dtype, shape)``
    and each field's bytes. Caches the header per signature, so a dataset of
    same-shaped samples builds its header once."""

    def __init__(self) -> None:
        self._base = hashlib.sha256(_LEAF_PREFIX)
        self._heads: dict[Signature, bytes] = {}

    def header(self, signature: Signature) -> bytes:
        """``u32be(len(h)) ‖ h`` of the fields ``signature``."""
        head = self._heads.get(signature)
        if head is None:
            h = canonical_json({n: {"dtype": d, "shape": list(s)} for n, d, s in signature})
            head = struct.pack(">I", len(h)) + h
            if len(self._heads) < 4096:
                self._heads[signature] = head
        return head

    def leaf(self, signature: Signature, buffers: Iterable[bytes | memoryview]) -> bytes:
        """The leaf of one sample: its fields' signature and bytes, both in name order."""
        h = self._base.copy()
        h.update(self.header(signature))
        for buf in buffers:
            h.update(buf)
        return h.digest()

    def raw_leaf(self, fields: Mapping[str, RawField]) -> bytes:
        """The leaf of a sample given as named :data:`RawField` values."""
        names = sorted(fields)
        signature = tuple((n, fields[n][0], fields[n][1]) for n in names)
        return self.leaf(signature, [fields[n][2] for n in names])


_HASHER = LeafHasher()


def fields_leaf(fields: Mapping[str, torch.Tensor]) -> bytes:
    """Return the dataset leaf of one sample given as named tensors."""
    return _HASHER.raw_leaf({n: _raw_field(t, n) for n, t in fields.items()})


def structured_leaf(sample: Sample) -> bytes:
    """Return the dataset leaf of ``sample`` in any structure (:func:`sample_fields`)."""
    return _HASHER.raw_leaf(raw_fields(sample)[1])


def sample_leaf(x: torch.Tensor, y: torch.Tensor) -> bytes:
    """Return the dataset leaf of one sample ``x`` with label ``y`` (fields ``x``, ``y``)."""
    return fields_leaf({"x": x, "y": y})


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class MerkleTree:
    """All levels of the Merkle tree over a list of 32-byte leaves."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            cur = self.levels[-1]
            nxt = [_node(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
            if len(cur) % 2:
                nxt.append(cur[-1])
            self.levels.append(nxt)

    @property
    def root(self) -> bytes:
        """The 32-byte root."""
        if self.size == 0:
            return hashlib.sha256(b"\x02").digest()
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """Return the sibling path of leaf ``index`` (bottom up; carried levels skipped)."""
        if not 0 <= index < self.size:
            raise MembershipError(f"index {index} outside dataset of size {self.size}")
        path: list[bytes] = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return path


def verify_membership(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Return whether ``leaf`` sits at ``index`` of a tree of ``size`` leaves with ``root``."""
    if not 0 <= index < size:
        return False
    node, width, used = leaf, size, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(proof):
                return False
            other = proof[used]
            used += 1
            node = _node(other, node) if index & 1 else _node(node, other)
        index //= 2
        width = (width + 1) // 2
    return used == len(proof) and node == root


def commit_dataset(x: torch.Tensor, y: torch.Tensor) -> tuple[DatasetCommitment, MerkleTree]:
    """Commit to samples ``x[i]`` with labels ``y[i]``; return the commitment and tree."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    tree = MerkleTree([sample_leaf(x[i], y[i]) for i in range(len(x))])
    return DatasetCommitment(root=tree.root, size=len(x)), tree
