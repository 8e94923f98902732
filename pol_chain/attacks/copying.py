"""Proof copying and front-running (docs/protocol.md §6.8).

Artefacts are public, so a thief can take an honest proof and re-bind it to a run of its
own: same spec, checkpoints, segments and model, with the manifest's run id and every
leaf recomputed for the thief's run id — an internally consistent proof that the thief
can commit. :func:`rebind_proof` does it for a finished proof; :class:`LiveCopier` does it
checkpoint by checkpoint while the honest trainer records (hand it to the honest
recorder's listeners to simulate a thief watching the pins), committing each leaf as it
comes and finalizing the moment the final model appears — before the honest trainer's
own ``finalizeRun`` (front-running). Verification fails because the thief's run seed
differs: W0 is not the seeded init of the thief's run and the batches are not its order.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pol_chain.attacks._proof import AttackCost, ForgedProof
from pol_chain.attacks.tamper import recommit_manifest
from pol_chain.commitment import leaf as make_leaf
from pol_chain.format import (
    MANIFEST_FILE,
    SPEC_FILE,
    ArtefactRef,
    Manifest,
    ManifestEntry,
    TaskSpec,
)
from pol_chain.proof.canonical import atomic_write
from pol_chain.proof.manifest import read_manifest
from pol_chain.proof.recorder import CheckpointRecord, FinalRecord

__all__ = ["LiveCopier", "rebind_proof"]


def rebind_proof(src: Path | str, out: Path | str, run_id: bytes) -> ForgedProof:
    """Copy the proof directory ``src`` to ``out`` and re-bind it to ``run_id``.

    Every file is copied byte for byte; the manifest's run id and every leaf are
    recomputed for ``run_id`` (checkpoint, segment and model digests are unchanged, so
    the model digest is the victim's). Returns the copy with the leaves to commit.
    """
    start = time.perf_counter()
    dst = Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(Path(src), dst)
    leaves = recommit_manifest(dst, run_id)
    manifest = read_manifest(dst)
    digest = manifest.final.model.sha256 if manifest.final else None
    spec = TaskSpec.from_bytes((dst / SPEC_FILE).read_bytes())
    cost = AttackCost(0, time.perf_counter() - start, {"copied_from": str(src)})
    return ForgedProof(dst, bytes(run_id), leaves, digest, spec, cost)


class LiveCopier:
    """A recorder listener that copies an honest run into ``out`` under ``run_id`` live.

    ``commit(first_index, leaves)`` is called for every copied checkpoint (e.g. the
    thief's ``LedgerClient.commit_checkpoints``), ``finalize(model_digest)`` when the final
    model appears. Both run on the recorder's writer thread, before the honest trainer's
    own listeners that come after this one.
    """

    def __init__(
        self,
        out: Path | str,
        run_id: bytes,
        *,
        commit: Callable[[int, list[bytes]], object] | None = None,
        finalize: Callable[[bytes], object] | None = None,
    ) -> None:
        self.out = Path(out)
        self.run_id = bytes(run_id)
        self.commit = commit
        self.finalize = finalize
        self.manifest: Manifest | None = None
        self.leaves: list[bytes] = []
        self.model_digest: bytes | None = None
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def __call__(self, record: CheckpointRecord | FinalRecord) -> None:
        """Handle one pinned artefact of the honest run."""
        try:
            with self._lock:
                if isinstance(record, CheckpointRecord):
                    self._checkpoint(record)
                else:
                    self._final(record)
        except Exception as exc:  # noqa: BLE001 - a thief's failure must not stop training
            self.errors.append(exc)

    def _checkpoint(self, record: CheckpointRecord) -> None:
        src = record.manifest_path.parent
        if self.manifest is None:
            self.out.mkdir(parents=True, exist_ok=True)
            honest = Manifest.from_bytes(record.manifest_path.read_bytes())
            shutil.copyfile(src / SPEC_FILE, self.out / SPEC_FILE)
            self.manifest = Manifest.new(
                self.run_id, honest.spec_sha256, honest.k, honest.total_steps
            )
        ck_rel = self._copy(record.checkpoint_path, src)
        seg_ref = None
        if record.segment_path is not None:
            seg_ref = ArtefactRef(self._copy(record.segment_path, src), record.segment_sha256)
        value = make_leaf(
            self.run_id, record.index, record.step, record.checkpoint_sha256, record.segment_sha256
        )
        entry = ManifestEntry(
            record.index,
            record.step,
            ArtefactRef(ck_rel, record.checkpoint_sha256),
            seg_ref,
            value,
        )
        self.manifest = self.manifest.with_entry(entry)
        self.leaves.append(value)
        atomic_write(self.out / MANIFEST_FILE, self.manifest.to_bytes())
        if self.commit is not None:
            self.commit(record.index, [value])

    def _copy(self, path: Path, src: Path) -> str:
        rel = path.relative_to(src)
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.out / rel)
        return rel.as_posix()

    def _final(self, record: FinalRecord) -> None:
        if self.manifest is None:
            raise RuntimeError("final model before any checkpoint")
        name = record.model_path.name
        shutil.copyfile(record.model_path, self.out / name)
        self.manifest = self.manifest.with_final(ArtefactRef(name, record.model_sha256))
        atomic_write(self.out / MANIFEST_FILE, self.manifest.to_bytes())
        self.model_digest = record.model_sha256
        if self.finalize is not None:
            self.finalize(record.model_sha256)

    def result(self) -> ForgedProof:
        """The copied proof (after the honest run finished)."""
        if self.errors:
            raise RuntimeError(f"live copy failed: {self.errors[0]!r}") from self.errors[0]
        spec = TaskSpec.from_bytes((self.out / SPEC_FILE).read_bytes())
        return ForgedProof(
            self.out, self.run_id, list(self.leaves), self.model_digest, spec, AttackCost()
        )
