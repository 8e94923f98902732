"""The one writer of proof directories: checkpoint and segment files, their leaves, the
final model file and the manifest, always in that order (the manifest last, atomically).

The recorder's background thread writes through it while training runs; the attack
adversaries write their forged proofs through it too, so a forgery is byte-for-byte in
the format a verifier expects and only its content lies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from pol_chain.commitment import ZERO32
from pol_chain.commitment import leaf as make_leaf
from pol_chain.format import (
    MANIFEST_FILE,
    MODEL_FILE,
    SPEC_FILE,
    ArtefactRef,
    CheckpointMeta,
    Manifest,
    ManifestEntry,
    Segment,
    SegmentStep,
    TaskSpec,
    checkpoint_name,
    model_meta,
    segment_name,
)
from pol_chain.proof.canonical import atomic_write, sha256
from pol_chain.proof.engine import model_tensors
from pol_chain.proof.serialization import write_state

__all__ = ["ProofWriter"]


class ProofWriter:
    """Writes the artefacts of run ``manifest.run_id`` into ``root``."""

    def __init__(self, root: Path | str, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def create(cls, root: Path | str, spec: TaskSpec, run_id: bytes) -> ProofWriter:
        """Start a proof directory: ``spec.json`` and an empty manifest (not written yet)."""
        root = Path(root)
        atomic_write(root / SPEC_FILE, spec.to_bytes())
        return cls(root, Manifest.new(run_id, spec.digest, spec.k, spec.total_steps))

    def checkpoint(
        self,
        index: int,
        tensors: Mapping[str, torch.Tensor],
        meta: CheckpointMeta,
        steps: Sequence[SegmentStep] | None,
    ) -> ManifestEntry:
        """Write checkpoint ``index`` (CPU tensors) and, for ``index ≥ 1``, the segment of
        ``steps`` that led to it; add its entry and leaf to the manifest."""
        ckpt_file = checkpoint_name(index)
        digest = write_state(self.root / ckpt_file, tensors, meta)
        segment = None
        if steps is not None:
            body = Segment.of(index, meta.step, steps).to_bytes()
            segment = ArtefactRef(segment_name(index), sha256(body))
            atomic_write(self.root / segment.file, body)
        seg_digest = segment.sha256 if segment is not None else ZERO32
        leaf = make_leaf(self.manifest.run_id, index, meta.step, digest, seg_digest)
        entry = ManifestEntry(index, meta.step, ArtefactRef(ckpt_file, digest), segment, leaf)
        self.manifest = self.manifest.with_entry(entry)
        return entry

    def model(self, state: Mapping[str, torch.Tensor]) -> ArtefactRef:
        """Write the final model file from a checkpoint's tensors and finalize the
        manifest on its last checkpoint."""
        digest = write_state(self.root / MODEL_FILE, model_tensors(state), model_meta())
        ref = ArtefactRef(MODEL_FILE, digest)
        self.manifest = self.manifest.with_final(ref)
        return ref

    def write_manifest(self) -> Path:
        """Write the manifest (atomically, after everything it lists)."""
        path = self.root / MANIFEST_FILE
        atomic_write(path, self.manifest.to_bytes())
        return path
