"""A distributed run's registration, its artefacts into the store and its leaves onto the
chain, one leaf per commit (``docs/distributed.md``).

:meth:`RoundsPublisher.commit` stores every artefact of the manifest not stored yet,
uploads the manifest's published form (every reference with its CID) and commits the
manifest's last leaf as ``commitCheckpoints(runId, index, [leaf], manifestCid)``: the
chain's ``committedCount`` must equal that index, so leaves can neither skip nor repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.errors import PolchainError
from pol_chain.format import (
    BINDING_FILE,
    BUNDLE_FILE,
    MANIFEST_FILE,
    SPEC_FILE,
    RoundsManifest,
    RunBinding,
    TaskSpec,
    to_hex,
)
from pol_chain.proof.canonical import atomic_write

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.ledger.types import CommitResult, FinalizeResult
    from pol_chain.store import ArtefactStore

__all__ = ["RoundsPublisher", "RunOutOfStep", "register_run"]


class RunOutOfStep(PolchainError):
    """The chain holds another number of leaves than the coordinator is about to commit."""


def register_run(
    client: LedgerClient, store: ArtefactStore, spec: TaskSpec, out: Path
) -> tuple[RunBinding, TaskSpec]:
    """Store the code bundle and the spec, register a run for it (the run id fixes the
    run seed) and bind the new proof directory ``out`` to it; the binding and the spec
    as registered (naming its bundle's CID)."""
    from pol_chain.compose.registration import store_bundle

    if (out / MANIFEST_FILE).exists() or (out / BINDING_FILE).exists():
        raise PolchainError(f"{out} already holds a run", hint="pick another --out")
    spec, code = store_bundle(store, spec)
    spec_bytes = spec.to_bytes()
    spec_cid = store.put_bytes(spec_bytes, name=SPEC_FILE)
    registered = client.register_run(spec.digest, spec_cid)
    binding = RunBinding(
        chain_id=client.chain_id,
        ledger=client.address,
        run_id=to_hex(registered.run_id),
        trainer=registered.trainer,
        spec_sha256=to_hex(spec.digest),
        spec_cid=spec_cid,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / SPEC_FILE, spec_bytes)
    if code is not None:
        atomic_write(out / BUNDLE_FILE, code)
    binding.write(out)
    return binding, spec


class RoundsPublisher:
    """Stores and commits a distributed run's manifest, leaf by leaf."""

    def __init__(
        self, proof_dir: Path, store: ArtefactStore, client: LedgerClient, binding: RunBinding
    ) -> None:
        self.proof_dir, self.store, self.client, self.binding = proof_dir, store, client, binding
        self._cids: dict[bytes, str] = {}

    def write_local(self, manifest: RoundsManifest) -> None:
        """Write the local manifest (after every file it lists)."""
        atomic_write(self.proof_dir / MANIFEST_FILE, manifest.to_bytes())

    def _put_all(self, manifest: RoundsManifest) -> dict[bytes, str]:
        prefix = self.binding.run_id[:10]
        for ref in manifest.refs():
            if ref.sha256 not in self._cids:
                path = self.proof_dir / ref.file
                self._cids[ref.sha256] = self.store.put_file(path, name=f"{prefix}/{ref.file}")
        return self._cids

    def commit(self, manifest: RoundsManifest) -> CommitResult:
        """Store, publish and commit the manifest's last leaf; the commit's result (its
        block is the round's randomness for a submissions leaf)."""
        self.write_local(manifest)
        entry = manifest.entries[-1]
        run_id = self.binding.run_id_bytes
        committed = self.client.committed_count(run_id)
        if committed != entry.index:
            raise RunOutOfStep(
                f"run {self.binding.run_id} has {committed} leaves on chain, "
                f"the coordinator is at leaf {entry.index}"
            )
        published = manifest.published(self._put_all(manifest), self.binding.spec_cid)
        manifest_cid = self.store.put_bytes(published.to_bytes(), name="manifest")
        return self.client.commit_checkpoints(run_id, entry.index, [entry.leaf], manifest_cid)

    def cid(self, digest: bytes) -> str:
        """The CID an artefact was stored under."""
        return self._cids[digest]

    def finalize(self, manifest: RoundsManifest) -> FinalizeResult:
        """Claim the manifest's final model on chain."""
        final = manifest.final
        if final is None:
            raise PolchainError("the run has no final model to claim")
        self._put_all(manifest)
        self.write_local(manifest)
        model = final.model
        return self.client.finalize_run(
            self.binding.run_id_bytes, model.sha256, self._cids[model.sha256]
        )
