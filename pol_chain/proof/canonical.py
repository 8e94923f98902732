"""Canonical JSON (sorted keys, no spaces, UTF-8, no NaN), SHA-256 and hex helpers."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from pol_chain.proof.errors import MalformedArtefactError

__all__ = [
    "atomic_write",
    "canonical_json",
    "from_hex",
    "parse_canonical_json",
    "sha256",
    "to_hex",
]


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite float in canonical JSON: {value}")
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_finite(item)


def canonical_json(value: Any) -> bytes:
    """Return the canonical bytes of a JSON value (sorted keys, ``(',', ':')``, UTF-8)."""
    _check_finite(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def parse_canonical_json(data: bytes, what: str, *, strict: bool = True) -> Any:
    """Parse ``data`` as JSON (data only); with ``strict``, require canonical bytes."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedArtefactError(what, f"not valid JSON ({exc.__class__.__name__})") from None
    if strict and canonical_json(value) != data:
        raise MalformedArtefactError(what, "JSON is not in canonical form")
    return value


def sha256(data: bytes) -> bytes:
    """Return the 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def to_hex(digest: bytes) -> str:
    """Return ``digest`` as 0x-prefixed lowercase hex."""
    return "0x" + bytes(digest).hex()


def from_hex(text: str | bytes) -> bytes:
    """Return the bytes of a 0x-prefixed (or bare) hex string; bytes pass through."""
    if isinstance(text, bytes):
        return text
    body = text[2:] if text.startswith(("0x", "0X")) else text
    return bytes.fromhex(body)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
