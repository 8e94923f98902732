"""What crosses the sandbox boundary (``polchain-sandbox-v1``): the request a verifier
writes for the sandboxed child that runs a proof's task code, and the status the child
writes back. Both are canonical JSON; states cross as safetensors files beside them.
The status is written by a process that ran untrusted code, so it is parsed like any
untrusted artefact (bounded, typed, unknown fields refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pol_chain.format._json import CanonicalRecord, JsonDict, JsonObject, parse_json, to_hex
from pol_chain.format.names import SANDBOX_FORMAT

__all__ = ["ChildError", "SandboxJob", "SandboxRequest", "SandboxStatus"]

PHASES = ("init", "replay")
ERROR_KINDS = ("code", "memory", "import", "format", "time", "data")


@dataclass(frozen=True)
class ChildError:
    """Why the child failed: ``kind`` is ``code`` (the task's code raised), ``memory``,
    ``import`` (a library missing here), ``format`` (the proof's data is malformed),
    ``time`` or ``data`` (the code read a dataset shard the verifier did not hand in:
    the message is its number, and the verifier runs again with it)."""

    kind: str
    type: str
    message: str

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"kind": self.kind, "message": self.message, "type": self.type}

    @classmethod
    def from_json(cls, obj: JsonObject) -> ChildError:
        """Parse an error object."""
        obj.only(("kind", "message", "type"))
        kind = obj.str("kind", 16)
        if kind not in ERROR_KINDS:
            raise obj.fail("kind", f"unknown error kind {kind!r}")
        return cls(kind, obj.str("type", 200), obj.str("message", 4000))


@dataclass(frozen=True)
class SandboxJob:
    """Replay segment ``index`` from ``start-<index>.safetensors`` over
    ``segment-<index>.json``."""

    index: int

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"index": self.index}


@dataclass(frozen=True)
class SandboxRequest(CanonicalRecord):
    """One run of the child: ``init`` (W0 and the dataset's leaves) or ``replay``."""

    phase: str
    run_seed: bytes
    device: str = "cpu"
    deterministic: bool = True
    threads: int | None = None
    parent: bool = False
    jobs: tuple[SandboxJob, ...] = ()

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "deterministic": self.deterministic,
            "device": self.device,
            "format": SANDBOX_FORMAT,
            "jobs": [j.to_json() for j in self.jobs],
            "parent": self.parent,
            "phase": self.phase,
            "run_seed": to_hex(self.run_seed),
            "threads": self.threads,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> SandboxRequest:
        """Parse request bytes."""
        obj = JsonObject(parse_json(data, "sandbox request", max_bytes=1 << 20), "sandbox request")
        obj.format(SANDBOX_FORMAT)
        obj.only(
            ("deterministic", "device", "format", "jobs", "parent", "phase", "run_seed", "threads")
        )
        phase = obj.str("phase", 16)
        if phase not in PHASES:
            raise obj.fail("phase", f"unknown phase {phase!r}")
        jobs = tuple(
            SandboxJob(
                JsonObject(j, "sandbox request", f"jobs[{i}]").only(("index",)).int("index", 1)
            )
            for i, j in enumerate(obj.list("jobs", 1 << 16))
        )
        threads = obj.int("threads", 1, 1024) if obj.has("threads") else None
        return cls(
            phase,
            obj.digest("run_seed"),
            obj.str("device", 32),
            obj.bool("deterministic"),
            threads,
            obj.bool("parent"),
            jobs,
        )


@dataclass(frozen=True)
class SandboxStatus(CanonicalRecord):
    """What the child reports: whether the phase ran, the dataset size (init), and each
    replay job's error if it had one."""

    ok: bool
    error: ChildError | None = None
    size: int | None = None
    jobs: Mapping[int, ChildError | None] = field(default_factory=dict)

    def to_json(self) -> JsonDict:
        """The JSON form."""
        jobs: dict[str, Any] = {
            str(i): None if e is None else e.to_json() for i, e in sorted(self.jobs.items())
        }
        return {
            "error": None if self.error is None else self.error.to_json(),
            "format": SANDBOX_FORMAT,
            "jobs": jobs,
            "ok": self.ok,
            "size": self.size,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> SandboxStatus:
        """Parse status bytes (written by the sandboxed child: untrusted)."""
        obj = JsonObject(parse_json(data, "sandbox status", max_bytes=1 << 20), "sandbox status")
        obj.format(SANDBOX_FORMAT)
        obj.only(("error", "format", "jobs", "ok", "size"))
        error = obj.opt_obj("error")
        jobs_obj = obj.obj("jobs")
        jobs: dict[int, ChildError | None] = {}
        for key in jobs_obj.value:
            if not key.isdigit():
                raise jobs_obj.fail(key, "job keys are segment indices")
            item = jobs_obj.opt_obj(key)
            jobs[int(key)] = None if item is None else ChildError.from_json(item)
        size = obj.int("size", 0, 1 << 40) if obj.has("size") else None
        return cls(
            obj.bool("ok"), None if error is None else ChildError.from_json(error), size, jobs
        )
