"""Naming runs and models on the command line: a run id, a proof directory, a model
digest, a weights file. Works with any :class:`~pol_chain.ledger.reader.LedgerReader`
(a transaction client is one)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.ledger.reader import LedgerReader

__all__ = ["UnknownTarget", "file_sha256", "resolve_model", "resolve_run"]

_HEX32 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class UnknownTarget(PolchainError):
    """A model or run reference resolves to nothing on this ledger."""


def _hex32(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def file_sha256(path: Path) -> bytes:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def resolve_run(ledger: LedgerReader, ref: str) -> bytes:
    """A run id from ``0x…`` or a proof directory's binding."""
    path = Path(ref)
    if path.is_dir():
        from pol_chain.format import RunBinding

        return RunBinding.read(path).run_id_bytes
    if _HEX32.match(ref):
        run_id = _hex32(ref)
        if ledger.run_exists(run_id):
            return run_id
        raise UnknownTarget(f"no run {ref} on ledger {ledger.address}")
    raise UnknownTarget(
        f"{ref!r} is neither a run id (0x + 64 hex digits) nor a proof directory",
        hint="list runs of a model with `polchain history MODEL`",
    )


def resolve_model(ledger: LedgerReader, ref: str) -> bytes:
    """A model digest from a digest, a weights file, a proof directory or a run id."""
    path = Path(ref)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir() or (_HEX32.match(ref) and ledger.run_exists(_hex32(ref))):
        run = ledger.get_run(resolve_run(ledger, ref))
        if run.model_digest is None:
            raise UnknownTarget(f"run {ref} is not finalized: it claims no model yet")
        return run.model_digest
    if _HEX32.match(ref):
        return _hex32(ref)
    raise UnknownTarget(
        f"{ref!r} is not a model digest (0x + 64 hex), a weights file, a proof directory "
        "or a run id"
    )
