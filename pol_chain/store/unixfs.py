"""dag-pb and UnixFS protobufs, encoded byte-for-byte as the JS implementations do, and the
balanced file-tree builder of the UnixFS 2025 profile.

PBNode: ``Links`` (field 2) first, then ``Data`` (field 1); each PBLink is ``Hash`` (1),
``Name`` (2, the empty string, present) and ``Tsize`` (3). UnixFS ``Data`` of a file node:
``Type`` (1) = File, ``filesize`` (3), one unpacked ``blocksizes`` (4) per child. ``Tsize`` of a
raw leaf is its length; of a node, its encoded length plus its children's ``Tsize``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from .cid import CID, DAG_PB, RAW, decode_varint, encode_varint
from .errors import CidError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_WIDTH",
    "FileTreeBuilder",
    "Link",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "decode_pbnode",
    "decode_unixfs",
    "encode_file_node",
]

DEFAULT_CHUNK_SIZE = 1024 * 1024
DEFAULT_WIDTH = 1024

# UnixFS Data.Type
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = 0, 1, 2, 3, 4, 5


def _field(tag: int, payload: bytes) -> bytes:
    return encode_varint(tag) + encode_varint(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Link:
    """A child reference while building: its CID, ``Tsize`` and content length."""

    cid: CID
    tsize: int
    content_size: int


def encode_file_node(children: list[Link]) -> bytes:
    """Encode an advanced UnixFS file node (no inline data) linking ``children`` in order."""
    data = bytearray(b"\x08\x02")  # Type = File
    data += b"\x18" + encode_varint(sum(c.content_size for c in children))
    for c in children:
        data += b"\x20" + encode_varint(c.content_size)
    out = bytearray()
    for c in children:
        link = _field(0x0A, c.cid.binary) + b"\x12\x00" + b"\x18" + encode_varint(c.tsize)
        out += _field(0x12, link)
    out += _field(0x0A, bytes(data))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class PBLink:
    """A decoded dag-pb link."""

    cid: CID
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A decoded dag-pb node."""

    links: list[PBLink]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The fields of a UnixFS ``Data`` message the store reads."""

    type: int
    data: bytes | None
    filesize: int | None
    blocksizes: list[int]


def _iter_fields(buf: bytes | memoryview) -> list[tuple[int, int, int | bytes]]:
    """Decode protobuf fields: (field number, wire type, varint or bytes)."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = decode_varint(buf, pos)
            out.append((field, wire, val))
        elif wire == 2:
            ln, pos = decode_varint(buf, pos)
            if pos + ln > n:
                raise CidError("truncated protobuf field")
            out.append((field, wire, bytes(buf[pos : pos + ln])))
            pos += ln
        else:
            raise CidError(f"unsupported protobuf wire type {wire}")
    return out


def decode_pbnode(buf: bytes | memoryview) -> PBNode:
    """Decode a dag-pb block."""
    links: list[PBLink] = []
    data: bytes | None = None
    for field, wire, val in _iter_fields(buf):
        if field == 2 and wire == 2 and isinstance(val, bytes):
            cid: CID | None = None
            name: str | None = None
            tsize: int | None = None
            for f2, w2, v2 in _iter_fields(val):
                if f2 == 1 and w2 == 2 and isinstance(v2, bytes):
                    cid = CID.from_bytes(v2)
                elif f2 == 2 and w2 == 2 and isinstance(v2, bytes):
                    name = v2.decode("utf-8")
                elif f2 == 3 and w2 == 0 and isinstance(v2, int):
                    tsize = v2
            if cid is None:
                raise CidError("dag-pb link without Hash")
            links.append(PBLink(cid, name, tsize))
        elif field == 1 and wire == 2 and isinstance(val, bytes):
            data = val
        else:
            raise CidError(f"unexpected dag-pb field {field}")
    return PBNode(links, data)


def decode_unixfs(buf: bytes) -> UnixFSData:
    """Decode a UnixFS ``Data`` message."""
    typ, data, filesize, sizes = -1, None, None, []
    for field, _wire, val in _iter_fields(buf):
        if field == 1 and isinstance(val, int):
            typ = val
        elif field == 2 and isinstance(val, bytes):
            data = val
        elif field == 3 and isinstance(val, int):
            filesize = val
        elif field == 4:
            if isinstance(val, int):
                sizes.append(val)
            else:  # packed
                pos = 0
                while pos < len(val):
                    v, pos = decode_varint(val, pos)
                    sizes.append(v)
    return UnixFSData(typ, data, filesize, sizes)


BlockSink = Callable[[CID, bytes], None]


class FileTreeBuilder:
    """Builds the balanced UnixFS tree over a stream of chunk CIDs, bottom-up and streaming.

    Feed each raw leaf with :meth:`add_leaf` in order; interior nodes are encoded as soon as
    a level holds ``width`` links and handed to ``sink``; :meth:`finish` closes the tree and
    returns the root CID. Equivalent to ``@ipld/unixfs``'s ``balanced.withWidth(width)`` and
    to ``ipfs-unixfs-importer``'s balanced builder with ``reduceSingleLeafToSelf``.
    """

    def __init__(self, sink: BlockSink, width: int = DEFAULT_WIDTH) -> None:
        if width < 2:
            raise ValueError("width must be at least 2")
        self._sink = sink
        self._width = width
        self._levels: list[list[Link]] = [[]]
        self.nodes = 0

    def add_leaf(self, cid: CID, size: int) -> None:
        """Append a raw leaf of ``size`` bytes."""
        self._push(0, Link(cid, size, size))

    def _push(self, level: int, link: Link) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        row = self._levels[level]
        row.append(link)
        if len(row) == self._width:
            self._levels[level] = []
            self._push(level + 1, self._make_node(row))

    def _make_node(self, children: list[Link]) -> Link:
        block = encode_file_node(children)
        cid = CID(1, DAG_PB, hashlib.sha256(block).digest())
        self._sink(cid, block)
        self.nodes += 1
        return Link(
            cid,
            len(block) + sum(c.tsize for c in children),
            sum(c.content_size for c in children),
        )

    def finish(self) -> Link:
        """Close the tree; return the root link (a raw leaf if there was a single chunk)."""
        levels = self._levels
        k = 0
        while True:
            row = levels[k]
            above = any(levels[j] for j in range(k + 1, len(levels)))
            if not row and not above:
                raise ValueError("no leaves were added")
            if row and (above or len(row) > 1):
                levels[k] = []
                node = self._make_node(row)
                if k + 1 == len(levels):
                    levels.append([])
                levels[k + 1].append(node)
            elif row and not above:
                root = row[0]
                if root.cid.codec != RAW and root.cid.codec != DAG_PB:
                    raise CidError("unexpected root codec")
                return root
            k += 1
