"""Proof directory layout, the manifest, and artefact sources (by digest).

Layout of a proof directory::

    spec.json                          canonical spec bytes
    checkpoints/000000.safetensors     checkpoint i (0 = W0)
    segments/000001.json               segment i (steps of checkpoint i-1 → i), i ≥ 1
    model.safetensors                  final model (params + buffers), after finalization
    manifest.json                      written last, atomically, after every checkpoint

Manifest (canonical JSON, ``format = "polchain-manifest-v1"``)::

    {"entries": [{"checkpoint": {"file", "sha256"}, "index", "leaf",
                  "segment": null | {"file", "sha256"}, "step"}, ...],
     "final": null | {"index", "model": {"file", "sha256"}, "step"},
     "format", "k", "run_id", "spec_sha256", "total_steps"}

Other layers may add locator fields (``cid``) to the ``checkpoint``/``segment``/``model``
objects; the engine keeps unknown fields and never trusts them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pol_chain.proof.canonical import (
    atomic_write,
    canonical_json,
    from_hex,
    parse_canonical_json,
    to_hex,
)
from pol_chain.proof.errors import IntegrityError, MalformedArtefactError

__all__ = [
    "MANIFEST_FORMAT",
    "ArtefactSource",
    "DirectorySource",
    "Manifest",
    "ProofStatus",
    "checkpoint_name",
    "inspect_proof",
    "segment_name",
]

MANIFEST_FORMAT = "polchain-manifest-v1"


def checkpoint_name(index: int) -> str:
    """Relative path of checkpoint ``index``."""
    return f"checkpoints/{index:06d}.safetensors"


def segment_name(index: int) -> str:
    """Relative path of segment ``index``."""
    return f"segments/{index:06d}.json"


@runtime_checkable
class ArtefactSource(Protocol):
    """Anything that yields an artefact's bytes by its SHA-256 (a directory, IPFS...)."""

    def get(self, sha256: bytes) -> bytes:
        """Return the bytes whose SHA-256 is ``sha256``; raise ``KeyError`` if unknown."""
        ...


@dataclass
class Manifest:
    """The parsed manifest (a thin wrapper over its JSON object)."""

    data: dict[str, Any]

    @classmethod
    def new(cls, run_id: bytes, spec_sha256: bytes, k: int, total_steps: int) -> Manifest:
        """Return an empty manifest for a run."""
        return cls(
            {
                "entries": [],
                "final": None,
                "format": MANIFEST_FORMAT,
                "k": k,
                "run_id": to_hex(run_id),
                "spec_sha256": to_hex(spec_sha256),
                "total_steps": total_steps,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse manifest bytes (canonical JSON, data only)."""
        value = parse_canonical_json(data, "manifest")
        if not isinstance(value, dict) or value.get("format") != MANIFEST_FORMAT:
            raise MalformedArtefactError("manifest", "not a polchain-manifest-v1 object")
        entries = value.get("entries")
        if not isinstance(entries, list):
            raise MalformedArtefactError("manifest", "entries is not a list")
        for pos, entry in enumerate(entries):
            try:
                ok = entry["index"] == pos and isinstance(entry["step"], int)
                from_hex(entry["checkpoint"]["sha256"])
                from_hex(entry["leaf"])
                if entry["segment"] is not None:
                    from_hex(entry["segment"]["sha256"])
            except (KeyError, TypeError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise MalformedArtefactError("manifest", f"entry {pos} is ill-formed")
        return cls(value)

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        return canonical_json(self.data)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The checkpoint entries, index order."""
        return self.data["entries"]  # type: ignore[no-any-return]

    @property
    def run_id(self) -> bytes:
        """The run id."""
        return from_hex(self.data["run_id"])

    @property
    def spec_sha256(self) -> bytes:
        """The spec digest."""
        return from_hex(self.data["spec_sha256"])

    @property
    def leaves(self) -> list[bytes]:
        """The leaves in index order."""
        return [from_hex(e["leaf"]) for e in self.entries]

    @property
    def final(self) -> dict[str, Any] | None:
        """The final-model entry, if finalized."""
        return self.data.get("final")  # type: ignore[no-any-return]

    def write(self, proof_dir: Path) -> None:
        """Write atomically to ``proof_dir/manifest.json``."""
        atomic_write(proof_dir / "manifest.json", self.to_bytes())


class DirectorySource:
    """An :class:`ArtefactSource` over a proof directory (indexed through its manifest)."""

    def __init__(self, proof_dir: Path | str) -> None:
        self.root = Path(proof_dir)
        self._paths: dict[bytes, Path] = {}
        spec = self.root / "spec.json"
        if spec.exists():
            self._paths[hashlib.sha256(spec.read_bytes()).digest()] = spec
        manifest = self.manifest()
        for entry in manifest.entries:
            self._paths[from_hex(entry["checkpoint"]["sha256"])] = (
                self.root / entry["checkpoint"]["file"]
            )
            if entry["segment"] is not None:
                self._paths[from_hex(entry["segment"]["sha256"])] = (
                    self.root / entry["segment"]["file"]
                )
        if manifest.final is not None:
            model = manifest.final["model"]
            self._paths[from_hex(model["sha256"])] = self.root / model["file"]

    def manifest(self) -> Manifest:
        """Return the directory's manifest."""
        path = self.root / "manifest.json"
        if not path.exists():
            raise MalformedArtefactError("manifest", f"no manifest.json in {self.root}")
        return Manifest.from_bytes(path.read_bytes())

    def get(self, sha256: bytes) -> bytes:
        """Return the artefact with digest ``sha256`` (bytes as stored; verify the hash)."""
        path = self._paths.get(bytes(sha256))
        if path is None:
            raise KeyError(to_hex(sha256))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"artefact path {path} escapes the proof directory")
        return path.read_bytes()


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
    manifest = Manifest.from_bytes((root / "manifest.json").read_bytes())
    listed = {e["checkpoint"]["file"] for e in manifest.entries}
    listed |= {e["segment"]["file"] for e in manifest.entries if e["segment"]}
    if manifest.final:
        listed.add(manifest.final["model"]["file"])
    leftovers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in ("manifest.json", "spec.json")
        and str(p.relative_to(root)) not in listed
    )
    last = manifest.entries[-1] if manifest.entries else {"index": -1, "step": -1}
    return ProofStatus(
        complete_checkpoints=len(manifest.entries),
        last_index=int(last["index"]),
        last_step=int(last["step"]),
        total_steps=int(manifest.data.get("total_steps", -1)),
        finalized=manifest.final is not None,
        leftovers=tuple(leftovers),
    )
