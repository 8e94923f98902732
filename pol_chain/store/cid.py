"""Minimal CIDs: binary/string forms, varints, SHA-256 multihash.

Hand-rolled rather than built on ``multiformats`` because the store creates and checks a CID
per 1 MiB block on its hot path, and only needs CIDv1 (base32) and CIDv0 (base58btc) with
SHA-256: a few lines of bytes handling, no registry lookups.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from .errors import CidError

__all__ = [
    "CID",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "decode_varint",
    "encode_varint",
    "raw_cid",
]

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 varint."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``."""
    shift = 0
    value = 0
    while True:
        if pos >= len(buf):
            raise CidError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CidError("varint too long")


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def _b58decode(text: str) -> bytes:
    n = 0
    try:
        for c in text:
            n = n * 58 + _B58_INDEX[c]
    except KeyError as exc:
        raise CidError(f"invalid base58 character in {text!r}") from exc
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier: version, codec and a SHA-256 digest (the only hash supported)."""

    version: int
    codec: int
    digest: bytes

    @property
    def multihash(self) -> bytes:
        """The multihash bytes (sha2-256 code, length, digest)."""
        return bytes((SHA2_256, len(self.digest))) + self.digest

    @property
    def binary(self) -> bytes:
        """Binary form (CIDv0: bare multihash; CIDv1: version, codec, multihash)."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return _b58encode(self.multihash)
        return "b" + base64.b32encode(self.binary).decode("ascii").lower().rstrip("=")

    def verify(self, data: bytes | memoryview) -> bool:
        """Whether ``data`` hashes to this CID's digest."""
        return hashlib.sha256(data).digest() == self.digest

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> CID:
        """Parse a binary CID (the whole buffer)."""
        cid, end = cls.from_prefix(data, 0)
        if end != len(data):
            raise CidError("trailing bytes after CID")
        return cid

    @classmethod
    def from_prefix(cls, data: bytes | memoryview, pos: int = 0) -> tuple[CID, int]:
        """Parse a binary CID starting at ``pos``; return it and the position after it."""
        if len(data) - pos >= 2 and data[pos] == SHA2_256 and data[pos + 1] == 32:
            digest = bytes(data[pos + 2 : pos + 34])
            if len(digest) != 32:
                raise CidError("truncated CIDv0")
            return cls(0, DAG_PB, digest), pos + 34
        version, pos = decode_varint(data, pos)
        if version != 1:
            raise CidError(f"unsupported CID version {version}")
        codec, pos = decode_varint(data, pos)
        code, pos = decode_varint(data, pos)
        length, pos = decode_varint(data, pos)
        if code != SHA2_256 or length != 32:
            raise CidError(f"unsupported multihash 0x{code:x}/{length} (only sha2-256)")
        digest = bytes(data[pos : pos + length])
        if len(digest) != length:
            raise CidError("truncated multihash")
        return cls(1, codec, digest), pos + length

    @classmethod
    def parse(cls, text: str | CID) -> CID:
        """Parse a CID string: CIDv1 base32 (``b…``), base58btc (``z…``) or CIDv0 (``Qm…``)."""
        if isinstance(text, CID):
            return text
        if not isinstance(text, str) or not text:
            raise CidError(f"not a CID: {text!r}")
        if text.startswith("Qm") and len(text) == 46:
            return cls.from_bytes(_b58decode(text))
        prefix, body = text[0], text[1:]
        if prefix == "b":
            try:
                raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            except ValueError as exc:
                raise CidError(f"invalid base32 CID {text!r}") from exc
        elif prefix == "z":
            raw = _b58decode(body)
        else:
            raise CidError(f"unsupported multibase prefix in {text!r}")
        return cls.from_bytes(raw)

    def to_v1(self) -> CID:
        """The CIDv1 form of this CID."""
        return CID(1, self.codec, self.digest)


def raw_cid(data: bytes | memoryview) -> CID:
    """CIDv1 of a raw block."""
    return CID(1, RAW, hashlib.sha256(data).digest())
