"""Dataset commitment: per-sample leaves and a Merkle root with membership proofs.

Leaf rule (``pol_chain.format.SAMPLE_LEAF_RULE``)::

    leaf = SHA-256(0x00 ‖ LEAF_RULE ‖ u32be(len(h)) ‖ h ‖ x_bytes ‖ y_bytes)
    h    = canonical JSON {"x": {"dtype", "shape"}, "y": {"dtype", "shape"}}

so the label, the dtype, the shape and *every* byte of the sample are bound. Internal
nodes are ``SHA-256(0x01 ‖ left ‖ right)``. A level with an odd number of nodes carries
its last node up unchanged (no duplication, so no second-preimage by repetition). The
root of an empty dataset is SHA-256(0x02). The size N is committed beside the root.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import torch

from pol_chain.format import SAMPLE_LEAF_RULE, DatasetCommitment, canonical_json
from pol_chain.proof.errors import MembershipError

__all__ = [
    "LEAF_RULE",
    "DatasetCommitment",
    "MerkleTree",
    "commit_dataset",
    "sample_leaf",
    "verify_membership",
]

LEAF_RULE = SAMPLE_LEAF_RULE
_LEAF_PREFIX = b"\x00" + LEAF_RULE.encode()
_NODE_PREFIX = b"\x01"


def _describe(t: torch.Tensor) -> dict[str, object]:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _raw(t: torch.Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def sample_leaf(x: torch.Tensor, y: torch.Tensor) -> bytes:
    """Return the dataset leaf of one sample ``x`` with label ``y``."""
    head = canonical_json({"x": _describe(x), "y": _describe(y)})
    return hashlib.sha256(
        _LEAF_PREFIX + struct.pack(">I", len(head)) + head + _raw(x) + _raw(y)
    ).digest()


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
