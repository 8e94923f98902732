"""Checkpoints and model files: deterministic safetensors with pol_chain metadata.

A checkpoint (``polchain-checkpoint-v1``) holds the full training state as tensors named
``model.<name>`` (parameters and buffers) and ``optim.<param index>.<key>`` (optimizer
state), and in the safetensors ``__metadata__`` entry ``polchain`` the canonical JSON of
:class:`CheckpointMeta`. The model file (``polchain-model-v1``) holds the model's tensors
alone, unprefixed.

:func:`parse_header` reads the safetensors header of untrusted bytes with pure Python
(no torch), with limits on size, tensor count, dtypes, shapes and offsets, so every layer
can check an artefact's structure before anything turns it into tensors.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pol_chain.format._json import JsonDict, JsonObject, canonical_json, parse_json
from pol_chain.format.errors import FormatError
from pol_chain.format.names import CHECKPOINT_FORMAT, MODEL_FORMAT

__all__ = [
    "DTYPE_SIZES",
    "MODEL_META",
    "CheckpointMeta",
    "TensorInfo",
    "model_meta",
    "check_model_meta",
    "metadata_entry",
    "parse_header",
    "polchain_meta",
    "polchain_meta_of",
]

DTYPE_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 1 << 16
MAX_RANK = 16
META_KEY = "polchain"

MODEL_META: JsonDict = {"format": MODEL_FORMAT}
"""The metadata of every model file (so the same weights always give the same digest)."""


def model_meta() -> JsonDict:
    """A fresh copy of :data:`MODEL_META`."""
    return dict(MODEL_META)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors header: dtype, shape and byte range in the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def parse_header(data: bytes, what: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and check the safetensors header of ``data``: ``({name: TensorInfo},
    metadata)``. Every tensor's bytes must lie in the buffer, match its dtype and shape,
    and the tensors must tile the data exactly."""
    if len(data) < 8:
        raise FormatError(what, "too short for safetensors")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > MAX_HEADER_BYTES or size > len(data) - 8:
        raise FormatError(what, f"header of {size} bytes does not fit the file or the limit")
    header = parse_json(bytes(data[8 : 8 + size]).rstrip(b" "), what, canonical=False, max_depth=4)
    if not isinstance(header, dict):
        raise FormatError(what, "safetensors header is not an object")
    if len(header) > MAX_TENSORS + 1:
        raise FormatError(what, f"more than {MAX_TENSORS} tensors")
    meta_raw = header.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta_raw.items()
    ):
        raise FormatError(what, "__metadata__ must map strings to strings", field="__metadata__")
    body = len(data) - 8 - size
    tensors: dict[str, TensorInfo] = {}
    for name, spec in header.items():
        t = JsonObject(spec, what, name).only(("data_offsets", "dtype", "shape"))
        dtype = t.str("dtype", 8)
        if dtype not in DTYPE_SIZES:
            raise t.fail("dtype", f"unsupported dtype {dtype!r}")
        shape = tuple(t.int_list("shape", 0, 1 << 40, MAX_RANK))
        offsets = t.int_list("data_offsets", 0, body, 2)
        if len(offsets) != 2 or offsets[1] < offsets[0]:
            raise t.fail("data_offsets", "must be [start, end] inside the data")
        start, end = offsets
        if math.prod(shape) * DTYPE_SIZES[dtype] != end - start:
            raise t.fail("shape", f"{shape} of {dtype} does not take {end - start} bytes")
        tensors[name] = TensorInfo(name, dtype, shape, start, end)
    covered = 0
    for info in sorted(tensors.values(), key=lambda i: (i.start, i.end)):
        if info.start != covered:
            raise FormatError(what, "tensor data overlaps or leaves gaps", field=info.name)
        covered = info.end
    if covered != body:
        raise FormatError(what, f"{body - covered} trailing bytes after the tensors")
    return tensors, dict(meta_raw)


def polchain_meta(metadata: dict[str, str], what: str) -> JsonObject:
    """The ``polchain`` metadata entry as a JSON object (canonical, bounded)."""
    raw = metadata.get(META_KEY)
    if raw is None:
        raise FormatError(what, "missing polchain metadata", field="__metadata__.polchain")
    value = parse_json(raw.encode("utf-8"), what, canonical=False, max_bytes=1 << 20, max_depth=4)
    return JsonObject(value, what, "__metadata__.polchain")


def polchain_meta_of(metadata: dict[str, str], what: str) -> JsonDict:
    """The ``polchain`` metadata entry as a plain ``dict`` (any pol_chain format)."""
    return polchain_meta(metadata, what).value


def metadata_entry(meta: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors ``__metadata__`` of pol_chain ``meta`` (canonical JSON text)."""
    return {META_KEY: canonical_json(dict(meta)).decode()}


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's metadata: its step, the scheduler position and, as information
    only, the learning rate of each parameter group."""

    step: int
    scheduler_position: int
    lr: tuple[float | None, ...] = ()

    def to_json(self) -> JsonDict:
        """The metadata object."""
        return {
            "format": CHECKPOINT_FORMAT,
            "lr": [None if v is None or not math.isfinite(v) else v for v in self.lr],
            "scheduler_position": self.scheduler_position,
            "step": self.step,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> CheckpointMeta:
        """Parse (and check the format of) a checkpoint's metadata."""
        obj.format(CHECKPOINT_FORMAT)
        obj.only(("format", "lr", "scheduler_position", "step"))
        lrs = obj.list("lr", 4096)
        for pos, value in enumerate(lrs):
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                raise obj.fail(f"lr[{pos}]", "must be a number or null")
        return cls(obj.int("step"), obj.int("scheduler_position"), tuple(lrs))

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], what: str) -> CheckpointMeta:
        """Parse the metadata of checkpoint bytes' header."""
        return cls.from_json(polchain_meta(metadata, what))


def check_model_meta(metadata: dict[str, str], what: str) -> None:
    """Require the metadata of a model file."""
    obj = polchain_meta(metadata, what)
    obj.format(MODEL_FORMAT)
    obj.only(("format",))
