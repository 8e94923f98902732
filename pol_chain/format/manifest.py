"""The proof directory layout and the manifest (``polchain-manifest-v1``).

Layout of a proof directory::

    spec.json                          canonical spec bytes
    bundle.tar                         the task's code bundle (its digest in the spec)
    checkpoints/000000.safetensors     checkpoint i (0 = W0)
    segments/000001.json               segment i (steps of checkpoint i-1 → i), i ≥ 1
    model.safetensors                  final model (params + buffers), after finalization
    manifest.json                      written last, atomically, after every checkpoint

Manifest (canonical JSON)::

    {"entries": [{"checkpoint": REF, "index", "leaf", "segment": null | REF, "step"}, ...],
     "final": null | {"index", "model": REF, "step"},
     "format", "k", "run_id", "spec_sha256", "total_steps"[, "spec_cid"]}
    REF = {"file", "sha256"[, "cid"]}

The *local* form (written by the recorder) has no CIDs; the *published* form (uploaded by
the publisher, its CID committed on-chain) carries a ``cid`` in every reference and the
``spec_cid``. CIDs are locators only: a verifier checks what it fetches against the
digests the leaves commit.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from pol_chain.format._json import (
    CanonicalRecord,
    JsonDict,
    JsonObject,
    canonical_json,
    parse_json,
    to_hex,
)
from pol_chain.format.errors import FormatError
from pol_chain.format.names import MANIFEST_FORMAT

__all__ = [
    "BUNDLE_FILE",
    "MANIFEST_FILE",
    "DATA_DIR",
    "MODEL_FILE",
    "PARENT_FILE",
    "RECORDER_LOCK_FILE",
    "SPEC_FILE",
    "ArtefactRef",
    "FinalModel",
    "Manifest",
    "ManifestEntry",
    "checkpoint_name",
    "segment_name",
]

MANIFEST_FILE = "manifest.json"
SPEC_FILE = "spec.json"
BUNDLE_FILE = "bundle.tar"
PARENT_FILE = "parent.safetensors"
"""Where a fine-tune's proof directory keeps its parent model's weights."""
DATA_DIR = "data"
"""The folder of a proof directory holding its committed dataset (index and shards)."""
MODEL_FILE = "model.safetensors"
RECORDER_LOCK_FILE = ".recorder.lock"
"""Locked by the one recorder writing a proof directory (the lock goes with its process)."""
MAX_ENTRIES = 1 << 22
MAX_MANIFEST_BYTES = 1 << 30
MAX_CID = 200


def checkpoint_name(index: int) -> str:
    """Relative path of checkpoint ``index``."""
    return f"checkpoints/{index:06d}.safetensors"


def segment_name(index: int) -> str:
    """Relative path of segment ``index``."""
    return f"segments/{index:06d}.json"


def _safe_relative(path: str) -> bool:
    norm = posixpath.normpath(path)
    return (
        bool(path)
        and not path.startswith("/")
        and "\\" not in path
        and norm == path
        and not norm.startswith("..")
    )


@dataclass(frozen=True)
class ArtefactRef:
    """Where an artefact lies in the proof directory (``file``), its SHA-256, and in the
    published form its CID."""

    file: str
    sha256: bytes
    cid: str | None = None

    def to_json(self) -> JsonDict:
        """The JSON form."""
        out: JsonDict = {"file": self.file, "sha256": to_hex(self.sha256)}
        if self.cid is not None:
            out["cid"] = self.cid
        return out

    @classmethod
    def from_json(cls, obj: JsonObject) -> ArtefactRef:
        """Parse a reference object."""
        obj.only(("file", "sha256"), ("cid",))
        file = obj.str("file", 255)
        if not _safe_relative(file):
            raise obj.fail("file", f"{file!r} is not a relative path inside the proof directory")
        return cls(file, obj.digest("sha256"), obj.opt_str("cid", MAX_CID))


_ENTRIES_OPEN = b'{"entries":['


@dataclass(frozen=True)
class ManifestEntry:
    """Checkpoint ``index`` (after step ``step``), the segment that led to it, its leaf."""

    index: int
    step: int
    checkpoint: ArtefactRef
    segment: ArtefactRef | None
    leaf: bytes

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "checkpoint": self.checkpoint.to_json(),
            "index": self.index,
            "leaf": to_hex(self.leaf),
            "segment": None if self.segment is None else self.segment.to_json(),
            "step": self.step,
        }

    @cached_property
    def canonical(self) -> bytes:
        """The canonical bytes of :meth:`to_json`, encoded once (an entry is immutable)."""
        return canonical_json(self.to_json())

    @property
    def segment_sha256(self) -> bytes:
        """The segment digest the leaf binds (zero for W0)."""
        return self.segment.sha256 if self.segment is not None else b"\x00" * 32

    def refs(self) -> list[ArtefactRef]:
        """Checkpoint and segment references."""
        return [self.checkpoint] + ([self.segment] if self.segment is not None else [])


@dataclass(frozen=True)
class FinalModel:
    """The final model file, and the checkpoint it comes from."""

    index: int
    step: int
    model: ArtefactRef

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"index": self.index, "model": self.model.to_json(), "step": self.step}


@dataclass(frozen=True)
class Manifest(CanonicalRecord):
    """Every checkpoint of a run with its digests and leaves (see module docstring)."""

    run_id: bytes
    spec_sha256: bytes
    k: int
    total_steps: int
    entries: tuple[ManifestEntry, ...] = ()
    final: FinalModel | None = None
    spec_cid: str | None = None

    @classmethod
    def new(cls, run_id: bytes, spec_sha256: bytes, k: int, total_steps: int) -> Manifest:
        """An empty manifest for a run."""
        return cls(bytes(run_id), bytes(spec_sha256), k, total_steps)

    # -- derived -----------------------------------------------------------------------
    @property
    def leaves(self) -> list[bytes]:
        """The leaves in index order."""
        return [e.leaf for e in self.entries]

    @property
    def segments(self) -> int:
        """Number of segments (checkpoints after W0)."""
        return max(0, len(self.entries) - 1)

    @property
    def is_published(self) -> bool:
        """Whether every reference carries a CID (the form committed on-chain)."""
        refs = [r for e in self.entries for r in e.refs()]
        if self.final is not None:
            refs.append(self.final.model)
        return self.spec_cid is not None and all(r.cid is not None for r in refs)

    def cids(self) -> dict[bytes, str]:
        """``{sha256: cid}`` of every reference that carries a CID."""
        refs = [r for e in self.entries for r in e.refs()]
        if self.final is not None:
            refs.append(self.final.model)
        return {r.sha256: r.cid for r in refs if r.cid is not None}

    # -- building ------------------------------------------------------------------------
    def with_entry(self, entry: ManifestEntry) -> Manifest:
        """A copy with ``entry`` appended (it must be the next index)."""
        if entry.index != len(self.entries):
            raise ValueError(f"entry {entry.index} appended after {len(self.entries)} entries")
        return replace(self, entries=(*self.entries, entry))

    def with_final(self, model: ArtefactRef) -> Manifest:
        """A copy finalized on its last checkpoint with ``model``."""
        last = self.entries[-1]
        return replace(self, final=FinalModel(last.index, last.step, model))

    def truncated(self, count: int, keep_final: bool) -> Manifest:
        """The first ``count`` entries (and the final model only when ``keep_final``)."""
        return replace(self, entries=self.entries[:count], final=self.final if keep_final else None)

    def published(self, cids: Mapping[bytes, str], spec_cid: str) -> Manifest:
        """The published form: every reference with its CID from ``cids`` (by SHA-256)."""

        def ref(r: ArtefactRef) -> ArtefactRef:
            return replace(r, cid=cids[r.sha256])

        entries = tuple(
            replace(
                e,
                checkpoint=ref(e.checkpoint),
                segment=None if e.segment is None else ref(e.segment),
            )
            for e in self.entries
        )
        final = None if self.final is None else replace(self.final, model=ref(self.final.model))
        return replace(self, entries=entries, final=final, spec_cid=spec_cid)

    # -- bytes ---------------------------------------------------------------------------
    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"entries": [e.to_json() for e in self.entries], **self.to_json_without_entries()}

    def to_json_without_entries(self) -> JsonDict:
        """The JSON form's every field but ``entries``."""
        out: JsonDict = {
            "final": None if self.final is None else self.final.to_json(),
            "format": MANIFEST_FORMAT,
            "k": self.k,
            "run_id": to_hex(self.run_id),
            "spec_sha256": to_hex(self.spec_sha256),
            "total_steps": self.total_steps,
        }
        if self.spec_cid is not None:
            out["spec_cid"] = self.spec_cid
        return out

    def to_bytes(self) -> bytes:
        """The canonical bytes of :meth:`to_json`, built from each entry's cached bytes:
        the recorder rewrites the manifest at every checkpoint, and encoding every entry
        again made that O(n) of Python work each time (27 ms at 5,000 checkpoints)."""
        rest = canonical_json({**self.to_json_without_entries(), "entries": []})
        # "entries" sorts first among the keys, so the list opens the object
        assert rest.startswith(_ENTRIES_OPEN)
        body = b",".join(e.canonical for e in self.entries)
        return _ENTRIES_OPEN + body + rest[len(_ENTRIES_OPEN) :]

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse manifest bytes (canonical JSON, bounded, data only)."""
        return cls.from_json(parse_json(data, "manifest", max_bytes=MAX_MANIFEST_BYTES))

    @classmethod
    def from_json(cls, value: Any) -> Manifest:
        """Parse and validate a manifest object (:class:`FormatError` naming the field)."""
        obj = JsonObject(value, "manifest")
        obj.format(MANIFEST_FORMAT)
        obj.only(
            ("entries", "final", "format", "k", "run_id", "spec_sha256", "total_steps"),
            ("spec_cid",),
        )
        items = obj.list("entries", MAX_ENTRIES)
        entries: list[ManifestEntry] = []
        for pos, item in enumerate(items):
            e = JsonObject(item, "manifest", f"entries[{pos}]")
            e.only(("checkpoint", "index", "leaf", "segment", "step"))
            index, step = e.int("index"), e.int("step")
            if index != pos:
                raise e.fail("index", f"is {index}, expected {pos}")
            if entries and step <= entries[-1].step:
                raise e.fail("step", f"{step} does not follow step {entries[-1].step}")
            segment = e.opt_obj("segment")
            if (pos == 0) != (segment is None):
                raise e.fail("segment", "checkpoint 0 has no segment; every later one has one")
            entries.append(
                ManifestEntry(
                    index,
                    step,
                    ArtefactRef.from_json(e.obj("checkpoint")),
                    None if segment is None else ArtefactRef.from_json(segment),
                    e.digest("leaf"),
                )
            )
        final = None
        fin = obj.opt_obj("final")
        if fin is not None:
            fin.only(("index", "model", "step"))
            index, step = fin.int("index"), fin.int("step")
            if not entries or index != entries[-1].index or step != entries[-1].step:
                raise fin.fail("index", "the final model must come from the last checkpoint")
            final = FinalModel(index, step, ArtefactRef.from_json(fin.obj("model")))
        return cls(
            run_id=obj.digest("run_id"),
            spec_sha256=obj.digest("spec_sha256"),
            k=obj.int("k", 1),
            total_steps=obj.int("total_steps"),
            entries=tuple(entries),
            final=final,
            spec_cid=obj.opt_str("spec_cid", MAX_CID),
        )


def require_published(manifest: Manifest, what: str = "published manifest") -> Manifest:
    """``manifest`` if it is in published form, else :class:`FormatError`."""
    if not manifest.is_published:
        raise FormatError(what, "a reference lacks its cid (not a published manifest)")
    return manifest
