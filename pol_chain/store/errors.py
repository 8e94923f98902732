"""Named errors of the store layer."""

from __future__ import annotations

from typing import Any

from pol_chain.errors import PolchainError

__all__ = [
    "BlockCorrupted",
    "BlockNotFound",
    "CarError",
    "CidError",
    "ContentMismatch",
    "IntegrityError",
    "KuboError",
    "KuboUnreachable",
    "NotAFile",
    "StoreError",
]


class StoreError(PolchainError):
    """Base class of every error raised by :mod:`pol_chain.store` (one line in the CLI)."""


class CidError(StoreError, ValueError):
    """A CID string or binary CID cannot be parsed, or uses an unsupported codec/hash."""


class BlockNotFound(StoreError, KeyError):
    """A block needed for the requested DAG is not in the store."""

    def __init__(self, cid: str) -> None:
        super().__init__(cid)
        self.cid = cid

    def __str__(self) -> str:
        return f"block {self.cid} is not in the store"


class IntegrityError(StoreError):
    """Bytes do not match the CID (or the SHA-256) they were asked for; nothing is returned."""

    def __init__(self, what: str, expected: str, actual: str, *, block: str | None = None) -> None:
        super().__init__(f"{what}: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual
        self.block = block
        """The CID of the damaged block, when one block on disk is the culprit."""


class BlockCorrupted(IntegrityError):
    """A block does not hash to its own CID: damage in this store (or a node that answered
    wrong bytes), never the content's author's doing."""


class ContentMismatch(IntegrityError):
    """Every block matches its CID, but the whole content does not hash to the SHA-256 it
    was asked for: the CID names other bytes than the digest committed for them."""


class NotAFile(StoreError):
    """The CID names a DAG that is not a UnixFS file (e.g. a directory)."""


class CarError(StoreError, ValueError):
    """A CAR file is malformed or unsupported."""


class KuboUnreachable(StoreError, ConnectionError):
    """The Kubo RPC endpoint could not be reached after the allowed retries."""

    def __init__(self, url: str, attempts: int, cause: BaseException | None = None) -> None:
        super().__init__(f"Kubo RPC at {url} unreachable after {attempts} attempt(s): {cause!r}")
        self.url = url
        self.attempts = attempts
        self.cause = cause


class KuboError(StoreError):
    """Kubo answered with an error (its JSON ``Message``/``Code``), or an unexpected reply."""

    def __init__(
        self,
        endpoint: str,
        status: int,
        message: str,
        code: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"Kubo {endpoint} failed (HTTP {status}, code {code}): {message}")
        self.endpoint = endpoint
        self.status = status
        self.message = message
        self.code = code
        self.body = body
