"""Deterministic safetensors bytes for a flat ``{name: tensor}`` map, and safe loading.

The writer lays out tensors in sorted-name order with a header serialized as canonical
JSON (one ``__metadata__`` entry, itself canonical), padded with spaces to 8 bytes, so
the same state always gives the same bytes. The digest path streams the header and each
tensor's bytes into SHA-256 without building one large buffer. Loading checks the
header first (:func:`pol_chain.format.parse_header`: sizes, dtypes, shapes, offsets),
then uses the ``safetensors`` library only (data, never code): anything else is
:class:`MalformedArtefactError`. :func:`load_checkpoint_bytes` and
:func:`load_model_bytes` also check the pol_chain metadata of their format.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from pol_chain.format import (
    CheckpointMeta,
    check_model_meta,
    metadata_entry,
    model_meta,
    parse_header,
    polchain_meta_of,
)
from pol_chain.proof.direct_io import write_direct
from pol_chain.proof.errors import MalformedArtefactError

__all__ = [
    "DIRECT_MIN_BYTES",
    "SerializedState",
    "digest_model",
    "digest_state",
    "load_checkpoint_bytes",
    "load_model_bytes",
    "load_state_bytes",
    "serialize_model",
    "serialize_state",
    "write_state",
]

Meta = Mapping[str, Any] | CheckpointMeta

DIRECT_MIN_BYTES = 64 << 20  # smaller states write buffered: the page-cache copy is cheap

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class SerializedState:
    """A state laid out for deterministic safetensors output (header + tensor views)."""

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | CheckpointMeta
    ):
        items: list[tuple[str, str, Sequence[int], memoryview]] = []
        for name in sorted(tensors):
            tensor = tensors[name]
            if tensor.dtype not in _DTYPES:
                raise TypeError(f"unsupported dtype {tensor.dtype} for {name!r}")
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
            view = memoryview(raw.numpy()).cast("B")  # type: ignore[arg-type]
            items.append((name, _DTYPES[tensor.dtype], tuple(tensor.shape), view))
        self._lay_out(items, metadata)

    @classmethod
    def from_buffers(
        cls,
        buffers: Mapping[str, tuple[torch.dtype, Sequence[int], bytes | memoryview]],
        metadata: Mapping[str, Any] | CheckpointMeta,
    ) -> SerializedState:
        """The same layout from each tensor's dtype, shape and raw bytes (C order,
        little-endian), without building tensors: the same tensors give the same file."""
        items: list[tuple[str, str, Sequence[int], bytes | memoryview]] = []
        for name in sorted(buffers):
            dtype, shape, data = buffers[name]
            code = _DTYPES.get(dtype)
            if code is None:
                raise TypeError(f"unsupported dtype {dtype} for {name!r}")
            view = data if isinstance(data, bytes) else memoryview(data).cast("B")
            if len(view) != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{name!r}: {len(view)} bytes for shape {list(shape)} of {dtype}")
            items.append((name, code, tuple(shape), view))
        state = cls.__new__(cls)
        state._lay_out(items, metadata)
        return state

    def _lay_out(
        self, items: Sequence[tuple[str, str, Sequence[int], bytes | memoryview]], metadata: Meta
    ) -> None:
        if isinstance(metadata, CheckpointMeta):
            metadata = metadata.to_json()
        header: dict[str, Any] = {"__metadata__": metadata_entry(dict(metadata))}
        self._chunks: list[bytes | memoryview] = []
        offset = 0
        for name, code, shape, view in items:
            size = len(view)
            # tuples serialize as JSON arrays; unlike lists, the collector can untrack them
            header[name] = {"data_offsets": (offset, offset + size), "dtype": code, "shape": shape}
            self._chunks.append(view)
            offset += size
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        self.header = struct.pack("<Q", len(text)) + text
        self.data_size = offset

    def chunks(self) -> Iterator[memoryview | bytes]:
        """Yield the file's bytes in order (header, then every tensor's bytes)."""
        yield self.header
        yield from self._chunks

    def digest(self) -> bytes:
        """Return SHA-256 of the serialized bytes, streaming."""
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return h.digest()

    def to_bytes(self) -> bytes:
        """Return the whole file as bytes."""
        return b"".join(bytes(c) for c in self.chunks())

    def write(self, handle: BinaryIO) -> bytes:
        """Write to ``handle`` while hashing; return the SHA-256 digest."""
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
            handle.write(chunk)
        return h.digest()


def serialize_state(tensors: Mapping[str, torch.Tensor], metadata: Meta) -> bytes:
    """Return deterministic safetensors bytes of ``tensors`` with canonical ``metadata``."""
    return SerializedState(tensors, metadata).to_bytes()


def digest_state(tensors: Mapping[str, torch.Tensor], metadata: Meta) -> bytes:
    """Return SHA-256 of :func:`serialize_state` without materializing the bytes."""
    return SerializedState(tensors, metadata).digest()


def write_state(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Meta,
    *,
    direct: bool | None = None,
) -> bytes:
    """Write the state atomically to ``path`` (tmp, fsync, rename); return its digest.

    States of :data:`DIRECT_MIN_BYTES` or more (or any, with ``direct=True``) bypass the
    page cache where the file system allows (:mod:`pol_chain.proof.direct_io`);
    ``direct=False`` always writes buffered. The bytes are the same either way."""
    import os

    state = SerializedState(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if direct is None:
        direct = len(state.header) + state.data_size >= DIRECT_MIN_BYTES
    hasher = hashlib.sha256()

    def hashed() -> Iterator[bytes | memoryview]:
        for chunk in state.chunks():
            hasher.update(chunk)
            yield chunk

    if direct and write_direct(tmp, hashed()):
        digest = hasher.digest()
    else:
        with open(tmp, "wb") as handle:
            digest = state.write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    return digest


def load_state_bytes(data: bytes, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors ``data`` (data only, never pickle) into tensors and the pol_chain
    metadata object (any format)."""
    from safetensors.torch import load

    _, metadata = parse_header(data, what)
    meta = polchain_meta_of(metadata, what)
    try:
        tensors = load(bytes(data))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed artefact
        raise MalformedArtefactError(
            what, f"not valid safetensors ({exc.__class__.__name__})"
        ) from None
    return dict(tensors), meta


def load_checkpoint_bytes(data: bytes, what: str) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Parse checkpoint bytes: its tensors and its :class:`CheckpointMeta`."""
    tensors, meta = load_state_bytes(data, what)
    from pol_chain.format import JsonObject

    return tensors, CheckpointMeta.from_json(JsonObject(meta, what, "__metadata__.polchain"))


def load_model_bytes(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """Parse a model file's bytes (its metadata must be the model format's)."""
    from safetensors.torch import load

    _, metadata = parse_header(data, what)
    check_model_meta(metadata, what)
    try:
        return dict(load(bytes(data)))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed artefact
        raise MalformedArtefactError(
            what, f"not valid safetensors ({exc.__class__.__name__})"
        ) from None


def serialize_model(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The model file bytes of ``tensors`` (unprefixed names, model metadata)."""
    return serialize_state(tensors, model_meta())


def digest_model(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The model digest of ``tensors``: SHA-256 of :func:`serialize_model`."""
    return digest_state(tensors, model_meta())
