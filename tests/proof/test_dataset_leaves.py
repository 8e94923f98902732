"""The generalized sample leaf: named fields, the mapping of structures to names, and
today's (x, y) leaves and digits roots unchanged."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch

from pol_chain.format import SampleKind
from pol_chain.proof import commit_dataset
from pol_chain.proof.dataset import fields_leaf, sample_fields, sample_leaf, structured_leaf
from pol_chain.tasks.digits import load_split

DIGITS_ROOT = "0368461c3865dc8f37b487ed0851f023cdb5bf9b63432d2b8eff6574dc5af524"
"""The digits training split's root under ``polchain-sample-v1`` before the leaf was
generalized (commit 7a638f4): it must never change."""


def _reference_leaf(fields: dict[str, torch.Tensor]) -> bytes:
    """The leaf rule written out from docs/proof.md, independently of the engine."""
    names = sorted(fields)
    head = json.dumps(
        {
            n: {"dtype": str(fields[n].dtype).split(".")[1], "shape": list(fields[n].shape)}
            for n in names
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    body = b"".join(
        fields[n].contiguous().view(-1).view(torch.uint8).numpy().tobytes() for n in names
    )
    return hashlib.sha256(
        b"\x00polchain-sample-v1" + struct.pack(">I", len(head)) + head + body
    ).digest()


# --------------------------------------------------------------------------- leaves
def test_digits_roots_do_not_change_and_pairs_keep_todays_leaves() -> None:
    tx, ty, _, _ = load_split()
    commitment, _ = commit_dataset(tx, ty)
    assert commitment.root.hex() == DIGITS_ROOT and commitment.size == 1438
    for i in (0, 700, 1437):
        leaf = sample_leaf(tx[i], ty[i])
        assert leaf == _reference_leaf({"x": tx[i], "y": ty[i]})
        assert leaf == structured_leaf((tx[i], ty[i])) == structured_leaf([tx[i], ty[i]])
        assert (
            leaf
            == fields_leaf({"y": ty[i], "x": tx[i]})
            == structured_leaf({"x": tx[i], "y": ty[i]})
        )


def test_structures_map_to_names_and_leaves_follow_the_rule() -> None:
    ids, mask = torch.arange(7), torch.ones(7, dtype=torch.bool)
    kind, fields = sample_fields({"mask": mask, "input_ids": ids})
    assert kind is SampleKind.DICT and list(fields) == ["input_ids", "mask"]
    assert structured_leaf({"mask": mask, "input_ids": ids}) == _reference_leaf(fields)
    kind, fields = sample_fields(torch.zeros(3))
    assert kind is SampleKind.TENSOR and list(fields) == ["x"]
    kind, fields = sample_fields((ids, mask, torch.tensor(1.5)))
    assert kind is SampleKind.TUPLE and list(fields) == ["0", "1", "2"]
    assert structured_leaf((ids, mask, torch.tensor(1.5))) == _reference_leaf(fields)
    # Python numbers become 0-d tensors: int64, float64, bool
    _, fields = sample_fields((torch.zeros(2), 3))
    assert fields["y"].dtype == torch.int64 and fields["y"].shape == ()
    assert sample_fields(2.5)[1]["x"].dtype == torch.float64
    assert sample_fields({"flag": True})[1]["flag"].dtype == torch.bool
    assert structured_leaf((torch.zeros(2), 3)) == sample_leaf(torch.zeros(2), torch.tensor(3))
    # the leaf binds names, dtypes, shapes and bytes
    base = structured_leaf({"a": ids})
    assert base != structured_leaf({"b": ids})
    assert base != structured_leaf({"a": ids.int()})
    assert base != structured_leaf({"a": ids.reshape(7, 1)})
    assert structured_leaf({"a": ids[:3], "b": ids[3:]}) != structured_leaf(
        {"a": ids[:4], "b": ids[4:]}
    )
    for bad in [
        "text",
        [torch.zeros(1), [torch.zeros(1)]],
        torch.zeros(2, dtype=torch.complex64),
        {},
    ]:
        with pytest.raises(TypeError):
            sample_fields(bad)
