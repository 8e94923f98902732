"""The :class:`ArtefactStore` interface shared by the local and replicated stores."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = ["ArtefactStore", "Digest", "normalize_sha256"]

Digest = bytes | str
"""A SHA-256 given as 32 bytes or as hex (``0x`` prefix optional)."""


def normalize_sha256(digest: Digest | None) -> bytes | None:
    """Return ``digest`` as 32 bytes (or ``None``); raise ``ValueError`` if it is not one."""
    if digest is None:
        return None
    if isinstance(digest, str):
        text = digest[2:] if digest.lower().startswith("0x") else digest
        try:
            digest = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"not a hex SHA-256: {text!r}") from exc
    if not isinstance(digest, bytes | bytearray) or len(digest) != 32:
        raise ValueError("expect_sha256 must be 32 bytes (or 64 hex digits)")
    return bytes(digest)


class ArtefactStore(ABC):
    """Content-addressed artefact storage: put returns a CID string; get verifies.

    Every get checks each block against its CID; ``expect_sha256`` additionally requires the
    whole content's SHA-256 (the digest committed on-chain). On any mismatch
    :class:`~pol_chain.store.errors.IntegrityError` is raised and no bytes are returned.
    """

    @abstractmethod
    def put_bytes(self, data: bytes, *, pin: bool = True, name: str = "") -> str:
        """Store ``data``; return its CID."""

    @abstractmethod
    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True, name: str = "") -> str:
        """Store a file's bytes (streamed, never held in memory whole); return its CID."""

    @abstractmethod
    def get_bytes(self, cid: str, *, expect_sha256: Digest | None = None) -> bytes:
        """Return the content of ``cid``, verified."""

    @abstractmethod
    def get_file(
        self,
        cid: str,
        dest: str | os.PathLike[str],
        *,
        expect_sha256: Digest | None = None,
    ) -> Path:
        """Write the content of ``cid`` to ``dest`` atomically (only once fully verified)."""

    @abstractmethod
    def has(self, cid: str) -> bool:
        """Whether the whole DAG of ``cid`` is available."""
