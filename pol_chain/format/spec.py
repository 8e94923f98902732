"""The run spec (``polchain-spec-v1``): canonical JSON with one SHA-256 digest.

Shape::

    {"config": {..., "batch_size": B, "epochs": E, "k": k},
     "dataset": {"leaf_rule": "polchain-sample-v1", "root": "0x..", "size": N},
     "environment": {...information only...},
     "format": "polchain-spec-v1",
     "init": {"kind": "seeded"} | {"kind": "parent", "model_digest": "0x.."},
     "task": {"entry": "module:function", "source_sha256": "0x.."}}

The run seed is *not* part of the spec: a verifier computes it from the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pol_chain.format._json import (
    CanonicalRecord,
    JsonDict,
    JsonObject,
    canonical_json,
    parse_json,
    to_hex,
)
from pol_chain.format.errors import FormatError, SpecError
from pol_chain.format.names import SAMPLE_LEAF_RULE, SPEC_FORMAT

__all__ = ["ACCUMULATION", "DatasetCommitment", "InitRule", "TaskSpec"]

_REQUIRED_CONFIG = ("batch_size", "epochs", "k")
ACCUMULATION = "grad_accumulation"
"""Config key: micro-batches per optimizer step (default 1); ``batch_size`` counts all."""
MAX_SPEC_BYTES = 1 << 20


def _split_entry(entry: str) -> tuple[str, str]:
    module, sep, func = entry.partition(":")
    parts = module.split(".")
    if not sep or not func.isidentifier() or not all(p.isidentifier() for p in parts):
        raise SpecError(
            f"task entry point must be 'module:function', got {entry!r}", field="task.entry"
        )
    return module, func


@dataclass(frozen=True)
class DatasetCommitment:
    """Root, size and leaf rule of a committed dataset (the spec's ``dataset``)."""

    root: bytes
    size: int
    leaf_rule: str = SAMPLE_LEAF_RULE

    def __post_init__(self) -> None:
        if len(self.root) != 32:
            raise SpecError("must be 32 bytes", field="dataset.root")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise SpecError(f"must be a size, got {self.size!r}", field="dataset.size")
        if self.leaf_rule != SAMPLE_LEAF_RULE:
            raise SpecError(
                f"unknown dataset leaf rule {self.leaf_rule!r}", field="dataset.leaf_rule"
            )

    def to_json(self) -> JsonDict:
        """The JSON form used in the spec."""
        return {"leaf_rule": self.leaf_rule, "root": to_hex(self.root), "size": self.size}

    @classmethod
    def from_json(cls, value: Any, what: str = "spec", path: str = "dataset") -> DatasetCommitment:
        """Parse the spec's ``dataset`` object."""
        obj = JsonObject(value, what, path).only(("leaf_rule", "root", "size"))
        return cls(
            root=obj.digest("root"), size=obj.int("size"), leaf_rule=obj.str("leaf_rule", 64)
        )


@dataclass(frozen=True)
class InitRule:
    """How W0 is made: ``seeded`` (from the run seed) or ``parent`` (a committed model)."""

    kind: str = "seeded"
    model_digest: bytes | None = None

    def __post_init__(self) -> None:
        if self.kind == "seeded":
            if self.model_digest is not None:
                raise SpecError("init 'seeded' takes no model digest", field="init.model_digest")
        elif self.kind == "parent":
            if self.model_digest is None or len(self.model_digest) != 32:
                raise SpecError(
                    "init 'parent' needs model_digest (0x + 64 hex)", field="init.model_digest"
                )
        else:
            raise SpecError(
                f"init.kind must be 'seeded' or 'parent', got {self.kind!r}", field="init.kind"
            )

    @classmethod
    def parent(cls, model_digest: bytes) -> InitRule:
        """W0 is the parent model with this digest."""
        return cls("parent", bytes(model_digest))

    def to_json(self) -> JsonDict:
        """The JSON form used in the spec."""
        if self.kind == "parent":
            assert self.model_digest is not None
            return {"kind": "parent", "model_digest": to_hex(self.model_digest)}
        return {"kind": "seeded"}

    @classmethod
    def from_json(cls, value: Any, what: str = "spec") -> InitRule:
        """Parse the spec's ``init`` object."""
        obj = JsonObject(value, what, "init")
        kind = obj.str("kind", 16)
        if kind == "parent":
            obj.only(("kind", "model_digest"))
            return cls.parent(obj.digest("model_digest"))
        if kind == "seeded":
            obj.only(("kind",))
        return cls(kind)

    @classmethod
    def coerce(cls, value: InitRule | Mapping[str, Any] | None) -> InitRule:
        """An :class:`InitRule` from itself, its JSON form or None (seeded)."""
        if value is None:
            return cls()
        if isinstance(value, InitRule):
            return value
        return cls.from_json(dict(value))


@dataclass(frozen=True)
class TaskSpec(CanonicalRecord):
    """A parsed, validated run spec; :attr:`digest` is SHA-256 of :meth:`to_bytes`."""

    entry: str
    source_sha256: bytes
    config: Mapping[str, Any]
    init: InitRule
    dataset: DatasetCommitment
    environment: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _split_entry(self.entry)
        if not isinstance(self.source_sha256, bytes) or len(self.source_sha256) != 32:
            raise SpecError("must be 32 bytes", field="task.source_sha256")
        object.__setattr__(self, "init", InitRule.coerce(self.init))
        for key in (*_REQUIRED_CONFIG, ACCUMULATION):
            value = self.config.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"must be a positive integer, got {value!r}", field=f"config.{key}")
        if self.batch_size % self.accumulation:
            raise SpecError(
                f"batch_size {self.batch_size} is not a multiple of {self.accumulation} "
                "micro-batches",
                field=f"config.{ACCUMULATION}",
            )
        for name, value in (("config", self.config), ("environment", self.environment)):
            try:
                canonical_json(dict(value))
            except (TypeError, ValueError) as exc:
                raise SpecError(f"is not canonical JSON: {exc}", field=name) from None

    @property
    def module(self) -> str:
        """The task's module name."""
        return _split_entry(self.entry)[0]

    @property
    def k(self) -> int:
        """Checkpoint interval in steps."""
        return int(self.config["k"])

    @property
    def batch_size(self) -> int:
        """Batch size."""
        return int(self.config["batch_size"])

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step (gradient accumulation)."""
        return int(self.config.get(ACCUMULATION, 1))

    @property
    def micro_batch_size(self) -> int:
        """Samples per micro-batch."""
        return self.batch_size // self.accumulation

    @property
    def epochs(self) -> int:
        """Number of epochs."""
        return int(self.config["epochs"])

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last partial batch is dropped)."""
        return self.dataset.size // self.batch_size

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    @property
    def parent_digest(self) -> bytes | None:
        """The parent model digest for ``init.kind == 'parent'``, else ``None``."""
        return self.init.model_digest

    def to_json(self) -> JsonDict:
        """The JSON object of the spec."""
        return {
            "config": dict(self.config),
            "dataset": self.dataset.to_json(),
            "environment": dict(self.environment),
            "format": SPEC_FORMAT,
            "init": self.init.to_json(),
            "task": {"entry": self.entry, "source_sha256": to_hex(self.source_sha256)},
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskSpec:
        """Parse canonical spec bytes (data only); :class:`SpecError` if ill-formed."""
        try:
            value = parse_json(data, "spec", max_bytes=MAX_SPEC_BYTES)
        except FormatError as exc:
            raise SpecError(exc.detail, field=exc.field) from None
        return cls.from_json(value)

    @classmethod
    def from_json(cls, value: Any) -> TaskSpec:
        """Build from a JSON object; :class:`SpecError` naming the field if ill-formed."""
        try:
            obj = JsonObject(value, "spec")
            obj.format(SPEC_FORMAT)
            obj.only(("config", "dataset", "format", "init", "task"), ("environment",))
            task = obj.obj("task").only(("entry", "source_sha256"))
            return cls(
                entry=task.str("entry", 512),
                source_sha256=task.digest("source_sha256"),
                config=obj.mapping("config"),
                init=InitRule.from_json(obj.raw("init")),
                dataset=DatasetCommitment.from_json(obj.raw("dataset")),
                environment=obj.mapping("environment") if obj.has("environment") else {},
            )
        except SpecError:
            raise
        except FormatError as exc:
            raise SpecError(exc.detail, field=exc.field) from None

    def replace(self, **changes: Any) -> TaskSpec:
        """A copy with fields replaced (``config`` merged key by key)."""
        if "config" in changes:
            changes["config"] = {**dict(self.config), **dict(changes["config"])}
        if "init" in changes:
            changes["init"] = InitRule.coerce(changes["init"])
        return replace(self, **changes)
