"""Run specification (PROTOCOL section 2): canonical JSON with one SHA-256 digest.

Shape (``format = "polchain-spec-v1"``)::

    {"config": {..., "batch_size": B, "epochs": E, "k": k},
     "dataset": {"leaf_rule": "polchain-sample-v1", "root": "0x..", "size": N},
     "environment": {...information only...},
     "format": "polchain-spec-v1",
     "init": {"kind": "seeded"} | {"kind": "parent", "model_digest": "0x.."},
     "task": {"entry": "module:function", "source_sha256": "0x.."}}

The run seed is *not* part of the spec: it is an input computed from the chain.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pol_chain.proof.canonical import canonical_json, from_hex, parse_canonical_json, sha256, to_hex
from pol_chain.proof.dataset import LEAF_RULE, DatasetCommitment, commit_dataset
from pol_chain.proof.errors import MalformedArtefactError, SpecError
from pol_chain.proof.task import resolve_task, task_source_sha256

__all__ = ["SPEC_FORMAT", "TaskSpec", "environment_facts", "make_spec"]

SPEC_FORMAT = "polchain-spec-v1"
_REQUIRED_CONFIG = ("batch_size", "epochs", "k")


def environment_facts(device: str = "cpu", deterministic: bool = True) -> dict[str, Any]:
    """Return library versions, device and determinism flags (information only)."""
    facts: dict[str, Any] = {
        "deterministic": deterministic,
        "device": device,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["cuda"] = torch.version.cuda
    return facts


@dataclass(frozen=True)
class TaskSpec:
    """A parsed, validated run spec; :attr:`digest` is SHA-256 of :meth:`to_bytes`."""

    entry: str
    source_sha256: bytes
    config: Mapping[str, Any]
    init: Mapping[str, Any]
    dataset: DatasetCommitment
    environment: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.entry:
            raise SpecError(f"task entry must be 'module:function', got {self.entry!r}")
        if len(self.source_sha256) != 32:
            raise SpecError("task.source_sha256 must be 32 bytes")
        for key in _REQUIRED_CONFIG:
            value = self.config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"config.{key} must be a positive integer, got {value!r}")
        kind = self.init.get("kind")
        if kind == "seeded":
            if set(self.init) != {"kind"}:
                raise SpecError("init {'kind': 'seeded'} takes no other field")
        elif kind == "parent":
            digest = self.init.get("model_digest")
            if not isinstance(digest, str) or len(_safe_hex(digest)) != 32:
                raise SpecError("init 'parent' needs model_digest (0x + 64 hex)")
        else:
            raise SpecError(f"init.kind must be 'seeded' or 'parent', got {kind!r}")
        if self.dataset.leaf_rule != LEAF_RULE:
            raise SpecError(f"unknown dataset leaf rule {self.dataset.leaf_rule!r}")
        try:
            canonical_json(dict(self.config))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"config is not canonical JSON: {exc}") from None

    @property
    def k(self) -> int:
        """Checkpoint interval in steps."""
        return int(self.config["k"])

    @property
    def batch_size(self) -> int:
        """Batch size."""
        return int(self.config["batch_size"])

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
        if self.init.get("kind") == "parent":
            return from_hex(str(self.init["model_digest"]))
        return None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object of the spec."""
        return {
            "config": dict(self.config),
            "dataset": self.dataset.to_json(),
            "environment": dict(self.environment),
            "format": SPEC_FORMAT,
            "init": dict(self.init),
            "task": {"entry": self.entry, "source_sha256": to_hex(self.source_sha256)},
        }

    def to_bytes(self) -> bytes:
        """Return the canonical bytes."""
        return canonical_json(self.to_json())

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes."""
        return sha256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskSpec:
        """Parse canonical spec bytes (data only); raise :class:`SpecError` if ill-formed."""
        try:
            value = parse_canonical_json(data, "spec")
        except MalformedArtefactError as exc:
            raise SpecError(str(exc)) from None
        return cls.from_json(value)

    @classmethod
    def from_json(cls, value: Any) -> TaskSpec:
        """Build from a JSON object; raise :class:`SpecError` if ill-formed."""
        try:
            if value["format"] != SPEC_FORMAT:
                raise SpecError(f"unknown spec format {value['format']!r}")
            extra = set(value) - {"config", "dataset", "environment", "format", "init", "task"}
            if extra:
                raise SpecError(f"unknown spec fields {sorted(extra)}")
            return cls(
                entry=str(value["task"]["entry"]),
                source_sha256=_safe_hex(value["task"]["source_sha256"]),
                config=dict(value["config"]),
                init=dict(value["init"]),
                dataset=DatasetCommitment.from_json(value["dataset"]),
                environment=dict(value.get("environment", {})),
            )
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"spec is missing or mistypes a field: {exc!r}") from None

    def check_source(self) -> None:
        """Raise :class:`SpecError` unless the task resolves and its local source hashes
        to the spec's."""
        resolve_task(self.entry)
        local = task_source_sha256(self.entry)
        if local != self.source_sha256:
            raise SpecError(
                f"task source of {self.entry} hashes to {to_hex(local)}, "
                f"spec commits {to_hex(self.source_sha256)}"
            )

    def replace(self, **changes: Any) -> TaskSpec:
        """Return a copy with fields replaced (``config`` merged key by key)."""
        fields = {
            "entry": self.entry,
            "source_sha256": self.source_sha256,
            "config": dict(self.config),
            "init": dict(self.init),
            "dataset": self.dataset,
            "environment": dict(self.environment),
        }
        if "config" in changes:
            fields["config"] = {**fields["config"], **changes.pop("config")}  # type: ignore[dict-item]
        fields.update(changes)
        return TaskSpec(**fields)  # type: ignore[arg-type]


def _safe_hex(text: Any) -> bytes:
    if not isinstance(text, str):
        raise SpecError(f"expected a hex string, got {type(text).__name__}")
    try:
        return from_hex(text)
    except ValueError:
        raise SpecError(f"not hex: {text!r}") from None


def make_spec(
    entry: str,
    config: Mapping[str, Any] | None = None,
    *,
    init: Mapping[str, Any] | None = None,
    device: str = "cpu",
    deterministic: bool = True,
) -> TaskSpec:
    """Build a spec for task ``entry``: merges the task's ``DEFAULT_CONFIG`` with ``config``,
    hashes the task source and commits to the dataset the task builds."""
    import sys

    fn = resolve_task(entry)
    defaults = getattr(sys.modules[fn.__module__], "DEFAULT_CONFIG", {})
    cfg = {**defaults, **dict(config or {})}
    bundle = fn(cfg, torch.device("cpu"))
    commitment, _ = commit_dataset(bundle.train_x, bundle.train_y)
    return TaskSpec(
        entry=entry,
        source_sha256=task_source_sha256(entry),
        config=cfg,
        init=dict(init or {"kind": "seeded"}),
        dataset=commitment,
        environment=environment_facts(device, deterministic),
    )
