"""The run spec: canonical JSON with one SHA-256 digest.

``polchain-spec-v2`` (what pol_chain registers)::

    {"config": {..., "batch_size": B, "epochs": E, "k": k[, "grad_accumulation": A]},
     "dataset": {"leaf_rule": "polchain-sample-v1", "root": "0x..", "size": N
                 [, "index": {"sha256": "0x..", "cid": ".."}]},
     "environment": {...information only...},
     "format": "polchain-spec-v2",
     "init": {"kind": "seeded"}
           | {"kind": "parent", "model_digest": "0x..", "run_id": "0x..", "model_cid": ".."},
     "task": {"entry": "module:function", "bundle": {"sha256": "0x..", "size": n, "cid": ".."}}}

The task's code is the committed **code bundle** (its digest here); a dataset with an
``index`` is a committed sharded dataset, one without is built by the task's code. A
parent names the finalized run (``run_id``) and where its model lies (``model_cid``);
CIDs are locators only: what is fetched is checked against the digests.

``polchain-spec-v1`` (read, never written): ``"task": {"entry", "source_sha256"}`` — the
SHA-256 of the entry module's source file, verifiable only where that module is
installed — and ``init`` parent with ``model_digest`` alone.

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
    parse_json,
    to_hex,
)
from pol_chain.format.errors import FormatError, SpecError
from pol_chain.format.names import SAMPLE_LEAF_RULE, SPEC_FORMAT, SPEC_FORMAT_V1

__all__ = ["ACCUMULATION", "DatasetCommitment", "InitRule", "Locator", "TaskSpec"]

_REQUIRED_CONFIG = ("batch_size", "epochs", "k")
ACCUMULATION = "grad_accumulation"
"""Config key: micro-batches per optimizer step (default 1); ``batch_size`` counts all."""
MAX_SPEC_BYTES = 1 << 20
MAX_TOTAL_STEPS = 1 << 40
"""The most optimizer steps a run may plan (far beyond any run; bounds what a spec makes
a verifier or the recorder count)."""
MAX_CID = 200


def _split_entry(entry: str) -> tuple[str, str]:
    module, sep, func = entry.partition(":")
    parts = module.split(".")
    if not sep or not func.isidentifier() or not all(p.isidentifier() for p in parts):
        raise SpecError(
            f"task entry point must be 'module:function', got {entry!r}", field="task.entry"
        )
    return module, func


@dataclass(frozen=True)
class Locator:
    """A committed artefact the spec refers to: its SHA-256, size, and (a locator only)
    its CID."""

    sha256: bytes
    cid: str | None = None
    size: int | None = None

    def to_json(self) -> JsonDict:
        """The JSON form."""
        out: JsonDict = {"sha256": to_hex(self.sha256)}
        if self.cid is not None:
            out["cid"] = self.cid
        if self.size is not None:
            out["size"] = self.size
        return out

    @classmethod
    def from_json(cls, obj: JsonObject) -> Locator:
        """Parse a locator object."""
        obj.only(("sha256",), ("cid", "size"))
        size = obj.int("size", 0, 1 << 40) if obj.has("size") else None
        return cls(obj.digest("sha256"), obj.opt_str("cid", MAX_CID), size)


@dataclass(frozen=True)
class DatasetCommitment:
    """Root, size and leaf rule of a committed dataset (the spec's ``dataset``); ``index``
    locates a committed sharded dataset (none: the task's code builds the data)."""

    root: bytes
    size: int
    leaf_rule: str = SAMPLE_LEAF_RULE
    index: Locator | None = None

    def __post_init__(self) -> None:
        if len(self.root) != 32:
            raise SpecError("must be 32 bytes", field="dataset.root")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise SpecError(f"must be a size, got {self.size!r}", field="dataset.size")
        if self.leaf_rule != SAMPLE_LEAF_RULE:
            raise SpecError(
                f"unknown dataset leaf rule {self.leaf_rule!r}", field="dataset.leaf_rule"
            )

    @property
    def sharded(self) -> bool:
        """Whether the samples are committed shards (not built by the task's code)."""
        return self.index is not None

    def to_json(self) -> JsonDict:
        """The JSON form used in the spec."""
        out: JsonDict = {"leaf_rule": self.leaf_rule, "root": to_hex(self.root), "size": self.size}
        if self.index is not None:
            out["index"] = self.index.to_json()
        return out

    @classmethod
    def from_json(
        cls, value: Any, what: str = "spec", path: str = "dataset", version: int = 2
    ) -> DatasetCommitment:
        """Parse the spec's ``dataset`` object."""
        obj = JsonObject(value, what, path)
        obj.only(("leaf_rule", "root", "size"), ("index",) if version >= 2 else ())
        index = obj.opt_obj("index")
        return cls(
            root=obj.digest("root"),
            size=obj.int("size"),
            leaf_rule=obj.str("leaf_rule", 64),
            index=None if index is None else Locator.from_json(index),
        )


@dataclass(frozen=True)
class InitRule:
    """How W0 is made: ``seeded`` (from the run seed) or ``parent`` (a finalized model:
    its digest, the run that claims it and where it lies)."""

    kind: str = "seeded"
    model_digest: bytes | None = None
    run_id: bytes | None = None
    model_cid: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "seeded":
            if self.model_digest is not None or self.run_id is not None:
                raise SpecError("init 'seeded' takes no parent", field="init.model_digest")
        elif self.kind == "parent":
            if self.model_digest is None or len(self.model_digest) != 32:
                raise SpecError(
                    "init 'parent' needs model_digest (0x + 64 hex)", field="init.model_digest"
                )
            if self.run_id is not None and len(self.run_id) != 32:
                raise SpecError("must be 32 bytes", field="init.run_id")
        else:
            raise SpecError(
                f"init.kind must be 'seeded' or 'parent', got {self.kind!r}", field="init.kind"
            )

    @classmethod
    def parent(
        cls, model_digest: bytes, run_id: bytes | None = None, model_cid: str | None = None
    ) -> InitRule:
        """W0 is the parent model with this digest (claimed by run ``run_id``)."""
        return cls("parent", bytes(model_digest), run_id, model_cid)

    def to_json(self) -> JsonDict:
        """The JSON form used in the spec."""
        if self.kind == "parent":
            assert self.model_digest is not None
            out: JsonDict = {"kind": "parent", "model_digest": to_hex(self.model_digest)}
            if self.run_id is not None:
                out["run_id"] = to_hex(self.run_id)
            if self.model_cid is not None:
                out["model_cid"] = self.model_cid
            return out
        return {"kind": "seeded"}

    @classmethod
    def from_json(cls, value: Any, what: str = "spec", version: int = 2) -> InitRule:
        """Parse the spec's ``init`` object."""
        obj = JsonObject(value, what, "init")
        kind = obj.str("kind", 16)
        if kind == "parent":
            obj.only(("kind", "model_digest"), ("run_id", "model_cid") if version >= 2 else ())
            return cls.parent(
                obj.digest("model_digest"),
                obj.opt_digest("run_id"),
                obj.opt_str("model_cid", MAX_CID),
            )
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


def engine_config_problem(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first engine key of ``config`` (batch size, epochs, k, accumulation) that is
    not a positive integer, with what is wrong; None when all are."""
    for key in (*_REQUIRED_CONFIG, ACCUMULATION):
        value = config.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return key, f"must be a positive integer, got {value!r}"
    return None


@dataclass(frozen=True)
class TaskSpec(CanonicalRecord):
    """A parsed, validated run spec; :attr:`digest` is SHA-256 of :meth:`to_bytes`.

    ``bundle`` locates the committed code bundle (v2); a v1 spec has ``source_sha256``
    (the entry module's source file) instead.
    """

    entry: str
    config: Mapping[str, Any]
    init: InitRule
    dataset: DatasetCommitment
    environment: Mapping[str, Any] = field(default_factory=dict)
    bundle: Locator | None = None
    source_sha256: bytes | None = None

    def __post_init__(self) -> None:
        _split_entry(self.entry)
        if (self.bundle is None) == (self.source_sha256 is None):
            raise SpecError(
                "a spec names its code bundle (v2) or its source digest (v1)", field="task"
            )
        if self.source_sha256 is not None and len(self.source_sha256) != 32:
            raise SpecError("must be 32 bytes", field="task.source_sha256")
        object.__setattr__(self, "init", InitRule.coerce(self.init))
        if self.version == 1 and (self.init.run_id or self.init.model_cid or self.dataset.index):
            raise SpecError("a v1 spec has no locators", field="init")
        problem = engine_config_problem(self.config)
        if problem is not None:
            raise SpecError(problem[1], field=f"config.{problem[0]}")
        if self.batch_size % self.accumulation:
            raise SpecError(
                f"batch_size {self.batch_size} is not a multiple of {self.accumulation} "
                "micro-batches",
                field=f"config.{ACCUMULATION}",
            )
        if not 1 <= self.total_steps <= MAX_TOTAL_STEPS:
            raise SpecError(
                f"plans {self.total_steps} optimizer steps ({self.epochs} epochs of "
                f"{self.dataset.size} samples in batches of {self.batch_size}); a run trains "
                f"1 to {MAX_TOTAL_STEPS}",
                field="config.batch_size" if self.total_steps < 1 else "config.epochs",
            )
        from pol_chain.format._json import canonical_json

        for name, value in (("config", self.config), ("environment", self.environment)):
            try:
                canonical_json(dict(value))
            except (TypeError, ValueError) as exc:
                raise SpecError(f"is not canonical JSON: {exc}", field=name) from None

    @property
    def version(self) -> int:
        """1 for a v1 spec (source digest), 2 for one with a code bundle."""
        return 1 if self.source_sha256 is not None else 2

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
        """Samples per optimizer step (all its micro-batches)."""
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
        """The JSON object of the spec (v1 for a v1 spec, else v2)."""
        task: JsonDict = {"entry": self.entry}
        if self.bundle is not None:
            task["bundle"] = self.bundle.to_json()
        else:
            assert self.source_sha256 is not None
            task["source_sha256"] = to_hex(self.source_sha256)
        return {
            "config": dict(self.config),
            "dataset": self.dataset.to_json(),
            "environment": dict(self.environment),
            "format": SPEC_FORMAT if self.version == 2 else SPEC_FORMAT_V1,
            "init": self.init.to_json(),
            "task": task,
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
        """Build from a JSON object (v1 or v2); :class:`SpecError` naming the field."""
        try:
            obj = JsonObject(value, "spec")
            version = 1 if obj.format(SPEC_FORMAT, SPEC_FORMAT_V1) == SPEC_FORMAT_V1 else 2
            obj.only(("config", "dataset", "format", "init", "task"), ("environment",))
            task = obj.obj("task")
            if version == 1:
                task.only(("entry", "source_sha256"))
            else:
                task.only(("bundle", "entry"))
            return cls(
                entry=task.str("entry", 512),
                config=obj.mapping("config"),
                init=InitRule.from_json(obj.raw("init"), version=version),
                dataset=DatasetCommitment.from_json(obj.raw("dataset"), version=version),
                environment=obj.mapping("environment") if obj.has("environment") else {},
                bundle=Locator.from_json(task.obj("bundle")) if version == 2 else None,
                source_sha256=task.digest("source_sha256") if version == 1 else None,
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
