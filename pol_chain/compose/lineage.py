"""Fine-tunes and their parents (docs/protocol.md §2, lineage).

A child run names its parent in its spec's init rule: the parent's model digest, the run
that claims it and where its bytes lie. :func:`resolve_parent` turns what a user types
(``--from``: a digest, a weights file, a proof directory or a run id) into that parent,
refusing anything that is not a claim finalized on the ledger; :func:`parent_bytes`
gives a child's parent model back from the store; :func:`lineage` walks a model's
parents and children through the specs of the runs that claim them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.errors import PolchainError
from pol_chain.format import MODEL_FILE, PARENT_FILE, FormatError, InitRule, TaskSpec, to_hex

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerReader
    from pol_chain.store import ArtefactStore

__all__ = [
    "Lineage",
    "LineageLink",
    "ParentModel",
    "ParentUnavailable",
    "lineage",
    "parent_bytes",
    "resolve_parent",
]

MAX_DEPTH = 32
"""Most ancestors :func:`lineage` walks up (a cycle cannot form, but a chain can be long)."""


class ParentUnavailable(PolchainError):
    """The parent of a fine-tune is not a finalized claim, or its bytes cannot be had."""


@dataclass(frozen=True)
class ParentModel:
    """A finalized model a child run starts from."""

    digest: bytes
    run_id: bytes
    cid: str | None
    data: bytes

    def init_rule(self) -> InitRule:
        """The child's spec init rule naming this parent."""
        return InitRule.parent(self.digest, self.run_id, self.cid)


def _model_file(ref: str) -> Path | None:
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    return None


def resolve_parent(ledger: LedgerReader, store: ArtefactStore, ref: str) -> ParentModel:
    """The parent named by ``ref`` (a model digest, weights file, proof directory or run
    id): the claim that owns it on the ledger (the earliest not refuted) and its bytes
    (from the file given, else the store by the claim's model CID, checked)."""
    from pol_chain.compose.targets import resolve_model
    from pol_chain.ledger import run_history
    from pol_chain.ledger.types import RunStatus
    from pol_chain.store import ContentMismatch

    digest = resolve_model(ledger, ref)
    claims = ledger.claims_of(digest)
    if not claims:
        raise ParentUnavailable(
            f"model {to_hex(digest)} is not a finalized claim on ledger {ledger.address}",
            hint="finalize the parent run first (`polchain finalize DIR`); a fine-tune "
            "starts only from a claimed model",
        )
    owner = next((c for c in claims if c.status is not RunStatus.REFUTED), None)
    if owner is None:
        raise ParentUnavailable(f"every claim on model {to_hex(digest)} is refuted")
    history = run_history(ledger, owner.run_id)
    local = _model_file(ref)
    if local is not None:
        data = local.read_bytes()
    elif history.model_cid is None:
        raise ParentUnavailable(f"run {to_hex(owner.run_id)} names no location of its model")
    else:
        try:
            data = store.get_bytes(history.model_cid, expect_sha256=digest)
        except (KeyError, ContentMismatch) as exc:
            raise ParentUnavailable(
                f"the parent model {history.model_cid} is not in the store: {exc}",
                hint="give the parent's weights file with --from FILE",
            ) from None
    import hashlib

    if hashlib.sha256(data).digest() != digest:
        raise ParentUnavailable(f"{ref} is not the bytes of model {to_hex(digest)}")
    return ParentModel(digest, owner.run_id, history.model_cid, data)


def parent_bytes(
    store: ArtefactStore, spec: TaskSpec, proof_dir: Path | None = None
) -> bytes | None:
    """The parent model of a fine-tune's ``spec`` (None for a seeded run): the copy in
    ``proof_dir`` when it is the committed one, else the store by the spec's CID."""
    import hashlib

    from pol_chain.store import ContentMismatch

    digest = spec.init.model_digest
    if digest is None:
        return None
    if proof_dir is not None:
        local = proof_dir / PARENT_FILE
        if local.is_file() and hashlib.sha256(local.read_bytes()).digest() == digest:
            return local.read_bytes()
    if not spec.init.model_cid:
        raise ParentUnavailable(f"the spec names no location of parent {to_hex(digest)}")
    try:
        return store.get_bytes(spec.init.model_cid, expect_sha256=digest)
    except (KeyError, ContentMismatch) as exc:
        raise ParentUnavailable(f"parent model {spec.init.model_cid}: {exc}") from None


@dataclass(frozen=True)
class LineageLink:
    """One model in a lineage: its digest and the run whose spec links it."""

    model_digest: bytes
    run_id: bytes

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"model_digest": to_hex(self.model_digest), "run_id": to_hex(self.run_id)}


@dataclass
class Lineage:
    """A model's ancestors (nearest first) and its direct children."""

    parents: list[LineageLink] = field(default_factory=list)
    children: list[LineageLink] = field(default_factory=list)
    unreadable_specs: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "children": [c.to_dict() for c in self.children],
            "parents": [p.to_dict() for p in self.parents],
            "unreadable_specs": self.unreadable_specs,
        }


def _spec(store: ArtefactStore, cid: str, digest: bytes) -> TaskSpec | None:
    from pol_chain.store import StoreError

    # A spec CID on chain is whatever its registrant wrote: unparsable, absent or
    # mismatched specs make the lineage incomplete, never the history command fail.
    try:
        return TaskSpec.from_bytes(store.get_bytes(cid, expect_sha256=digest))
    except (KeyError, StoreError, FormatError):
        return None


def lineage(ledger: LedgerReader, store: ArtefactStore, model_digest: bytes) -> Lineage:
    """Walk ``model_digest``'s parents (through the specs of the runs that claim each
    model) and find its children (runs whose spec names it as parent). Specs the store
    lacks are counted in ``unreadable_specs``: the lineage is then incomplete."""
    from pol_chain.ledger import model_history

    out = Lineage()
    seen = {model_digest}
    digest = model_digest
    for _ in range(MAX_DEPTH):
        claims = model_history(ledger, digest).claims
        parent: LineageLink | None = None
        for claim in claims:
            spec = _spec(store, claim.spec_cid, claim.spec_digest)
            if spec is None:
                out.unreadable_specs += 1
            elif spec.init.model_digest is not None:
                parent = LineageLink(spec.init.model_digest, claim.run_id)
                break
        if parent is None or parent.model_digest in seen:
            break
        out.parents.append(parent)
        seen.add(parent.model_digest)
        digest = parent.model_digest
    for log in ledger.logs("RunRegistered"):
        args = log["args"]
        spec = _spec(store, str(args["specCid"]), bytes(args["specDigest"]))
        if spec is None:
            out.unreadable_specs += 1
        elif spec.init.model_digest == model_digest:
            run = ledger.get_run(bytes(args["runId"]))
            child = run.model_digest if run.model_digest is not None else b"\x00" * 32
            out.children.append(LineageLink(child, bytes(args["runId"])))
    return out
