"""The verification report (``polchain-report-v2``; v1 still parses): canonical JSON,
its digest on-chain.

Shape::

    {"bitwise_identical": bool, "challenge_seed": "0x..",
     "checks": {name: {"details": [..], "ok": bool}}, "environment": {...},
     "finalized": bool, "format", "last_index": int, "model_digest": "0x.." | null,
     "policy": {...}, "reasons": [Reason...], "run_id": "0x..",
     "segments": [{"bitwise_identical", "end_step", "index", "metrics": METRICS | null,
                   "passed", "reasons": [Reason...], "selected_by": [..], "start_step"}],
     "spec_sha256": "0x.." | null, "thresholds": {"c", "rho"}, "verdict": "pass" | "fail"}
    METRICS = {"cosine", "cosine_distance", "direction_cosine", "l1", "l2", "linf",
               "normalized_error", "update_norm"}   (numbers, or null when not finite)

The same record serves a full verification and a failure found before any replay (a
proof that cannot be fetched or parsed): then ``segments`` is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pol_chain.format._json import (
    CanonicalRecord,
    JsonDict,
    JsonObject,
    parse_json,
    to_hex,
)
from pol_chain.format.errors import FormatError
from pol_chain.format.names import REPORT_FORMAT, REPORT_FORMAT_V1
from pol_chain.format.reasons import V1_REASONS, Reason

__all__ = ["Check", "Metrics", "Report", "SegmentResult", "Thresholds"]

MAX_DETAILS = 20
MAX_REPORT_BYTES = 64 << 20
PASS, FAIL = "pass", "fail"


def _reasons(obj: JsonObject, key: str) -> tuple[Reason, ...]:
    out = []
    for pos, code in enumerate(obj.str_list(key, 64, 64)):
        try:
            out.append(Reason(code))
        except ValueError:
            raise obj.fail(f"{key}[{pos}]", f"unknown reason {code!r}") from None
    return tuple(out)


@dataclass(frozen=True)
class Metrics:
    """Distances of a replayed state W' from the claimed W_{i+1} (full state)."""

    cosine: float | None
    cosine_distance: float | None
    direction_cosine: float | None
    l1: float | None
    l2: float | None
    linf: float | None
    normalized_error: float | None
    update_norm: float | None

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, obj: JsonObject) -> Metrics:
        """Parse a metrics object."""
        names = [f.name for f in fields(cls)]
        obj.only(names)
        return cls(**{n: obj.opt_number(n) for n in names})


@dataclass(frozen=True)
class SegmentResult:
    """The replay of one segment and its verdict."""

    index: int
    start_step: int
    end_step: int
    selected_by: tuple[str, ...]
    metrics: Metrics | None
    bitwise_identical: bool
    passed: bool
    reasons: tuple[Reason, ...] = ()

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "bitwise_identical": self.bitwise_identical,
            "end_step": self.end_step,
            "index": self.index,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
            "passed": self.passed,
            "reasons": [r.value for r in self.reasons],
            "selected_by": list(self.selected_by),
            "start_step": self.start_step,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> SegmentResult:
        """Parse a segment result."""
        obj.only(
            (
                "bitwise_identical",
                "end_step",
                "index",
                "metrics",
                "passed",
                "reasons",
                "selected_by",
                "start_step",
            )
        )
        metrics = obj.opt_obj("metrics")
        return cls(
            index=obj.int("index"),
            start_step=obj.int("start_step"),
            end_step=obj.int("end_step"),
            selected_by=tuple(obj.str_list("selected_by", 16, 32)),
            metrics=None if metrics is None else Metrics.from_json(metrics),
            bitwise_identical=obj.bool("bitwise_identical"),
            passed=obj.bool("passed"),
            reasons=_reasons(obj, "reasons"),
        )


@dataclass(frozen=True)
class Check:
    """One check of the verification and what it found."""

    ok: bool = True
    details: tuple[str, ...] = ()

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"details": list(self.details), "ok": self.ok}

    @classmethod
    def from_json(cls, obj: JsonObject) -> Check:
        """Parse a check."""
        obj.only(("details", "ok"))
        return cls(obj.bool("ok"), tuple(obj.str_list("details", MAX_DETAILS, 2000)))


@dataclass(frozen=True)
class Thresholds:
    """The acceptance thresholds applied: max normalized error ρ, min direction cosine c."""

    rho: float
    c: float

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"c": self.c, "rho": self.rho}


@dataclass(frozen=True)
class Report(CanonicalRecord):
    """A finished verification; :attr:`digest` is what goes on-chain."""

    run_id: bytes
    challenge_seed: bytes
    verdict: str
    reasons: tuple[Reason, ...]
    checks: Mapping[str, Check]
    segments: tuple[SegmentResult, ...]
    thresholds: Thresholds
    policy: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    spec_sha256: bytes | None = None
    model_digest: bytes | None = None
    finalized: bool = False
    last_index: int = -1
    bitwise_identical: bool = False

    def __post_init__(self) -> None:
        if self.verdict not in (PASS, FAIL):
            raise FormatError(
                "report", f"verdict must be pass or fail, got {self.verdict!r}", field="verdict"
            )
        if self.verdict == PASS and (self.reasons or not self.segments):
            raise FormatError(
                "report", "a pass has replayed segments and no reasons", field="verdict"
            )

    @classmethod
    def build(
        cls,
        *,
        reasons: Iterable[Reason],
        segments: Iterable[SegmentResult] = (),
        **values: Any,
    ) -> Report:
        """A report whose verdict follows from its reasons and segments (pass only with
        replayed segments and no reason)."""
        codes = tuple(sorted(set(reasons), key=lambda r: r.value))
        segs = tuple(segments)
        return cls(
            verdict=PASS if not codes and segs else FAIL,
            reasons=codes,
            segments=segs,
            bitwise_identical=bool(segs) and all(s.bitwise_identical for s in segs),
            **values,
        )

    @property
    def passed(self) -> bool:
        """Whether the verdict is ``pass``."""
        return self.verdict == PASS

    @property
    def reason_codes(self) -> list[str]:
        """The reason codes as strings."""
        return [r.value for r in self.reasons]

    def segment(self, index: int) -> SegmentResult | None:
        """The result of replayed segment ``index``, if replayed."""
        return next((s for s in self.segments if s.index == index), None)

    def failed_segments(self) -> dict[int, SegmentResult]:
        """``{index: result}`` of the replayed segments that failed."""
        return {s.index: s for s in self.segments if not s.passed}

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "bitwise_identical": self.bitwise_identical,
            "challenge_seed": to_hex(self.challenge_seed),
            "checks": {name: c.to_json() for name, c in self.checks.items()},
            "environment": dict(self.environment),
            "finalized": self.finalized,
            "format": REPORT_FORMAT,
            "last_index": self.last_index,
            "model_digest": None if self.model_digest is None else to_hex(self.model_digest),
            "policy": dict(self.policy),
            "reasons": [r.value for r in self.reasons],
            "run_id": to_hex(self.run_id),
            "segments": [s.to_json() for s in self.segments],
            "spec_sha256": None if self.spec_sha256 is None else to_hex(self.spec_sha256),
            "thresholds": self.thresholds.to_json(),
            "verdict": self.verdict,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        """Parse report bytes (canonical JSON, bounded)."""
        return cls.from_json(parse_json(data, "report", max_bytes=MAX_REPORT_BYTES))

    @classmethod
    def from_json(cls, value: Any) -> Report:
        """Parse and validate a report object."""
        obj = JsonObject(value, "report")
        v1 = obj.format(REPORT_FORMAT, REPORT_FORMAT_V1) == REPORT_FORMAT_V1
        obj.only(
            (
                "bitwise_identical",
                "challenge_seed",
                "checks",
                "environment",
                "finalized",
                "format",
                "last_index",
                "model_digest",
                "policy",
                "reasons",
                "run_id",
                "segments",
                "spec_sha256",
                "thresholds",
                "verdict",
            )
        )
        checks = obj.obj("checks")
        thresholds = obj.obj("thresholds").only(("c", "rho"))
        reasons = _reasons(obj, "reasons")
        if v1 and not set(reasons) <= V1_REASONS:
            raise obj.fail("reasons", "a v1 report cannot carry a v2 reason")
        return cls(
            run_id=obj.digest("run_id"),
            challenge_seed=obj.digest("challenge_seed"),
            verdict=obj.str("verdict", 8),
            reasons=reasons,
            checks={name: Check.from_json(checks.obj(name)) for name in checks.value},
            segments=tuple(
                SegmentResult.from_json(JsonObject(s, "report", f"segments[{i}]"))
                for i, s in enumerate(obj.list("segments", 1 << 16))
            ),
            thresholds=Thresholds(thresholds.number("rho"), thresholds.number("c")),
            policy=obj.mapping("policy"),
            environment=obj.mapping("environment"),
            spec_sha256=obj.opt_digest("spec_sha256"),
            model_digest=obj.opt_digest("model_digest"),
            finalized=obj.bool("finalized"),
            last_index=obj.int("last_index", -1),
            bitwise_identical=obj.bool("bitwise_identical"),
        )
