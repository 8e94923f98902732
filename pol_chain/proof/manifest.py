"""Artefact sources (by digest) and what a proof directory holds.

The proof directory layout and the manifest record are :mod:`pol_chain.format.manifest`;
this module reads them from disk for the engine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pol_chain.format import (
    BUNDLE_FILE,
    DATA_DIR,
    DATASET_INDEX_FILE,
    MANIFEST_FILE,
    PARENT_FILE,
    RECORDER_LOCK_FILE,
    SPEC_FILE,
    DatasetIndex,
    FormatError,
    Manifest,
    shard_file_name,
    to_hex,
)
from pol_chain.proof.errors import IntegrityError, MalformedArtefactError

__all__ = [
    "ArtefactSource",
    "DirectorySource",
    "ProofStatus",
    "check_final_model",
    "inspect_proof",
    "read_manifest",
]


@runtime_checkable
class ArtefactSource(Protocol):
    """Anything that yields an artefact's bytes by its SHA-256 (a directory, IPFS...)."""

    def get(self, sha256: bytes) -> bytes:
        """Return the bytes whose SHA-256 is ``sha256``.

        Raise ``KeyError`` when the source does not have them, and
        :class:`~pol_chain.proof.errors.IntegrityError` when what it has does not hash to
        ``sha256``; anything else (a store outage, local damage) propagates as is.
        """
        ...


def read_manifest(proof_dir: Path | str) -> Manifest:
    """Parse ``proof_dir/manifest.json`` (data only)."""
    path = Path(proof_dir) / MANIFEST_FILE
    if not path.exists():
        raise MalformedArtefactError("manifest", f"no {MANIFEST_FILE} in {proof_dir}")
    return Manifest.from_bytes(path.read_bytes())


class DirectorySource:
    """An :class:`ArtefactSource` over a proof directory (indexed through its manifest)."""

    def __init__(self, proof_dir: Path | str) -> None:
        self.root = Path(proof_dir)
        self._paths: dict[bytes, Path] = {}
        for name in (SPEC_FILE, BUNDLE_FILE, PARENT_FILE, f"{DATA_DIR}/{DATASET_INDEX_FILE}"):
            path = self.root / name
            if path.exists():
                self._paths[hashlib.sha256(path.read_bytes()).digest()] = path
        index_path = self.root / DATA_DIR / DATASET_INDEX_FILE
        if index_path.exists():  # the committed dataset's shards, by the digests it lists
            try:
                index = DatasetIndex.from_bytes(index_path.read_bytes())
            except FormatError:
                index = None  # the verifier reports the index when it reads it
            for number, shard in enumerate(index.shards if index else ()):
                self._paths[shard.sha256] = self.root / DATA_DIR / shard_file_name(number)
        manifest = self.manifest()
        # the spec the manifest names is the directory's spec.json, whatever it hashes to
        # (the verifier hashes it): an edited spec fails as one, not "not available"
        self._paths.setdefault(manifest.spec_sha256, self.root / SPEC_FILE)
        for entry in manifest.entries:
            for ref in entry.refs():
                self._paths[ref.sha256] = self.root / ref.file
        if manifest.final is not None:
            self._paths[manifest.final.model.sha256] = self.root / manifest.final.model.file

    def manifest(self) -> Manifest:
        """Return the directory's manifest."""
        return read_manifest(self.root)

    def get(self, sha256: bytes) -> bytes:
        """Return the artefact with digest ``sha256`` (bytes as stored; verify the hash);
        ``KeyError`` when the manifest does not list it or its file is absent."""
        path = self._paths.get(bytes(sha256))
        if path is None:
            raise KeyError(to_hex(sha256))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"artefact path {path} escapes the proof directory")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{to_hex(sha256)}: {path} is missing") from None


@dataclass(frozen=True)
class ProofStatus:
    """What a proof directory holds: the last complete checkpoint and leftovers."""

    complete_checkpoints: int
    last_index: int
    last_step: int
    total_steps: int
    finalized: bool
    leftovers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (for the CLI)."""
        return {
            "complete_checkpoints": self.complete_checkpoints,
            "finalized": self.finalized,
            "last_index": self.last_index,
            "last_step": self.last_step,
            "leftovers": list(self.leftovers),
            "total_steps": self.total_steps,
        }


def inspect_proof(proof_dir: Path | str) -> ProofStatus:
    """Report the last complete checkpoint of ``proof_dir`` and any half-written leftovers."""
    root = Path(proof_dir)
    manifest = read_manifest(root)
    listed = {ref.file for e in manifest.entries for ref in e.refs()}
    if manifest.final is not None:
        listed.add(manifest.final.model.file)
    leftovers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in (MANIFEST_FILE, SPEC_FILE, BUNDLE_FILE, PARENT_FILE, RECORDER_LOCK_FILE)
        and p.relative_to(root).parts[0] != DATA_DIR
        and str(p.relative_to(root)) not in listed
    )
    last = manifest.entries[-1] if manifest.entries else None
    return ProofStatus(
        complete_checkpoints=len(manifest.entries),
        last_index=last.index if last else -1,
        last_step=last.step if last else -1,
        total_steps=manifest.total_steps,
        finalized=manifest.final is not None,
        leftovers=tuple(leftovers),
    )


def check_final_model(proof_dir: Path | str) -> None:
    """Raise :class:`IntegrityError` unless ``proof_dir``'s final model is one a verifier
    can pass: written after at least one step, at the last checkpoint, and that
    checkpoint's model (the check a claim deserves before it goes on chain; a verifier
    would refute the claim, but only once someone challenges it)."""
    from pol_chain.proof.engine import model_tensors
    from pol_chain.proof.serialization import digest_model, load_checkpoint_bytes

    root = Path(proof_dir)
    manifest = read_manifest(root)
    final, entries = manifest.final, manifest.entries
    if final is None or not entries:
        raise IntegrityError(f"{root} has no final model")
    last = entries[-1]
    if final.step < 1:
        raise IntegrityError(f"{root}: the final model comes from no training step")
    if (final.index, final.step) != (last.index, last.step):
        raise IntegrityError(
            f"{root}: the final model is said to be checkpoint {final.index} at step "
            f"{final.step}, the last checkpoint is {last.index} at step {last.step}"
        )
    data = (root / last.checkpoint.file).read_bytes()
    if hashlib.sha256(data).digest() != last.checkpoint.sha256:
        raise IntegrityError(f"{root / last.checkpoint.file} does not hash to its digest")
    tensors, _ = load_checkpoint_bytes(data, f"checkpoint {last.index}")
    digest = digest_model(model_tensors(tensors))
    if digest != final.model.sha256:
        raise IntegrityError(
            f"{root}: the final model {to_hex(final.model.sha256)} is not the last "
            f"checkpoint's model {to_hex(digest)}"
        )
