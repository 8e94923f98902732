"""Distributed training across untrusted workers: the plan, the round artefacts and the
run's manifest (``docs/distributed.md``, ``docs/protocol.md`` §8).

A distributed run is a standard run spec whose config carries a **plan**
(``config["distributed"]``, ``polchain-distributed-plan-v1``): workers N, local steps H,
rounds R, the check probability p, the exclusion threshold, whether the coordinator
verifies at all, and the torch thread count every replay uses. Its on-chain leaves are
the fixed leaf of :mod:`pol_chain.commitment`, in this order::

    leaf 0       leaf(runId, 0,    0,   W0,           0)            W0 (seeded init)
    leaf 2r - 1  leaf(runId, 2r-1, r*H, 0,            submissions)  round r's submissions
    leaf 2r      leaf(runId, 2r,   r*H, global_r,     round record) round r's outcome

so every leaf is recomputed from the manifest's digests and the leaves fold to the
on-chain accumulator like any other run's. Leaf 2r-1 is committed *before* the
coordinator draws which workers to replay (the draw's seed is the hash of the block that
mined it); leaf 2r after the checks and the aggregation.

Records (canonical JSON, bounded parsers)::

    submissions (polchain-submissions-v1):
      {"base_sha256", "end_step", "format", "round", "start_step",
       "workers": [{"rank", "segment_sha256": D|null, "state_sha256": D|null,
                    "status": "submitted"|"missing"|"excluded"}]}
    round record (polchain-round-v1):
      {"aggregation": "mean", "base_sha256", "draw": DRAW, "end_step", "excluded": [rank],
       "format", "round", "start_step", "submissions_sha256",
       "workers": [{"checked_by": [why], "detail", "metrics": METRICS|null, "rank",
                    "reasons": [Reason], "status": "accepted"|"rejected"|"missing"|"excluded"}]}
      DRAW = {"block", "block_hash", "picked": [rank], "probability", "seed"}
    manifest (polchain-rounds-manifest-v1):
      {"artefacts": [REF], "entries": [{"checkpoint": REF|null, "index", "leaf",
       "record": REF|null, "step"}], "final": null|{"index", "model": REF, "step"},
       "format", "run_id", "spec_sha256"[, "spec_cid"]}

A worker's state is a checkpoint (``polchain-checkpoint-v1``) and its segment a standard
segment (``polchain-segment-v1``, index = round); the manifest's ``artefacts`` locate
them (and carry their CIDs in the published form).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pol_chain.format._json import (
    CanonicalRecord,
    JsonDict,
    JsonObject,
    parse_json,
    to_hex,
)
from pol_chain.format.errors import FormatError
from pol_chain.format.manifest import MAX_CID, ArtefactRef, FinalModel, Manifest
from pol_chain.format.names import (
    HELLO_FORMAT,
    PLAN_FORMAT,
    ROUND_FORMAT,
    ROUNDS_MANIFEST_FORMAT,
    SUBMISSIONS_FORMAT,
)
from pol_chain.format.reasons import Reason
from pol_chain.format.report import Metrics

__all__ = [
    "ACCEPTED",
    "CHECK_REASONS",
    "EXCLUDED",
    "MISSING",
    "REJECTED",
    "SUBMITTED",
    "Draw",
    "DistributedPlan",
    "Hello",
    "RoundRecord",
    "RoundsEntry",
    "RoundsManifest",
    "Submissions",
    "WorkerSubmission",
    "WorkerVerdict",
    "global_name",
    "parse_any_manifest",
    "round_record_name",
    "submissions_name",
    "worker_segment_name",
    "worker_state_name",
]

PLAN_KEY = "distributed"
AGGREGATION = "mean"
MAX_WORKERS = 4096
MAX_ROUNDS = 1 << 20
MAX_RECORD_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 1 << 30
MAX_DETAIL = 500

SUBMITTED, MISSING, EXCLUDED = "submitted", "missing", "excluded"
ACCEPTED, REJECTED = "accepted", "rejected"
CHECK_REASONS = ("random", "norm", "direction", "duplicate")
"""Why a submission was replayed: drawn at random, or an outlying update (its norm, its
direction, or a near copy of another update)."""


def submissions_name(round_: int) -> str:
    """Relative path of round ``round_``'s submissions record."""
    return f"rounds/{round_:06d}/submissions.json"


def round_record_name(round_: int) -> str:
    """Relative path of round ``round_``'s round record."""
    return f"rounds/{round_:06d}/round.json"


def global_name(round_: int) -> str:
    """Relative path of the global checkpoint after round ``round_``."""
    return f"rounds/{round_:06d}/global.safetensors"


def worker_state_name(round_: int, rank: int) -> str:
    """Relative path of worker ``rank``'s submitted state in round ``round_``."""
    return f"rounds/{round_:06d}/worker-{rank:04d}.safetensors"


def worker_segment_name(round_: int, rank: int) -> str:
    """Relative path of worker ``rank``'s submitted segment in round ``round_``."""
    return f"rounds/{round_:06d}/worker-{rank:04d}.segment.json"


def _ranks(obj: JsonObject, key: str, workers: int = MAX_WORKERS) -> tuple[int, ...]:
    ranks = obj.int_list(key, 1, workers, MAX_WORKERS)
    if any(b <= a for a, b in zip(ranks, ranks[1:], strict=False)):
        raise obj.fail(key, "ranks must be strictly increasing")
    return tuple(ranks)


# -- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedPlan:
    """How a distributed run trains, committed in the spec before it starts.

    ``workers`` N train ``local_steps`` H steps each per round for ``rounds`` R rounds;
    the coordinator replays each submission with probability ``check_probability`` p
    (and every outlying one), excludes a worker after ``max_rejections`` rejections (0:
    never) and, with ``verify`` false, accepts every well-formed submission unchecked
    (a baseline). ``threads`` is the torch thread count of every training and replay.
    """

    workers: int
    local_steps: int
    rounds: int
    check_probability: float = 0.25
    max_rejections: int = 2
    verify: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> FormatError:
            return FormatError("distributed plan", why, field=f"config.{PLAN_KEY}.{name}")

        for name, lo, hi in (
            ("workers", 1, MAX_WORKERS),
            ("local_steps", 1, 1 << 20),
            ("rounds", 1, MAX_ROUNDS),
            ("max_rejections", 0, 1 << 20),
            ("threads", 1, 1024),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise bad(name, f"must be an integer in [{lo}, {hi}], got {value!r}")
        p = self.check_probability
        if not isinstance(p, int | float) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise bad("check_probability", f"must be a number in [0, 1], got {p!r}")
        object.__setattr__(self, "check_probability", float(p))
        if not isinstance(self.verify, bool):
            raise bad("verify", "must be true or false")

    def end_step(self, round_: int) -> int:
        """The global step after round ``round_`` (``round_ * H``)."""
        return round_ * self.local_steps

    def to_json(self) -> JsonDict:
        """The JSON form (the value of ``config["distributed"]``)."""
        return {
            "check_probability": self.check_probability,
            "format": PLAN_FORMAT,
            "local_steps": self.local_steps,
            "max_rejections": self.max_rejections,
            "rounds": self.rounds,
            "threads": self.threads,
            "verify": self.verify,
            "workers": self.workers,
        }

    @classmethod
    def from_json(cls, value: Any, what: str = "spec") -> DistributedPlan:
        """Parse a plan object."""
        obj = JsonObject(value, what, f"config.{PLAN_KEY}")
        obj.format(PLAN_FORMAT)
        names = (
            "check_probability",
            "format",
            "local_steps",
            "max_rejections",
            "rounds",
            "threads",
            "verify",
            "workers",
        )
        obj.only(names)
        p = obj.number("check_probability")
        if not 0.0 <= p <= 1.0:
            raise obj.fail("check_probability", f"{p} is outside [0, 1]")
        return cls(
            workers=obj.int("workers", 1, MAX_WORKERS),
            local_steps=obj.int("local_steps", 1, 1 << 20),
            rounds=obj.int("rounds", 1, MAX_ROUNDS),
            check_probability=p,
            max_rejections=obj.int("max_rejections", 0, 1 << 20),
            verify=obj.bool("verify"),
            threads=obj.int("threads", 1, 1024),
        )

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> DistributedPlan | None:
        """The plan a spec's config carries, or None for a single-trainer run."""
        value = config.get(PLAN_KEY)
        return None if value is None else cls.from_json(value)

    def into_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with this plan set (``k`` = H: a global checkpoint every round)."""
        return {**dict(config), PLAN_KEY: self.to_json(), "k": self.local_steps}


# -- coordinator → worker ----------------------------------------------------------------


@dataclass(frozen=True)
class Hello(CanonicalRecord):
    """What a worker is told before round 1: the run (chain facts; the worker recomputes
    the run seed from them), the spec's digest (the spec bytes follow), its rank and the
    device to train on."""

    chain_id: int
    ledger: str
    run_id: bytes
    spec_sha256: bytes
    rank: int
    device: str = "cpu"

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "chain_id": self.chain_id,
            "device": self.device,
            "format": HELLO_FORMAT,
            "ledger": self.ledger,
            "rank": self.rank,
            "run_id": to_hex(self.run_id),
            "spec_sha256": to_hex(self.spec_sha256),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Hello:
        """Parse hello bytes (canonical JSON, bounded)."""
        obj = JsonObject(parse_json(data, "hello", max_bytes=1 << 16, max_depth=2), "hello")
        obj.format(HELLO_FORMAT)
        obj.only(("chain_id", "device", "format", "ledger", "rank", "run_id", "spec_sha256"))
        return cls(
            chain_id=obj.int("chain_id"),
            ledger=obj.str("ledger", 42),
            run_id=obj.digest("run_id"),
            spec_sha256=obj.digest("spec_sha256"),
            rank=obj.int("rank", 1, MAX_WORKERS),
            device=obj.str("device", 32),
        )


# -- submissions (committed before the draw) ---------------------------------------------


@dataclass(frozen=True)
class WorkerSubmission:
    """What worker ``rank`` handed in for a round: the digests of its state and segment
    bytes (``submitted``), nothing (``missing``: late, crashed or garbled in transit), or
    nothing because it was excluded earlier (``excluded``)."""

    rank: int
    status: str
    state_sha256: bytes | None = None
    segment_sha256: bytes | None = None

    def __post_init__(self) -> None:
        if self.status not in (SUBMITTED, MISSING, EXCLUDED):
            raise FormatError("submissions", f"unknown status {self.status!r}", field="status")
        present = self.state_sha256 is not None and self.segment_sha256 is not None
        absent = self.state_sha256 is None and self.segment_sha256 is None
        if (self.status == SUBMITTED and not present) or (self.status != SUBMITTED and not absent):
            raise FormatError(
                "submissions", "digests are given exactly for submitted work", field="workers"
            )

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "rank": self.rank,
            "segment_sha256": None if self.segment_sha256 is None else to_hex(self.segment_sha256),
            "state_sha256": None if self.state_sha256 is None else to_hex(self.state_sha256),
            "status": self.status,
        }


@dataclass(frozen=True)
class Submissions(CanonicalRecord):
    """Round ``round``'s submissions from base checkpoint ``base_sha256`` (the global
    state after round ``round - 1``; W0 for round 1), steps ``start_step .. end_step``."""

    round: int
    start_step: int
    end_step: int
    base_sha256: bytes
    workers: tuple[WorkerSubmission, ...]

    def __post_init__(self) -> None:
        ranks = [w.rank for w in self.workers]
        if any(b <= a for a, b in zip(ranks, ranks[1:], strict=False)):
            raise FormatError("submissions", "ranks must be strictly increasing", field="workers")
        if self.end_step <= self.start_step:
            raise FormatError("submissions", "a round has at least one step", field="end_step")

    def worker(self, rank: int) -> WorkerSubmission | None:
        """The entry of worker ``rank``."""
        return next((w for w in self.workers if w.rank == rank), None)

    @property
    def submitted(self) -> list[int]:
        """Ranks that handed in work, in order (what the draw picks from)."""
        return [w.rank for w in self.workers if w.status == SUBMITTED]

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "base_sha256": to_hex(self.base_sha256),
            "end_step": self.end_step,
            "format": SUBMISSIONS_FORMAT,
            "round": self.round,
            "start_step": self.start_step,
            "workers": [w.to_json() for w in self.workers],
        }

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "submissions") -> Submissions:
        """Parse submissions bytes (canonical JSON, bounded)."""
        obj = JsonObject(parse_json(data, what, max_bytes=MAX_RECORD_BYTES, max_depth=4), what)
        obj.format(SUBMISSIONS_FORMAT)
        obj.only(("base_sha256", "end_step", "format", "round", "start_step", "workers"))
        workers = []
        for pos, item in enumerate(obj.list("workers", MAX_WORKERS)):
            w = JsonObject(item, what, f"workers[{pos}]")
            w.only(("rank", "segment_sha256", "state_sha256", "status"))
            workers.append(
                WorkerSubmission(
                    rank=w.int("rank", 1, MAX_WORKERS),
                    status=w.str("status", 16),
                    state_sha256=w.opt_digest("state_sha256"),
                    segment_sha256=w.opt_digest("segment_sha256"),
                )
            )
        try:
            return cls(
                round=obj.int("round", 1, MAX_ROUNDS),
                start_step=obj.int("start_step"),
                end_step=obj.int("end_step"),
                base_sha256=obj.digest("base_sha256"),
                workers=tuple(workers),
            )
        except FormatError as exc:
            raise FormatError(what, exc.detail, field=exc.field) from None


# -- the round record (committed after the checks) ---------------------------------------


@dataclass(frozen=True)
class Draw:
    """The draw of the workers to replay: ``seed`` = SHA-256(DRAW_DOMAIN ‖ block_hash ‖
    submissions leaf), ``block_hash`` being the hash of block ``block`` that mined the
    submissions leaf; ``picked`` the ranks it drew with ``probability`` p."""

    block: int
    block_hash: bytes
    seed: bytes
    probability: float
    picked: tuple[int, ...]

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "block": self.block,
            "block_hash": to_hex(self.block_hash),
            "picked": list(self.picked),
            "probability": self.probability,
            "seed": to_hex(self.seed),
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> Draw:
        """Parse a draw object."""
        obj.only(("block", "block_hash", "picked", "probability", "seed"))
        p = obj.number("probability")
        if not 0.0 <= p <= 1.0:
            raise obj.fail("probability", f"{p} is outside [0, 1]")
        return cls(
            block=obj.int("block"),
            block_hash=obj.digest("block_hash"),
            seed=obj.digest("seed"),
            probability=p,
            picked=_ranks(obj, "picked"),
        )


@dataclass(frozen=True)
class WorkerVerdict:
    """What the coordinator decided about worker ``rank``'s submission: ``accepted``
    (aggregated), ``rejected`` (with ``reasons``), ``missing`` or ``excluded``; which
    checks replayed it (``checked_by``, empty when unchecked) and the replay's metrics."""

    rank: int
    status: str
    checked_by: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()
    detail: str = ""
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        if self.status not in (ACCEPTED, REJECTED, MISSING, EXCLUDED):
            raise FormatError("round record", f"unknown status {self.status!r}", field="status")
        if (self.status == REJECTED) != bool(self.reasons):
            raise FormatError(
                "round record", "a rejection has reasons, nothing else has", field="reasons"
            )
        if any(c not in CHECK_REASONS for c in self.checked_by):
            raise FormatError("round record", "unknown check", field="checked_by")

    @property
    def checked(self) -> bool:
        """Whether the coordinator replayed this submission."""
        return bool(self.checked_by)

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "checked_by": list(self.checked_by),
            "detail": self.detail,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
            "rank": self.rank,
            "reasons": [r.value for r in self.reasons],
            "status": self.status,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> WorkerVerdict:
        """Parse a verdict."""
        obj.only(("checked_by", "detail", "metrics", "rank", "reasons", "status"))
        reasons = []
        for pos, code in enumerate(obj.str_list("reasons", 16, 64)):
            try:
                reasons.append(Reason(code))
            except ValueError:
                raise obj.fail(f"reasons[{pos}]", f"unknown reason {code!r}") from None
        metrics = obj.opt_obj("metrics")
        return cls(
            rank=obj.int("rank", 1, MAX_WORKERS),
            status=obj.str("status", 16),
            checked_by=tuple(obj.str_list("checked_by", len(CHECK_REASONS), 16)),
            reasons=tuple(reasons),
            detail=obj.str("detail", MAX_DETAIL),
            metrics=None if metrics is None else Metrics.from_json(metrics),
        )


@dataclass(frozen=True)
class RoundRecord(CanonicalRecord):
    """Round ``round``'s outcome: the submissions it judged (their record's digest, the
    committed leaf 2r-1 binds it), the draw, each worker's verdict, and the workers
    ``excluded`` from the next round on. The global checkpoint is the mean of the
    accepted states (``aggregation``; the base state when none is accepted)."""

    round: int
    start_step: int
    end_step: int
    base_sha256: bytes
    submissions_sha256: bytes
    draw: Draw | None
    workers: tuple[WorkerVerdict, ...]
    excluded: tuple[int, ...] = ()
    aggregation: str = AGGREGATION

    def __post_init__(self) -> None:
        ranks = [w.rank for w in self.workers]
        if any(b <= a for a, b in zip(ranks, ranks[1:], strict=False)):
            raise FormatError("round record", "ranks must be strictly increasing", field="workers")
        if self.aggregation != AGGREGATION:
            raise FormatError(
                "round record", f"unknown aggregation {self.aggregation!r}", field="aggregation"
            )

    @property
    def accepted(self) -> list[int]:
        """Ranks whose states were aggregated, in order."""
        return [w.rank for w in self.workers if w.status == ACCEPTED]

    def worker(self, rank: int) -> WorkerVerdict | None:
        """The verdict on worker ``rank``."""
        return next((w for w in self.workers if w.rank == rank), None)

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "aggregation": self.aggregation,
            "base_sha256": to_hex(self.base_sha256),
            "draw": None if self.draw is None else self.draw.to_json(),
            "end_step": self.end_step,
            "excluded": list(self.excluded),
            "format": ROUND_FORMAT,
            "round": self.round,
            "start_step": self.start_step,
            "submissions_sha256": to_hex(self.submissions_sha256),
            "workers": [w.to_json() for w in self.workers],
        }

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "round record") -> RoundRecord:
        """Parse round record bytes (canonical JSON, bounded)."""
        obj = JsonObject(parse_json(data, what, max_bytes=MAX_RECORD_BYTES, max_depth=5), what)
        obj.format(ROUND_FORMAT)
        obj.only(
            (
                "aggregation",
                "base_sha256",
                "draw",
                "end_step",
                "excluded",
                "format",
                "round",
                "start_step",
                "submissions_sha256",
                "workers",
            )
        )
        draw = obj.opt_obj("draw")
        try:
            return cls(
                round=obj.int("round", 1, MAX_ROUNDS),
                start_step=obj.int("start_step"),
                end_step=obj.int("end_step"),
                base_sha256=obj.digest("base_sha256"),
                submissions_sha256=obj.digest("submissions_sha256"),
                draw=None if draw is None else Draw.from_json(draw),
                workers=tuple(
                    WorkerVerdict.from_json(JsonObject(w, what, f"workers[{i}]"))
                    for i, w in enumerate(obj.list("workers", MAX_WORKERS))
                ),
                excluded=_ranks(obj, "excluded"),
                aggregation=obj.str("aggregation", 32),
            )
        except FormatError as exc:
            raise FormatError(what, exc.detail, field=exc.field) from None


# -- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundsEntry:
    """Leaf ``index``: W0 (index 0: ``checkpoint``), round r's submissions (index 2r-1:
    ``record`` = the submissions record) or round r's outcome (index 2r: ``checkpoint`` =
    the global state, ``record`` = the round record)."""

    index: int
    step: int
    checkpoint: ArtefactRef | None
    record: ArtefactRef | None
    leaf: bytes

    @property
    def kind(self) -> str:
        """``init``, ``submissions`` or ``global``."""
        return "init" if self.index == 0 else "submissions" if self.index % 2 else "global"

    @property
    def round(self) -> int:
        """The round this leaf belongs to (0 for W0)."""
        return (self.index + 1) // 2

    @property
    def checkpoint_sha256(self) -> bytes:
        """The checkpoint digest the leaf binds (zero for a submissions leaf)."""
        return self.checkpoint.sha256 if self.checkpoint is not None else b"\x00" * 32

    @property
    def record_sha256(self) -> bytes:
        """The record digest the leaf binds in its segment slot (zero for W0)."""
        return self.record.sha256 if self.record is not None else b"\x00" * 32

    def refs(self) -> list[ArtefactRef]:
        """Checkpoint and record references."""
        return [r for r in (self.checkpoint, self.record) if r is not None]

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_json(),
            "index": self.index,
            "leaf": to_hex(self.leaf),
            "record": None if self.record is None else self.record.to_json(),
            "step": self.step,
        }


@dataclass(frozen=True)
class RoundsManifest(CanonicalRecord):
    """Every leaf of a distributed run with its artefacts, and every worker artefact
    (states and segments, located by digest). See the module docstring."""

    run_id: bytes
    spec_sha256: bytes
    entries: tuple[RoundsEntry, ...] = ()
    artefacts: tuple[ArtefactRef, ...] = ()
    final: FinalModel | None = None
    spec_cid: str | None = None

    @classmethod
    def new(cls, run_id: bytes, spec_sha256: bytes) -> RoundsManifest:
        """An empty manifest for a run."""
        return cls(bytes(run_id), bytes(spec_sha256))

    @property
    def leaves(self) -> list[bytes]:
        """The leaves in index order."""
        return [e.leaf for e in self.entries]

    @property
    def rounds(self) -> int:
        """Completed rounds (a trailing submissions leaf is a round still being judged)."""
        return max(0, (len(self.entries) - 1) // 2)

    def refs(self) -> list[ArtefactRef]:
        """Every reference: entries, worker artefacts and the final model."""
        out = [r for e in self.entries for r in e.refs()] + list(self.artefacts)
        if self.final is not None:
            out.append(self.final.model)
        return out

    @property
    def is_published(self) -> bool:
        """Whether every reference carries a CID (the form committed on-chain)."""
        return self.spec_cid is not None and all(r.cid is not None for r in self.refs())

    def cids(self) -> dict[bytes, str]:
        """``{sha256: cid}`` of every reference that carries a CID."""
        return {r.sha256: r.cid for r in self.refs() if r.cid is not None}

    def entry(self, index: int) -> RoundsEntry:
        """Entry ``index``."""
        return self.entries[index]

    def with_entry(self, entry: RoundsEntry) -> RoundsManifest:
        """A copy with ``entry`` appended (it must be the next index)."""
        if entry.index != len(self.entries):
            raise ValueError(f"entry {entry.index} appended after {len(self.entries)} entries")
        return replace(self, entries=(*self.entries, entry))

    def with_artefacts(self, refs: Iterable[ArtefactRef]) -> RoundsManifest:
        """A copy listing ``refs`` as worker artefacts too (duplicates by digest dropped)."""
        known = {r.sha256 for r in self.artefacts}
        new = []
        for ref in refs:
            if ref.sha256 not in known:
                known.add(ref.sha256)
                new.append(ref)
        return replace(self, artefacts=(*self.artefacts, *new))

    def with_final(self, model: ArtefactRef) -> RoundsManifest:
        """A copy finalized on its last entry (a global checkpoint) with ``model``."""
        last = self.entries[-1]
        if last.kind == "submissions":
            raise ValueError("a run is finalized on a global checkpoint")
        return replace(self, final=FinalModel(last.index, last.step, model))

    def published(self, cids: Mapping[bytes, str], spec_cid: str) -> RoundsManifest:
        """The published form: every reference with its CID from ``cids`` (by SHA-256)."""

        def ref(r: ArtefactRef | None) -> ArtefactRef | None:
            return None if r is None else replace(r, cid=cids[r.sha256])

        entries = tuple(
            replace(e, checkpoint=ref(e.checkpoint), record=ref(e.record)) for e in self.entries
        )
        artefacts = tuple(replace(r, cid=cids[r.sha256]) for r in self.artefacts)
        final = (
            None
            if self.final is None
            else replace(
                self.final, model=replace(self.final.model, cid=cids[self.final.model.sha256])
            )
        )
        return replace(self, entries=entries, artefacts=artefacts, final=final, spec_cid=spec_cid)

    def to_json(self) -> JsonDict:
        """The JSON form."""
        out: JsonDict = {
            "artefacts": [r.to_json() for r in self.artefacts],
            "entries": [e.to_json() for e in self.entries],
            "final": None if self.final is None else self.final.to_json(),
            "format": ROUNDS_MANIFEST_FORMAT,
            "run_id": to_hex(self.run_id),
            "spec_sha256": to_hex(self.spec_sha256),
        }
        if self.spec_cid is not None:
            out["spec_cid"] = self.spec_cid
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundsManifest:
        """Parse manifest bytes (canonical JSON, bounded, data only)."""
        return cls.from_json(parse_json(data, "manifest", max_bytes=MAX_MANIFEST_BYTES))

    @classmethod
    def from_json(cls, value: Any) -> RoundsManifest:
        """Parse and validate: index = position; W0 has a checkpoint and no record, a
        submissions leaf a record and no checkpoint, a global leaf both; a round's two
        leaves share a step and steps grow from round to round."""
        obj = JsonObject(value, "manifest")
        obj.format(ROUNDS_MANIFEST_FORMAT)
        obj.only(
            ("artefacts", "entries", "final", "format", "run_id", "spec_sha256"), ("spec_cid",)
        )
        entries: list[RoundsEntry] = []
        for pos, item in enumerate(obj.list("entries", 2 * MAX_ROUNDS + 1)):
            e = JsonObject(item, "manifest", f"entries[{pos}]")
            e.only(("checkpoint", "index", "leaf", "record", "step"))
            index, step = e.int("index"), e.int("step")
            if index != pos:
                raise e.fail("index", f"is {index}, expected {pos}")
            ckpt, rec = e.opt_obj("checkpoint"), e.opt_obj("record")
            want_ckpt, want_rec = pos % 2 == 0, pos > 0
            if (ckpt is not None) != want_ckpt or (rec is not None) != want_rec:
                raise e.fail(
                    "checkpoint", "W0 has a checkpoint, a submissions leaf a record, a global both"
                )
            if pos == 0 and step != 0:
                raise e.fail("step", "W0 is at step 0")
            if pos % 2 == 1 and step <= entries[-1].step:
                raise e.fail("step", f"{step} does not follow step {entries[-1].step}")
            if pos % 2 == 0 and pos > 0 and step != entries[-1].step:
                raise e.fail("step", "a round's two leaves share its step")
            entries.append(
                RoundsEntry(
                    index,
                    step,
                    None if ckpt is None else ArtefactRef.from_json(ckpt),
                    None if rec is None else ArtefactRef.from_json(rec),
                    e.digest("leaf"),
                )
            )
        artefacts = tuple(
            ArtefactRef.from_json(JsonObject(a, "manifest", f"artefacts[{i}]"))
            for i, a in enumerate(obj.list("artefacts", 2 * MAX_WORKERS * MAX_ROUNDS))
        )
        final = None
        fin = obj.opt_obj("final")
        if fin is not None:
            fin.only(("index", "model", "step"))
            index, step = fin.int("index"), fin.int("step")
            last = entries[-1] if entries else None
            if (
                last is None
                or last.kind == "submissions"
                or (index, step)
                != (
                    last.index,
                    last.step,
                )
            ):
                raise fin.fail("index", "the final model must come from the last global checkpoint")
            final = FinalModel(index, step, ArtefactRef.from_json(fin.obj("model")))
        return cls(
            run_id=obj.digest("run_id"),
            spec_sha256=obj.digest("spec_sha256"),
            entries=tuple(entries),
            artefacts=artefacts,
            final=final,
            spec_cid=obj.opt_str("spec_cid", MAX_CID),
        )


def parse_any_manifest(data: bytes) -> Manifest | RoundsManifest:
    """Parse a run's manifest, whichever kind its ``format`` names (a single trainer's
    :class:`~pol_chain.format.Manifest` or a distributed run's :class:`RoundsManifest`)."""
    value = parse_json(data, "manifest", max_bytes=MAX_MANIFEST_BYTES)
    if isinstance(value, dict) and value.get("format") == ROUNDS_MANIFEST_FORMAT:
        return RoundsManifest.from_json(value)
    return Manifest.from_json(value)  # names the version it expects when neither
