"""CARv1 writing and CARv1/CARv2 reading (the header's tiny dag-cbor subset is hand-coded)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .cid import CID, encode_varint
from .errors import CarError, CidError

__all__ = ["CarReader", "encode_car_header", "write_car"]

_V2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        try:
            return bytes([(major << 5) | extra]) + struct.pack(fmt, n)
        except struct.error:
            continue
    raise CarError("integer too large for CBOR")


def encode_car_header(roots: list[CID]) -> bytes:
    """dag-cbor ``{"roots": [...], "version": 1}`` (keys in dag-cbor's canonical order)."""
    out = bytearray(b"\xa2\x65roots")
    out += _cbor_head(4, len(roots))
    for r in roots:
        cid = b"\x00" + r.binary
        out += b"\xd8\x2a" + _cbor_head(2, len(cid)) + cid
    out += b"\x67version\x01"
    return bytes(out)


def write_car(out: BinaryIO, roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1 to ``out``; return the number of blocks written."""
    header = encode_car_header(roots)
    out.write(encode_varint(len(header)) + header)
    n = 0
    for cid, data in blocks:
        cb = cid.binary
        out.write(encode_varint(len(cb) + len(data)))
        out.write(cb)
        out.write(data)
        n += 1
    return n


class _Cbor:
    """Decoder for the CBOR subset found in CAR headers."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _arg(self, info: int) -> int:
        if info < 24:
            return info
        size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if size is None:
            raise CarError("unsupported CBOR length")
        v = int.from_bytes(self.buf[self.pos : self.pos + size], "big")
        self.pos += size
        return v

    def item(self) -> object:
        if self.pos >= len(self.buf):
            raise CarError("truncated CAR header")
        ib = self.buf[self.pos]
        self.pos += 1
        major, info = ib >> 5, ib & 31
        if major == 7:
            return {20: False, 21: True, 22: None}.get(info)
        n = self._arg(info)
        if major == 0:
            return n
        if major in (2, 3):
            raw = self.buf[self.pos : self.pos + n]
            self.pos += n
            return raw if major == 2 else raw.decode("utf-8")
        if major == 4:
            return [self.item() for _ in range(n)]
        if major == 5:
            d = {}
            for _ in range(n):
                k = self.item()
                d[k] = self.item()
            return d
        if major == 6:
            val = self.item()
            if n == 42 and isinstance(val, bytes) and val[:1] == b"\x00":
                return CID.from_bytes(val[1:])
            raise CarError(f"unsupported CBOR tag {n}")
        raise CarError(f"unsupported CBOR major type {major}")


class CarReader:
    """Reads a CAR (v1, or v2 via its data section) from a binary stream, block by block.

    Block bytes are returned as read; callers verify them (:meth:`LocalStore.import_car` does).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._s = stream
        self._remaining: int | None = None
        first = self._read_exact(len(_V2_PRAGMA), allow_eof=False)
        if first == _V2_PRAGMA:
            hdr = self._read_exact(40, allow_eof=False)
            offset, size = struct.unpack_from("<QQ", hdr, 16)
            skip = offset - len(_V2_PRAGMA) - 40
            if skip < 0:
                raise CarError("bad CARv2 data offset")
            self._read_exact(skip, allow_eof=False)
            self._remaining = size
            first = b""
        self._pending = first
        hlen = self._varint()
        if hlen is None or hlen > 1 << 20:
            raise CarError("bad CAR header length")
        header = _Cbor(self._read_exact(hlen, allow_eof=False)).item()
        if not isinstance(header, dict) or header.get("version") != 1:
            raise CarError(f"not a CARv1 header: {header!r}")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
            raise CarError("CAR header roots must be a list of CIDs")
        self.roots: list[CID] = roots

    def _read_exact(self, n: int, allow_eof: bool = True) -> bytes:
        out = b""
        if getattr(self, "_pending", b""):
            out, self._pending = self._pending[:n], self._pending[n:]
        while len(out) < n:
            want = n - len(out)
            if self._remaining is not None:
                want = min(want, self._remaining)
                if want == 0:
                    break
            chunk = self._s.read(want)
            if not chunk:
                break
            if self._remaining is not None:
                self._remaining -= len(chunk)
            out += chunk
        if len(out) < n and (out or not allow_eof):
            raise CarError("truncated CAR")
        return out

    def _varint(self) -> int | None:
        value = shift = 0
        while True:
            b = self._read_exact(1)
            if not b:
                if shift:
                    raise CarError("truncated varint in CAR")
                return None
            value |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CarError("varint too long in CAR")

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        while True:
            ln = self._varint()
            if ln is None:
                return
            section = self._read_exact(ln, allow_eof=False)
            try:
                cid, pos = CID.from_prefix(section, 0)
            except CidError as exc:
                raise CarError(f"bad CID in CAR section: {exc}") from exc
            yield cid, section[pos:]
