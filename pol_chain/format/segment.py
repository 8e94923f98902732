"""Segments: the data of every step between two checkpoints.

``polchain-segment-v1`` (canonical JSON), one micro-batch per step::

    {"end_step", "format", "index", "start_step",
     "steps": [{"indices": [i, ...], "seeds": {"augment": s, "dropout": s}, "step": t}, ...]}

``polchain-segment-v2``, for runs with gradient accumulation: each step lists its
micro-batches in the order the step consumed them::

    "steps": [{"batches": [[i, ...], [i, ...]], "seeds": {...}, "step": t}, ...]

A segment whose every step has one micro-batch is written as v1 (so its bytes are those
of every proof recorded before v2); both versions parse. Step ``t`` trained on those
samples with the per-step ``seeds``. Parsing bounds every count and every value: an index
is a non-negative 63-bit integer (the verifier then checks it against the committed
dataset size), a seed a 63-bit integer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from pol_chain.format._json import (
    UINT63_MAX,
    CanonicalRecord,
    Json,
    JsonDict,
    JsonObject,
    parse_json,
)
from pol_chain.format.errors import FormatError
from pol_chain.format.names import SEGMENT_FORMAT, SEGMENT_FORMAT_V2

__all__ = ["Segment", "SegmentStep"]

MAX_STEPS = 1 << 20
MAX_BATCH = 1 << 20
MAX_SEGMENT_BYTES = 1 << 30
MAX_SEEDS = 64
MAX_MICRO = 4096


@dataclass(frozen=True)
class SegmentStep:
    """One optimizer step: its number, the sample indices of each of its micro-batches
    and its seeds. Built from flat ``indices`` it has one micro-batch."""

    step: int
    indices: tuple[int, ...] = ()
    seeds: Mapping[str, int] = field(default_factory=dict)
    batches: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.batches:
            object.__setattr__(self, "batches", (tuple(self.indices),))
        flat = tuple(chain.from_iterable(self.batches))
        if self.indices and tuple(self.indices) != flat:
            raise FormatError("segment", "indices differ from the micro-batches", field="indices")
        object.__setattr__(self, "indices", flat)

    @classmethod
    def of(
        cls, step: int, batches: Sequence[Sequence[int]], seeds: Mapping[str, int]
    ) -> SegmentStep:
        """Step ``step`` over these micro-batches."""
        return cls(step, seeds=dict(seeds), batches=tuple(tuple(map(int, b)) for b in batches))

    @property
    def single(self) -> bool:
        """Whether the step has one micro-batch (the v1 form)."""
        return len(self.batches) == 1

    def to_json(self) -> JsonDict:
        """The JSON form (v1 for one micro-batch, v2 otherwise)."""
        if self.single:
            return {"indices": list(self.indices), "seeds": dict(self.seeds), "step": self.step}
        batches: list[Json] = [list(b) for b in self.batches]
        return {"batches": batches, "seeds": dict(self.seeds), "step": self.step}

    @classmethod
    def from_json(cls, obj: JsonObject, version: int = 1) -> SegmentStep:
        """Parse one step entry of a v1 or v2 segment."""
        key = "indices" if version == 1 else "batches"
        obj.only((key, "seeds", "step"))
        seeds_obj = obj.obj("seeds")
        if len(seeds_obj.value) > MAX_SEEDS:
            raise obj.fail("seeds", f"has more than {MAX_SEEDS} entries")
        seeds = {str(k): seeds_obj.int(str(k)) for k in seeds_obj.value}
        if version == 1:
            return cls(
                obj.int("step"), tuple(obj.int_list("indices", 0, UINT63_MAX, MAX_BATCH)), seeds
            )
        items = obj.list("batches", MAX_MICRO)
        if not items:
            raise obj.fail("batches", "a step has at least one micro-batch")
        total = 0
        batches = []
        for pos, item in enumerate(items):
            inner = JsonObject({"b": item}, obj.what, obj._name(f"batches[{pos}]"))
            batch = inner.int_list("b", 0, UINT63_MAX, MAX_BATCH)
            total += len(batch)
            if total > MAX_BATCH:
                raise obj.fail("batches", f"more than {MAX_BATCH} indices in one step")
            batches.append(tuple(batch))
        return cls(obj.int("step"), seeds=seeds, batches=tuple(batches))


@dataclass(frozen=True)
class Segment(CanonicalRecord):
    """Segment ``index``: the steps ``start_step .. end_step - 1`` that lead from checkpoint
    ``index - 1`` to checkpoint ``index``."""

    index: int
    start_step: int
    end_step: int
    steps: tuple[SegmentStep, ...]

    def __post_init__(self) -> None:
        if self.index < 1:
            raise FormatError("segment", "segment indices start at 1", field="index")
        if len(self.steps) != self.end_step - self.start_step:
            raise FormatError(
                f"segment {self.index}",
                f"{len(self.steps)} steps between steps {self.start_step} and {self.end_step}",
                field="steps",
            )
        for pos, st in enumerate(self.steps):
            if st.step != self.start_step + pos:
                raise FormatError(
                    f"segment {self.index}",
                    f"step {st.step} out of order",
                    field=f"steps[{pos}].step",
                )

    @classmethod
    def of(cls, index: int, end_step: int, steps: Sequence[SegmentStep]) -> Segment:
        """The segment of ``steps`` ending at ``end_step``."""
        return cls(index, end_step - len(steps), end_step, tuple(steps))

    def to_json(self) -> JsonDict:
        """The JSON form (``polchain-segment-v2`` when a step has several micro-batches)."""
        v2 = any(not s.single for s in self.steps)
        return {
            "end_step": self.end_step,
            "format": SEGMENT_FORMAT_V2 if v2 else SEGMENT_FORMAT,
            "index": self.index,
            "start_step": self.start_step,
            "steps": [s.to_json() for s in self.steps],
        }

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "segment") -> Segment:
        """Parse segment bytes (canonical JSON, bounded, data only)."""
        return cls.from_json(parse_json(data, what, max_bytes=MAX_SEGMENT_BYTES), what)

    @classmethod
    def from_json(cls, value: Any, what: str = "segment") -> Segment:
        """Parse and validate a segment object."""
        obj = JsonObject(value, what)
        version = 2 if obj.format(SEGMENT_FORMAT, SEGMENT_FORMAT_V2) == SEGMENT_FORMAT_V2 else 1
        obj.only(("end_step", "format", "index", "start_step", "steps"))
        items = obj.list("steps", MAX_STEPS)
        steps = tuple(
            SegmentStep.from_json(JsonObject(s, what, f"steps[{i}]"), version)
            for i, s in enumerate(items)
        )
        try:
            return cls(obj.int("index", 1), obj.int("start_step"), obj.int("end_step"), steps)
        except FormatError as exc:
            raise FormatError(what, exc.detail, field=exc.field) from None

    def max_index(self) -> int:
        """The largest sample index used (-1 for a segment without samples)."""
        return max((max(s.indices) for s in self.steps if s.indices), default=-1)
