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
    "Sample",
    "commit_dataset",
    "fields_leaf",
    "rebuild_sample",
    "sample_fields",
    "sample_leaf",
    "structure_of",
    "structured_leaf",
    "verify_membership",
]

Sample: TypeAlias = Any
"""A sample as a dataset returns it: a tensor, a tuple/list of tensors, a mapping of
names to tensors; Python ``bool``/``int``/``float`` and numpy arrays become tensors."""

LEAF_RULE = SAMPLE_LEAF_RULE
_LEAF_PREFIX = b"\x00" + LEAF_RULE.encode()
_NODE_PREFIX = b"\x01"


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, bool):
        tensor = torch.tensor(value, dtype=torch.bool)
    elif isinstance(value, int):
        tensor = torch.tensor(value, dtype=torch.int64)
    elif isinstance(value, float):
        tensor = torch.tensor(value, dtype=torch.float64)
    elif isinstance(value, np.ndarray | np.generic):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        kind = type(value).__name__
        raise TypeError(f"{where}: a sample field must be a tensor or a number, got {kind}")
    if str(tensor.dtype).removeprefix("torch.") not in FIELD_DTYPES:
        raise TypeError(f"{where}: unsupported dtype {tensor.dtype}")
    return tensor


def sample_fields(sample: Sample) -> tuple[SampleKind, dict[str, torch.Tensor]]:
    """The kind of ``sample`` and its fields by name (the leaf's and the shard's names):
    a 2-tuple/list is a ``pair`` (``x``, ``y``); a tuple/list of n ≠ 2 a ``tuple``
    (``"0"``, ``"1"``, …); a mapping a ``dict`` (its names); anything else one ``tensor``
    (``x``). Raises ``TypeError`` for what cannot be a sample."""
    if isinstance(sample, Mapping):
        kind = SampleKind.DICT
        try:
            names = field_names(kind, list(sample))
        except ValueError as exc:
            raise TypeError(f"sample: {exc}") from None
        return kind, {n: _as_tensor(sample[n], f"field {n!r}") for n in names}
    if isinstance(sample, tuple | list):
        kind = SampleKind.PAIR if len(sample) == 2 else SampleKind.TUPLE
        try:
            names = field_names(kind, len(sample))
        except ValueError as exc:
            raise TypeError(f"sample: {exc}") from None
        return kind, {n: _as_tensor(v, f"field {n!r}") for n, v in zip(names, sample, strict=True)}
    return SampleKind.TENSOR, {"x": _as_tensor(sample, "sample")}


def structure_of(kind: SampleKind, fields: Mapping[str, torch.Tensor]) -> SampleStructure:
    """The :class:`SampleStructure` of a sample of ``kind`` with ``fields``."""
    dtypes = {n: str(t.dtype).removeprefix("torch.") for n, t in fields.items()}
    return SampleStructure.of(kind, dtypes)


def rebuild_sample(structure: SampleStructure, fields: Mapping[str, torch.Tensor]) -> Sample:
    """The sample of ``structure`` from its ``fields`` (inverse of :func:`sample_fields`;
    lists come back as tuples, numbers as 0-d tensors)."""
    kind = structure.kind
    if kind is SampleKind.TENSOR:
        return fields["x"]
    if kind is SampleKind.DICT:
        return {n: fields[n] for n in structure.names}
    return tuple(fields[n] for n in structure.names)


class LeafHasher:
    """Leaves of samples given as fields in sorted-name order: ``(name, dtype, shape)``
    and each field's bytes. Caches the header per field signature, so a dataset of
    same-shaped samples builds its header once."""

    def __init__(self) -> None:
        self._base = hashlib.sha256(_LEAF_PREFIX)
        self._heads: dict[tuple[Any, ...], bytes] = {}

    def header(self, signature: tuple[tuple[str, str, tuple[int, ...]], ...]) -> bytes:
        """``u32be(len(h)) ‖ h`` of fields ``signature`` (sorted by name)."""
        head = self._heads.get(signature)
        if head is None:
            h = canonical_json({n: {"dtype": d, "shape": list(s)} for n, d, s in signature})
            head = struct.pack(">I", len(h)) + h
            if len(self._heads) < 4096:
                self._heads[signature] = head
        return head

    def leaf(
        self,
        signature: tuple[tuple[str, str, tuple[int, ...]], ...],
        buffers: Iterable[bytes | memoryview],
    ) -> bytes:
        """The leaf of one sample: its fields' signature and bytes, both in name order."""
        h = self._base.copy()
        h.update(self.header(signature))
        for buf in buffers:
            h.update(buf)
        return h.digest()

    def tensors_leaf(self, fields: Mapping[str, torch.Tensor]) -> bytes:
        """The leaf of a sample given as named tensors."""
        names = sorted(fields)
        signature = tuple(
            (n, str(fields[n].dtype).removeprefix("torch."), tuple(fields[n].shape)) for n in names
        )
        return self.leaf(signature, (_raw_view(fields[n]) for n in names))


def _raw_view(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if not flat.numel():
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())  # type: ignore[arg-type]


_HASHER = LeafHasher()


def fields_leaf(fields: Mapping[str, torch.Tensor]) -> bytes:
    """Return the dataset leaf of one sample given as named tensors."""
    return _HASHER.tensors_leaf(fields)


def structured_leaf(sample: Sample) -> bytes:
    """Return the dataset leaf of ``sample`` in any structure (:func:`sample_fields`)."""
    return fields_leaf(sample_fields(sample)[1])


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
