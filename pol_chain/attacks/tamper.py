"""Tampering after commitment: edit a checkpoint or a segment's data order, then either
leave the manifest alone or re-derive every digest and leaf (a forger's best effort).

Either way the committed leaves on chain do not change, so the verifier's integrity
check fails: ``artefact_digest`` (the file no longer hashes to the manifest's digest) or
``leaf_mismatch`` / ``accumulator_mismatch`` (the re-derived leaves do not fold to the
on-chain accumulator). :func:`recommit_manifest` is also what :func:`rebind_proof` uses.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from pol_chain.attacks._proof import load_checkpoint, read_manifest
from pol_chain.commitment import leaf as make_leaf
from pol_chain.format import (
    MANIFEST_FILE,
    SPEC_FILE,
    ArtefactRef,
    FormatError,
    Segment,
    SegmentStep,
    checkpoint_name,
    segment_name,
)
from pol_chain.proof.canonical import atomic_write, sha256
from pol_chain.proof.engine import model_tensors
from pol_chain.proof.serialization import load_state_bytes, serialize_model, serialize_state

__all__ = ["recommit_manifest", "tamper_checkpoint", "tamper_data_order"]


def recommit_manifest(proof_dir: Path | str, run_id: bytes | None = None) -> list[bytes]:
    """Recompute every digest and leaf of ``proof_dir`` (for ``run_id``, default: the
    manifest's own), and the final model file from the last checkpoint when it parses.
    Returns the new leaves (what the forger would commit for a run of its own)."""
    root = Path(proof_dir)
    man = read_manifest(root)
    rid = man.run_id if run_id is None else bytes(run_id)

    def rehash(ref: ArtefactRef) -> ArtefactRef:
        return replace(ref, sha256=sha256((root / ref.file).read_bytes()))

    entries = []
    for entry in man.entries:
        ck = rehash(entry.checkpoint)
        seg = None if entry.segment is None else rehash(entry.segment)
        moved = replace(entry, checkpoint=ck, segment=seg)
        leaf = make_leaf(rid, entry.index, entry.step, ck.sha256, moved.segment_sha256)
        entries.append(replace(moved, leaf=leaf))
    final = man.final
    if final is not None:
        last = (root / entries[-1].checkpoint.file).read_bytes()
        try:
            tensors, _ = load_state_bytes(last, "last checkpoint")
        except FormatError:
            pass  # a planted payload: keep the old model entry
        else:
            body = serialize_model(model_tensors(tensors))
            (root / final.model.file).write_bytes(body)
            final = replace(final, model=replace(final.model, sha256=sha256(body)))
    spec_digest = sha256((root / SPEC_FILE).read_bytes())
    man = replace(man, run_id=rid, spec_sha256=spec_digest, entries=tuple(entries), final=final)
    atomic_write(root / MANIFEST_FILE, man.to_bytes())
    return man.leaves


def tamper_checkpoint(
    proof_dir: Path | str,
    index: int,
    *,
    scale: float = 0.05,
    seed: int = 0,
    recommit: bool = True,
) -> None:
    """Add a random parameter change of L2 norm ``scale`` to checkpoint ``index`` (e.g. a
    backdoor nudge), rewrite it, and (``recommit``) re-derive the manifest."""
    root = Path(proof_dir)
    tensors, meta = load_checkpoint(root, index)
    keys = [k for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point()]
    gen = torch.Generator().manual_seed(seed)
    noise = {k: torch.randn(tensors[k].shape, generator=gen) for k in keys}
    norm = float(torch.cat([v.reshape(-1) for v in noise.values()]).norm())
    for k in keys:
        tensors[k] = tensors[k] + noise[k] * (scale / norm)
    (root / checkpoint_name(index)).write_bytes(serialize_state(tensors, meta))
    if recommit:
        recommit_manifest(root)


def tamper_data_order(
    proof_dir: Path | str, index: int, *, swap: tuple[int, int] = (0, 1), recommit: bool = True
) -> None:
    """Swap the batches of two steps of segment ``index`` and (``recommit``) re-derive
    the manifest."""
    root = Path(proof_dir)
    path = root / segment_name(index)
    seg = Segment.from_bytes(path.read_bytes())
    a, b = swap
    steps = list(seg.steps)
    steps[a], steps[b] = (
        SegmentStep.of(steps[a].step, steps[b].batches, steps[a].seeds),
        SegmentStep.of(steps[b].step, steps[a].batches, steps[b].seeds),
    )
    path.write_bytes(replace(seg, steps=tuple(steps)).to_bytes())
    if recommit:
        recommit_manifest(root)
