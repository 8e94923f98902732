"""Malicious artefact: a proof file replaced by a pickle whose ``__reduce__`` runs code.

Unpickling :class:`PickleBomb` calls ``open(sentinel, "w")``, creating the sentinel file;
the bomb is inert unless something unpickles it (``pickle.loads``, ``torch.load`` with
``weights_only=False`` as the reference implementation does). A verifier passes this test
when the sentinel never appears.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from pol_chain.attacks.tamper import recommit_manifest

__all__ = ["PickleBomb", "plant_pickle_payload"]


class PickleBomb:
    """An object whose unpickling creates ``sentinel`` (stands in for arbitrary code)."""

    def __init__(self, sentinel: Path | str) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.sentinel, "w"))


def plant_pickle_payload(
    proof_dir: Path | str, target: str, sentinel: Path | str, *, recommit: bool = True
) -> bytes:
    """Overwrite ``proof_dir/target`` (e.g. ``checkpoints/000003.safetensors``) with a
    pickled :class:`PickleBomb` and (``recommit``) re-derive the manifest so its digests
    match, as if the payload had been committed. Returns the payload bytes."""
    data = pickle.dumps(PickleBomb(sentinel))
    (Path(proof_dir) / target).write_bytes(data)
    if recommit:
        recommit_manifest(proof_dir)
    return data
