"""How a verifier runs a fetched proof's code, and the lineage checks of fine-tunes.

:func:`runner_for` gives the :class:`~pol_chain.proof.runner.TaskRunner` of a proof whose
spec names a code bundle: the bundle (and a parent model) fetched by digest from the
proof's own source, run in the sandbox. :func:`check_lineage` checks a fine-tune's
parent against the chain: a finalized claim on the parent's digest, by the run the spec
names, finalized before the child registered — and the child does not claim the
parent's own digest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.compose.fetch import ProofRefused
from pol_chain.format import DatasetIndex, FormatError, Reason, TaskSpec, to_hex

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerReader, RunHistory
    from pol_chain.proof.manifest import ArtefactSource
    from pol_chain.proof.runner import TaskRunner

__all__ = ["check_lineage", "fetch_parent", "runner_for"]


def _get(source: ArtefactSource, digest: bytes, what: str) -> bytes:
    import hashlib

    from pol_chain.proof.errors import ArtefactUnavailable, IntegrityError

    try:
        data = source.get(digest)
    except KeyError:
        raise ArtefactUnavailable(what, digest) from None
    except IntegrityError as exc:
        raise ProofRefused(Reason.ARTEFACT_DIGEST, f"{what}: {exc}") from None
    if hashlib.sha256(data).digest() != digest:
        raise ProofRefused(Reason.ARTEFACT_DIGEST, f"{what}: not the committed bytes")
    return data


def fetch_parent(spec: TaskSpec, source: ArtefactSource) -> bytes | None:
    """The parent model's bytes of a fine-tune (checked against its digest), else None."""
    if spec.init.model_digest is None:
        return None
    return _get(source, spec.init.model_digest, "parent model")


def _committed_index(spec: TaskSpec, source: ArtefactSource) -> DatasetIndex | None:
    """The dataset index a spec commits (fetched by digest, parsed, checked against the
    spec's root), or None when the task's code builds its data."""
    from pol_chain.proof.errors import MembershipError
    from pol_chain.proof.shards import check_index

    locator = spec.dataset.index
    if locator is None:
        return None
    data = _get(source, locator.sha256, "dataset index")
    try:
        index = DatasetIndex.from_bytes(data)
        check_index(index, spec.dataset)
    except FormatError as exc:
        raise ProofRefused(Reason.MALFORMED_ARTEFACT, f"dataset index: {exc}") from None
    except MembershipError as exc:
        raise ProofRefused(Reason.MEMBERSHIP, f"dataset index: {exc}") from None
    return index


def _shard_source(index: DatasetIndex, source: ArtefactSource) -> Callable[[int], bytes]:
    def shard(number: int) -> bytes:
        return _get(source, index.shards[number].sha256, f"dataset shard {number}")

    return shard


def runner_for(
    spec_bytes: bytes,
    run_seed: bytes,
    source: ArtefactSource,
    *,
    work_dir: Path,
    device: str = "cpu",
    hide: Sequence[Path] = (),
    deterministic: bool = True,
) -> TaskRunner | None:
    """The sandboxed runner of a v2 proof (None for a v1 spec or one that does not parse:
    the verifier then runs its legacy path or reports the spec)."""
    from pol_chain.sandbox import SandboxRunner

    try:
        spec = TaskSpec.from_bytes(spec_bytes)
    except FormatError:
        return None
    if spec.bundle is None:
        return None
    code = _get(source, spec.bundle.sha256, "code bundle")
    index = _committed_index(spec, source)
    try:
        return SandboxRunner(
            spec,
            run_seed,
            code,
            work_dir=work_dir,
            device=device,
            parent_model=fetch_parent(spec, source),
            hide=hide,
            deterministic=deterministic,
            index=index,
            shards=None if index is None else _shard_source(index, source),
        )
    except FormatError as exc:
        raise ProofRefused(Reason.MALFORMED_ARTEFACT, f"code bundle: {exc}") from None


def check_lineage(ledger: LedgerReader, spec_bytes: bytes, history: RunHistory) -> None:
    """Raise :class:`ProofRefused` (``lineage``) unless a fine-tune's parent is a claim
    finalized before the child registered, and the child does not claim the parent."""
    try:
        spec = TaskSpec.from_bytes(spec_bytes)
    except FormatError:
        return
    parent = spec.init.model_digest
    if parent is None:
        return
    if history.model_digest == parent:
        raise ProofRefused(Reason.LINEAGE, "the run claims its parent's own model digest")
    claims = ledger.claims_of(parent)
    wanted = [c for c in claims if spec.init.run_id in (None, c.run_id)]
    if not any(c.finalized_at <= history.registered_at for c in wanted):
        raise ProofRefused(
            Reason.LINEAGE,
            f"parent {to_hex(parent)} was not a claim finalized before this run registered",
        )
