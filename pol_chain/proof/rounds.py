"""Distributed rounds in the proof engine (``docs/distributed.md``, ``docs/protocol.md`` §8).

Pure functions shared by the coordinator, the workers and the verifier, and the
verification of a finished distributed run:

- data: :func:`shard` (each worker's part of the committed dataset) and
  :class:`Schedule` (each worker's batches and per-step seeds of a round), all derived
  from the run seed with the purposes of :data:`PURPOSES`;
- training and replay: :func:`initial_state`, :func:`train_local`, :func:`replay_local`,
  :func:`judge` — this module is the *only* caller of the engine
  (``run_step``, ``capture_state``, ``restore_state``, ``replay_steps``) and of
  ``compare_states`` for the distributed feature, so an engine change is adapted here;
- :func:`aggregate` (the global state: float64 mean of the accepted states), structure
  checks, and the draw (:func:`draw_seed`, :func:`draw`);
- :func:`verify_rounds` / :func:`verify_rounds_dir`: a finished run verifies like any
  other: integrity, leaves and accumulator, init, every record's consistency, every
  accepted segment's data order, then the chosen rounds replay as their accepted
  workers' segments plus the aggregation.

Imports the engine and the formats only (never chain or storage code).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pol_chain.commitment import accumulator
from pol_chain.commitment import leaf as make_leaf
from pol_chain.format import (
    MANIFEST_FILE,
    SPEC_FILE,
    Check,
    CheckpointMeta,
    DistributedPlan,
    FormatError,
    Metrics,
    Reason,
    Report,
    RoundRecord,
    RoundsManifest,
    Segment,
    SegmentResult,
    SegmentStep,
    Submissions,
    TaskSpec,
    Thresholds,
    parse_any_manifest,
    to_hex,
)
from pol_chain.format.names import DRAW_DOMAIN
from pol_chain.format.rounds import ACCEPTED, EXCLUDED, MISSING, REJECTED, SUBMITTED
from pol_chain.proof.canonical import sha256
from pol_chain.proof.dataset import MerkleTree, sample_leaf, verify_membership
from pol_chain.proof.engine import (
    capture_state,
    check_order_fits,
    model_tensors,
    replay_steps,
    restore_state,
    run_step,
)
from pol_chain.proof.errors import (
    CannotVerify,
    CodeFailure,
    IntegrityError,
    MalformedArtefactError,
    ProofError,
)
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import ArtefactSource
from pol_chain.proof.policy import Policy, draw_random, select_segments
from pol_chain.proof.report import write_report
from pol_chain.proof.runner import run_task_code
from pol_chain.proof.seeds import derive_seed, make_generator
from pol_chain.proof.serialization import digest_model, load_checkpoint_bytes
from pol_chain.proof.spec import check_bundle, environment_facts
from pol_chain.proof.task import TaskBundle, check_source, configure_determinism
from pol_chain.proof.verifier import compare_states

__all__ = [
    "PURPOSES",
    "RoundsDirectorySource",
    "Schedule",
    "State",
    "aggregate",
    "draw",
    "draw_seed",
    "global_meta",
    "initial_state",
    "is_rounds_dir",
    "judge",
    "replay_local",
    "shard",
    "structure_problem",
    "train_local",
    "verify_rounds",
    "verify_rounds_dir",
]

State = dict[str, torch.Tensor]
PURPOSES = ("distributed-shard", "distributed-order", "distributed-augment", "distributed-dropout")
"""Run-seed purposes of a distributed run: the partition of the dataset into shards, each
worker's batch order per pass over its shard, and each worker's per-step augmentation and
dropout seeds (see :class:`Schedule`)."""
MAX_DETAILS = 20


# -- data order ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _partition(run_seed: bytes, size: int) -> torch.Tensor:
    gen = make_generator(derive_seed(run_seed, PURPOSES[0]))
    return torch.randperm(size, generator=gen)


def shard(run_seed: bytes, size: int, workers: int, rank: int) -> torch.Tensor:
    """Worker ``rank``'s (1-based) sample indices: every ``workers``-th entry, from
    position ``rank - 1``, of the run seed's permutation of ``range(size)``."""
    if not 1 <= rank <= workers:
        raise ValueError(f"rank {rank} outside 1..{workers}")
    return _partition(bytes(run_seed), size)[rank - 1 :: workers]


class Schedule:
    """Each worker's batches and seeds, from the run seed alone.

    Worker w's global step t (round r covers t = (r-1)·H … r·H - 1) takes batch
    ``t mod S`` of its shard's pass ``t // S`` (S = ⌊|shard| / B⌋ batches per pass, the
    last partial batch dropped), the pass's order being
    ``randperm(|shard|, derive_seed(run_seed, "distributed-order", w, pass))``; its seeds
    are ``derive_seed(run_seed, "distributed-augment" | "distributed-dropout", r, w, t)``.
    """

    def __init__(self, run_seed: bytes, size: int, batch_size: int, plan: DistributedPlan):
        self.run_seed, self.size, self.batch_size, self.plan = (
            bytes(run_seed),
            size,
            batch_size,
            plan,
        )
        self._orders: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def of(cls, spec: TaskSpec, run_seed: bytes, plan: DistributedPlan) -> Schedule:
        """The schedule of a distributed spec."""
        return cls(run_seed, spec.dataset.size, spec.batch_size, plan)

    def shard(self, rank: int) -> torch.Tensor:
        """Worker ``rank``'s sample indices."""
        return shard(self.run_seed, self.size, self.plan.workers, rank)

    def _order(self, rank: int, pass_: int) -> torch.Tensor:
        key = (rank, pass_)
        if key not in self._orders:
            part = self.shard(rank)
            gen = make_generator(derive_seed(self.run_seed, PURPOSES[1], rank, pass_))
            if len(self._orders) > 4 * self.plan.workers:
                self._orders.clear()
            self._orders[key] = part[torch.randperm(len(part), generator=gen)]
        return self._orders[key]

    def seeds(self, round_: int, rank: int, step: int) -> dict[str, int]:
        """The per-step seeds (the engine's ``augment`` and ``dropout``)."""
        return {
            "augment": derive_seed(self.run_seed, PURPOSES[2], round_, rank, step),
            "dropout": derive_seed(self.run_seed, PURPOSES[3], round_, rank, step),
        }

    def steps(self, round_: int, rank: int) -> tuple[SegmentStep, ...]:
        """The H steps worker ``rank`` owes in round ``round_`` (global step numbers)."""
        per_pass = len(self.shard(rank)) // self.batch_size
        if per_pass < 1:
            raise ProofError(
                f"worker {rank}'s shard holds fewer samples than one batch of {self.batch_size}"
            )
        out = []
        for t in range((round_ - 1) * self.plan.local_steps, round_ * self.plan.local_steps):
            pass_, pos = divmod(t, per_pass)
            batch = self._order(rank, pass_)[pos * self.batch_size : (pos + 1) * self.batch_size]
            out.append(SegmentStep(t, tuple(batch.tolist()), self.seeds(round_, rank, t)))
        return tuple(out)


# -- training, replay, judging (the engine's call sites) ------------------------------------


def initial_state(bundle: TaskBundle) -> tuple[State, CheckpointMeta]:
    """W0 of a freshly built bundle (model tensors; no optimizer state yet), on the CPU."""
    tensors, meta = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, 0)
    return {k: v.to("cpu") for k, v in tensors.items()}, meta


def global_meta(step: int) -> CheckpointMeta:
    """The metadata of the global checkpoint at ``step`` (scheduler position = step)."""
    return CheckpointMeta(step=step, scheduler_position=step)


def train_local(
    bundle: TaskBundle,
    base: Mapping[str, torch.Tensor],
    base_meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    end_step: int | None = None,
) -> tuple[State, CheckpointMeta]:
    """Restore ``base`` and train ``steps`` with the task's step; return the CPU state and
    its metadata (at ``end_step``, default the base step plus the steps run)."""
    restore_state(bundle.model, bundle.optimizer, bundle.scheduler, base, base_meta, "global state")
    for st in steps:
        run_step(bundle, list(st.indices), st.seeds, st.step)
    step = base_meta.step + len(steps) if end_step is None else end_step
    tensors, meta = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, step)
    if end_step is not None:
        meta = CheckpointMeta(step, end_step, meta.lr)
    return {k: v.to("cpu") for k, v in tensors.items()}, meta


def replay_local(
    bundle: TaskBundle,
    base: Mapping[str, torch.Tensor],
    base_meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    what: str,
) -> State:
    """Replay ``steps`` from ``base`` (indices bounded by the dataset); the CPU state."""
    state, _ = replay_steps(bundle, base, base_meta, steps, what)
    return {k: v.to("cpu") for k, v in state.items()}


@dataclass(frozen=True)
class Judgement:
    """A replayed submission against its claim: reasons (empty = accepted), metrics."""

    reasons: tuple[Reason, ...]
    metrics: Metrics | None
    bitwise: bool


def judge(
    replayed: Mapping[str, torch.Tensor],
    claimed: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    policy: Policy,
) -> Judgement:
    """Accept a replay within the policy's ρ (normalized error, integer tensors equal) and
    c (directional cosine, unless bitwise equal), over the full state."""
    if set(replayed) != set(claimed) or any(
        replayed[k].shape != claimed[k].shape or replayed[k].dtype != claimed[k].dtype
        for k in replayed
    ):
        return Judgement((Reason.STATE_STRUCTURE,), None, False)
    cmp = compare_states(dict(replayed), dict(claimed), dict(base))
    m = cmp.metrics
    reasons: list[Reason] = []
    if m.normalized_error is None or m.normalized_error > policy.rho or not cmp.exact_fields_equal:
        reasons.append(Reason.REPLAY_DISTANCE)
    if not cmp.bitwise_identical and (m.direction_cosine is None or m.direction_cosine < policy.c):
        reasons.append(Reason.DIRECTION)
    return Judgement(tuple(reasons), m, cmp.bitwise_identical)


def check_submission(
    bundle: TaskBundle,
    base: Mapping[str, torch.Tensor],
    base_meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    claimed: Mapping[str, torch.Tensor],
    policy: Policy,
    what: str,
) -> Judgement:
    """Replay a submission's declared ``steps`` from ``base`` and judge its ``claimed``
    state; an unreplayable segment is rejected with its format reason."""
    try:
        replayed = replay_local(bundle, base, base_meta, steps, what)
    except FormatError as exc:
        return Judgement((exc.reason,), None, False)
    return judge(replayed, claimed, base, policy)


# -- structure and aggregation ------------------------------------------------------------


def structure_problem(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> str | None:
    """Why ``state`` cannot be aggregated with states like ``reference`` (other tensor
    names, dtypes or shapes, or non-finite values), or None."""
    if set(state) != set(reference):
        extra = sorted(set(state) ^ set(reference))[:3]
        return f"other tensors than a trained state ({', '.join(extra)} …)"
    for name, ref in reference.items():
        t = state[name]
        if t.dtype != ref.dtype or t.shape != ref.shape:
            return f"{name} is {t.dtype}{list(t.shape)}, expected {ref.dtype}{list(ref.shape)}"
        if t.is_floating_point() and not math.isfinite(float(t.sum(dtype=torch.float64))):
            return f"{name} holds non-finite values"  # a NaN or ±inf makes the sum one
    return None


def aggregate(
    base: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]]
) -> State:
    """The global state of a round: per tensor, the mean of the accepted ``states``
    (float64 sum in the given order, divided, cast back) for floating tensors and the
    lower median for integer ones; a copy of ``base`` when none is accepted. Same
    structure required (see :func:`structure_problem`); deterministic on any CPU."""
    if not states:
        return {k: v.detach().to("cpu").clone() for k, v in base.items()}
    out: State = {}
    n = len(states)
    for name in sorted(states[0]):
        ref = states[0][name]
        if ref.is_floating_point():
            acc = ref.detach().to("cpu", torch.float64).clone()
            for s in states[1:]:
                acc += s[name].detach().to("cpu", torch.float64)
            out[name] = (acc / n).to(ref.dtype)
        else:
            stacked = torch.stack([s[name].detach().to("cpu") for s in states])
            out[name] = stacked.sort(dim=0).values[(n - 1) // 2].clone()
    return out


# -- the draw -----------------------------------------------------------------------------


def draw_seed(block_hash: bytes, submissions_leaf: bytes) -> bytes:
    """The seed of round r's draw: SHA-256(DRAW_DOMAIN ‖ hash of the block that mined
    leaf 2r-1 ‖ leaf 2r-1)."""
    return hashlib.sha256(DRAW_DOMAIN + bytes(block_hash) + bytes(submissions_leaf)).digest()


def draw(seed: bytes, ranks: Sequence[int], probability: float) -> tuple[int, ...]:
    """The ranks of ``ranks`` (the round's submitters) to replay: k of the n drawn
    without replacement, k = ⌊p·n⌋ plus one with probability frac(p·n) — so every
    submitter is drawn with probability exactly p, and k is p·n up to rounding."""
    n = len(ranks)
    expected = probability * n
    k = math.floor(expected)
    frac = expected - k
    if frac > 0:
        u = int.from_bytes(hashlib.sha256(DRAW_DOMAIN + bytes(seed) + b"count").digest(), "big")
        if u < int(frac * float(1 << 256)):
            k += 1
    picks = draw_random(seed, n, min(k, n))
    return tuple(sorted(ranks[i - 1] for i in picks))


# -- verification of a finished run -------------------------------------------------------


@dataclass
class _Found:
    reasons: set[Reason] = field(default_factory=set)
    details: dict[str, list[str]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def fail(self, check: str, reason: Reason, detail: str) -> None:
        self.reasons.add(reason)
        self.failed.add(check)
        found = self.details.setdefault(check, [])
        if len(found) < MAX_DETAILS:
            found.append(f"{reason.value}: {detail}")

    def ok(self, *checks: str) -> None:
        for check in checks:
            self.details.setdefault(check, [])

    def checks(self) -> dict[str, Check]:
        return {n: Check(n not in self.failed, tuple(d)) for n, d in self.details.items()}


class _Run:
    """What a verification of one distributed run fetched and found so far."""

    def __init__(
        self,
        manifest: RoundsManifest,
        source: ArtefactSource,
        spec: TaskSpec,
        plan: DistributedPlan,
        run_id: bytes,
        run_seed: bytes,
    ) -> None:
        self.manifest, self.source, self.spec, self.plan = manifest, source, spec, plan
        self.run_id, self.run_seed = run_id, run_seed
        self.found = _Found()
        self.schedule = Schedule.of(spec, run_seed, plan)

    def fetch(self, digest: bytes, what: str) -> bytes | None:
        try:
            data = self.source.get(digest)
        except (KeyError, OSError, IntegrityError) as exc:
            self.found.fail(
                "integrity", Reason.MISSING_ARTEFACT, f"{what} {to_hex(digest)}: {exc!r}"
            )
            return None
        if sha256(data) != digest:
            self.found.fail(
                "integrity", Reason.ARTEFACT_DIGEST, f"{what} does not hash to its digest"
            )
            return None
        return data

    def state(self, digest: bytes, what: str, step: int) -> tuple[State, CheckpointMeta] | None:
        data = self.fetch(digest, what)
        if data is None:
            return None
        try:
            tensors, meta = load_checkpoint_bytes(data, what)
        except FormatError as exc:
            self.found.fail("integrity", exc.reason, str(exc))
            return None
        if (meta.step, meta.scheduler_position) != (step, step):
            self.found.fail("integrity", Reason.STEP_MISMATCH, f"{what} says step {meta.step}")
        return tensors, meta

    def record(self, r: int) -> tuple[Submissions, RoundRecord] | None:
        subs_ref = self.manifest.entries[2 * r - 1].record
        rec_ref = self.manifest.entries[2 * r].record
        assert subs_ref is not None and rec_ref is not None  # the manifest parser's rule
        raw_subs = self.fetch(subs_ref.sha256, f"round {r} submissions")
        raw_rec = self.fetch(rec_ref.sha256, f"round {r} record")
        if raw_subs is None or raw_rec is None:
            return None
        try:
            return (
                Submissions.from_bytes(raw_subs, f"round {r} submissions"),
                RoundRecord.from_bytes(raw_rec, f"round {r} record"),
            )
        except FormatError as exc:
            self.found.fail("integrity", exc.reason, str(exc))
            return None

    def segment(self, r: int, rank: int, digest: bytes) -> Segment | None:
        what = f"round {r} worker {rank} segment"
        data = self.fetch(digest, what)
        if data is None:
            return None
        try:
            seg = Segment.from_bytes(data, what)
        except FormatError as exc:
            self.found.fail("integrity", exc.reason, str(exc))
            return None
        if seg.index != r:
            self.found.fail(
                "integrity", Reason.MALFORMED_ARTEFACT, f"{what} is numbered {seg.index}"
            )
            return None
        return seg


def _leaves(run: _Run, committed: Sequence[bytes] | None, acc: bytes | None) -> None:
    found, leaves = run.found, []
    for e in run.manifest.entries:
        value = make_leaf(run.run_id, e.index, e.step, e.checkpoint_sha256, e.record_sha256)
        leaves.append(value)
        if value != e.leaf:
            found.fail(
                "integrity",
                Reason.LEAF_MISMATCH,
                f"manifest leaf {e.index} is not the recomputed leaf",
            )
        want = 0 if e.index == 0 else run.plan.end_step(e.round)
        if e.step != want:
            found.fail(
                "integrity",
                Reason.STEP_MISMATCH,
                f"leaf {e.index} at step {e.step}, plan says {want}",
            )
    if committed is not None:
        committed = [bytes(c) for c in committed]
        if len(committed) != len(leaves):
            found.fail(
                "integrity",
                Reason.LEAF_MISMATCH,
                f"{len(committed)} leaves committed, proof has {len(leaves)}",
            )
        for i, (a, b) in enumerate(zip(leaves, committed, strict=False)):
            if a != b:
                found.fail(
                    "integrity", Reason.LEAF_MISMATCH, f"leaf {i} differs from the committed leaf"
                )
    if acc is not None and accumulator(leaves) != bytes(acc):
        found.fail(
            "integrity",
            Reason.ACCUMULATOR_MISMATCH,
            "leaves do not fold to the committed accumulator",
        )
    if run.manifest.rounds > run.plan.rounds:
        found.fail(
            "integrity",
            Reason.STEP_MISMATCH,
            f"{run.manifest.rounds} rounds, the plan has {run.plan.rounds}",
        )


def _check_init(run: _Run, w0: State, bundle: TaskBundle) -> None:
    if any(not k.startswith("model.") for k in w0):
        run.found.fail("init", Reason.INIT_MISMATCH, "W0 carries optimizer state")
    model = model_tensors(w0)
    parent = run.spec.parent_digest
    if parent is not None:
        if digest_model(model) != parent:
            run.found.fail("init", Reason.INIT_MISMATCH, "W0 is not the parent model")
    else:
        expected = bundle.model.state_dict()
        same = set(expected) == set(model) and all(
            torch.equal(expected[k].cpu(), model[k]) for k in expected
        )
        if not same:
            run.found.fail(
                "init", Reason.INIT_MISMATCH, "W0 is not the seeded init of this run seed"
            )
    run.found.ok("init")


def _check_records(run: _Run, r: int, subs: Submissions, rec: RoundRecord) -> dict[int, Segment]:
    """Consistency of round r's two records with the manifest, the plan and the draw;
    data order of every accepted segment. Returns the accepted workers' segments."""
    found, plan, entries = run.found, run.plan, run.manifest.entries
    bad: list[str] = []
    span = ((r - 1) * plan.local_steps, r * plan.local_steps)
    base = entries[2 * r - 2].checkpoint_sha256
    if (subs.round, subs.start_step, subs.end_step) != (r, *span) or (
        rec.round,
        rec.start_step,
        rec.end_step,
    ) != (r, *span):
        bad.append("round number or steps differ from the plan")
    if subs.base_sha256 != base or rec.base_sha256 != base:
        bad.append("base is not the previous global checkpoint")
    if rec.submissions_sha256 != entries[2 * r - 1].record_sha256:
        bad.append("judges other submissions than the committed ones")
    everyone = list(range(1, plan.workers + 1))
    if [w.rank for w in subs.workers] != everyone or [w.rank for w in rec.workers] != everyone:
        bad.append(f"does not list workers 1..{plan.workers}")
    pairs = {
        (SUBMITTED, ACCEPTED),
        (SUBMITTED, REJECTED),
        (MISSING, MISSING),
        (EXCLUDED, EXCLUDED),
    }
    for w in rec.workers:
        s = subs.worker(w.rank)
        if s is None or (s.status, w.status) not in pairs:
            bad.append(
                f"worker {w.rank} is {w.status} but its submission is "
                f"{None if s is None else s.status}"
            )
    if plan.verify:
        d = rec.draw
        if d is None:
            bad.append("no draw")
        else:
            if d.seed != draw_seed(d.block_hash, entries[2 * r - 1].leaf):
                bad.append("the draw's seed is not the committed block's")
            if d.probability != plan.check_probability or d.picked != draw(
                d.seed, subs.submitted, plan.check_probability
            ):
                bad.append("the drawn workers are not the seed's")
            for rank in d.picked:
                v = rec.worker(rank)
                if v is not None and v.status == ACCEPTED and "random" not in v.checked_by:
                    bad.append(f"worker {rank} was drawn but accepted unchecked")
    for why in bad[:MAX_DETAILS]:
        found.fail("rounds", Reason.MALFORMED_ARTEFACT, f"round {r}: {why}")
    found.ok("rounds")
    segments: dict[int, Segment] = {}
    for rank in rec.accepted:
        s = subs.worker(rank)
        if s is None or s.segment_sha256 is None or not 1 <= rank <= plan.workers:
            continue  # already a finding above
        seg = run.segment(r, rank, s.segment_sha256)
        if seg is None:
            continue
        segments[rank] = seg
        if seg.steps != run.schedule.steps(r, rank):
            found.fail(
                "data_order",
                Reason.DATA_ORDER,
                f"round {r} worker {rank}: batches or seeds are not the run seed's",
            )
    found.ok("data_order")
    return segments


def _flat_model(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    keys = sorted(k for k, v in state.items() if k.startswith("model.") and v.is_floating_point())
    if not keys:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([state[k].detach().to("cpu", torch.float64).reshape(-1) for k in keys])


def _replay_round(
    run: _Run,
    bundle: TaskBundle,
    r: int,
    why: list[str],
    subs: Submissions,
    rec: RoundRecord,
    segments: Mapping[int, Segment],
    policy: Policy,
) -> SegmentResult:
    plan, entries = run.plan, run.manifest.entries
    start, end = (r - 1) * plan.local_steps, r * plan.local_steps
    reasons: list[Reason] = []
    worst: Metrics | None = None
    bitwise = True
    details: list[str] = []

    def result() -> SegmentResult:
        run.found.reasons.update(reasons)
        for d in details[:MAX_DETAILS]:
            run.found.details.setdefault("rounds", []).append(d)
        if reasons:
            run.found.failed.add("rounds")
        return SegmentResult(
            index=r,
            start_step=start,
            end_step=end,
            selected_by=tuple(why),
            metrics=worst,
            bitwise_identical=bitwise and not reasons,
            passed=not reasons,
            reasons=tuple(sorted(set(reasons), key=lambda x: x.value)),
        )

    base_ref = entries[2 * r - 2].checkpoint
    glob_ref = entries[2 * r].checkpoint
    assert base_ref is not None and glob_ref is not None
    base = run.state(base_ref.sha256, f"global checkpoint {r - 1}", start)
    claimed_global = run.state(glob_ref.sha256, f"global checkpoint {r}", end)
    if base is None or claimed_global is None:
        reasons.append(Reason.MISSING_ARTEFACT)
        return result()
    accepted_states: list[State] = []
    for rank in rec.accepted:
        s = subs.worker(rank)
        seg = segments.get(rank)
        if s is None or s.state_sha256 is None or seg is None:
            reasons.append(Reason.MALFORMED_ARTEFACT)
            continue
        got = run.state(s.state_sha256, f"round {r} worker {rank} state", end)
        if got is None:
            reasons.append(Reason.MALFORMED_ARTEFACT)
            continue
        claimed = got[0]
        accepted_states.append(claimed)
        verdict = check_submission(
            bundle, base[0], base[1], seg.steps, claimed, policy, f"round {r} worker {rank} segment"
        )
        reasons.extend(verdict.reasons)
        bitwise = bitwise and verdict.bitwise
        m = verdict.metrics
        if m is not None and (
            worst is None or (m.normalized_error or math.inf) > (worst.normalized_error or 0.0)
        ):
            worst = m
        if verdict.reasons:
            details.append(
                f"{reasons[-1].value}: round {r}: accepted worker {rank} does not replay "
                f"(normalized error {None if m is None else m.normalized_error})"
            )
    problems = {structure_problem(s, accepted_states[0]) for s in accepted_states[1:]} - {None}
    if problems:
        reasons.append(Reason.STATE_STRUCTURE)
        details.append(f"state_structure: round {r}: accepted states differ ({problems.pop()})")
        return result()
    expected = aggregate(base[0], accepted_states)
    got_global = claimed_global[0]
    same = set(expected) == set(got_global) and all(
        expected[k].dtype == got_global[k].dtype and torch.equal(expected[k], got_global[k])
        for k in expected
    )
    if not same:
        reasons.append(Reason.REPLAY_DISTANCE)
        details.append(
            f"replay_distance: round {r}: the global checkpoint is not the mean of the "
            "accepted states"
        )
    return result()


def _membership(
    run: _Run,
    chosen: Mapping[int, list[str]],
    segments: Mapping[int, Mapping[int, Segment]],
    xs: torch.Tensor,
    ys: torch.Tensor,
    proofs: Callable[[int], Sequence[bytes]],
) -> None:
    root, size = run.spec.dataset.root, run.spec.dataset.size
    opened: dict[int, bool] = {}
    for r in chosen:
        for rank, seg in segments.get(r, {}).items():
            for st in seg.steps:
                for j in st.indices:
                    if j not in opened:
                        opened[j] = 0 <= j < len(xs) and verify_membership(
                            sample_leaf(xs[j], ys[j]), j, size, proofs(j), root
                        )
                    if not opened[j]:
                        run.found.fail(
                            "membership",
                            Reason.MEMBERSHIP,
                            f"index {j} (round {r} worker {rank}) does not open to the root",
                        )
    run.found.ok("membership")


def verify_rounds(
    manifest: RoundsManifest,
    source: ArtefactSource,
    *,
    run_id: bytes,
    run_seed: bytes,
    challenge_seed: bytes,
    spec_bytes: bytes | None = None,
    spec_digest: bytes | None = None,
    committed_leaves: Sequence[bytes] | None = None,
    committed_accumulator: bytes | None = None,
    model_digest: bytes | None = None,
    dataset: tuple[torch.Tensor, torch.Tensor] | None = None,
    dataset_proofs: Callable[[int], Sequence[bytes]] | None = None,
    parent_model: bytes | None = None,
    policy: Policy | None = None,
    device: str = "cpu",
    deterministic: bool = True,
    threads: int | None = None,
    out_dir: Path | str | None = None,
    model_file: bool = False,
) -> Report:
    """Verify a distributed run; the arguments mean what they mean for
    :func:`pol_chain.proof.verifier.verify` (which dispatches here). Rounds play the role
    of segments for the policy (first, last, m random, top-Q by global update size; all
    of them for runs of at most ``full_below`` rounds). Replays use the plan's thread
    count unless ``threads`` is given; the caller's thread count is restored after."""
    policy = policy or Policy()
    prior_threads = torch.get_num_threads()
    base: dict[str, Any] = {
        "challenge_seed": bytes(challenge_seed),
        "policy": policy.to_json(),
        "run_id": bytes(run_id),
        "thresholds": Thresholds(rho=policy.rho, c=policy.c),
    }

    def finish(found: _Found, segments: Sequence[SegmentResult] = (), **values: Any) -> Report:
        report = Report.build(
            reasons=found.reasons, segments=segments, checks=found.checks(), **base, **values
        )
        if out_dir is not None:
            write_report(report, out_dir)
        return report

    want_spec = spec_digest or manifest.spec_sha256
    try:
        raw = spec_bytes if spec_bytes is not None else source.get(want_spec)
        if sha256(raw) != want_spec:
            raise ProofError(f"spec does not hash to the committed {to_hex(want_spec)}")
        if manifest.spec_sha256 != want_spec:
            raise ProofError("manifest names another spec than the committed one")
        spec = TaskSpec.from_bytes(raw)
        plan = DistributedPlan.of_config(spec.config)
        if plan is None:
            raise ProofError(
                "the spec has no distributed plan, the manifest is a distributed run's"
            )
        check_order_fits(spec.dataset.size)
        schedule = Schedule.of(spec, run_seed, plan)
        for rank in range(1, plan.workers + 1):
            schedule.steps(1, rank)  # every shard holds a batch
    except CannotVerify:
        raise
    except (ProofError, FormatError, KeyError) as exc:
        spec_found = _Found()
        spec_found.fail("spec", Reason.SPEC_INVALID, str(exc))
        base["environment"] = environment_facts(device, deterministic)
        return finish(spec_found)
    try:  # the code installed here must be the committed code; else not a verdict
        check_source(spec) if spec.version == 1 else check_bundle(spec)
    except (ProofError, FormatError) as exc:
        raise CannotVerify(
            f"cannot run the task of this distributed run here: {exc}",
            hint="install the trainer's task code (it must pack to the committed bundle)",
        ) from None
    try:
        env = configure_determinism(deterministic, threads if threads is not None else plan.threads)
        base["environment"] = {**environment_facts(device, deterministic), **env}
        base["spec_sha256"] = spec.digest
        return _verify(
            manifest,
            source,
            spec,
            plan,
            bytes(run_id),
            bytes(run_seed),
            challenge_seed,
            committed_leaves,
            committed_accumulator,
            model_digest,
            dataset,
            dataset_proofs,
            parent_model,
            policy,
            device,
            finish,
            model_file,
        )
    finally:
        torch.set_num_threads(prior_threads)


def _verify(
    manifest: RoundsManifest,
    source: ArtefactSource,
    spec: TaskSpec,
    plan: DistributedPlan,
    run_id: bytes,
    run_seed: bytes,
    challenge_seed: bytes,
    committed_leaves: Sequence[bytes] | None,
    committed_accumulator: bytes | None,
    model_digest: bytes | None,
    dataset: tuple[torch.Tensor, torch.Tensor] | None,
    dataset_proofs: Callable[[int], Sequence[bytes]] | None,
    parent_model: bytes | None,
    policy: Policy,
    device: str,
    finish: Callable[..., Report],
    model_file: bool,
) -> Report:
    run = _Run(manifest, source, spec, plan, run_id, run_seed)
    found = run.found
    _leaves(run, committed_leaves, committed_accumulator)
    found.ok("integrity")
    if not manifest.entries or manifest.rounds == 0:
        found.fail("integrity", Reason.MALFORMED_ARTEFACT, "the manifest lists no complete round")
        return finish(found)
    try:
        bundle = run_task_code(
            "build the task", lambda: build_bundle(spec, run_seed, device, parent_model)
        )
    except CodeFailure as exc:  # the committed code does not build on its config
        found.fail("replay", Reason.CODE_FAILURE, str(exc))
        return finish(found)
    except CannotVerify:
        raise
    except ProofError as exc:
        found.fail("init", Reason.INIT_MISMATCH, str(exc))
        return finish(found)
    entries = manifest.entries
    w0 = run.state(entries[0].checkpoint_sha256, "W0", 0)
    if w0 is not None:
        _check_init(run, w0[0], bundle)
    records: dict[int, tuple[Submissions, RoundRecord]] = {}
    segments: dict[int, dict[int, Segment]] = {}
    sizes: list[float] = []
    prev = _flat_model(w0[0]) if w0 is not None else None
    last: State | None = None
    for r in range(1, manifest.rounds + 1):
        pair = run.record(r)
        if pair is not None:
            records[r] = pair
            segments[r] = _check_records(run, r, *pair)
        glob = run.state(
            entries[2 * r].checkpoint_sha256, f"global checkpoint {r}", plan.end_step(r)
        )
        cur = _flat_model(glob[0]) if glob is not None else None
        sizes.append(
            float((cur - prev).norm())
            if cur is not None and prev is not None and cur.shape == prev.shape
            else 0.0
        )
        prev, last = cur, glob[0] if glob is not None else None
    final = manifest.final
    claimed = model_digest or (final.model.sha256 if final is not None else None)
    final_digest = digest_model(model_tensors(last)) if last is not None else None
    if claimed is not None and final_digest is not None and final_digest != claimed:
        found.fail(
            "integrity",
            Reason.MODEL_DIGEST_MISMATCH,
            f"last global checkpoint is {to_hex(final_digest)}",
        )
    if final is not None and model_digest is not None and final.model.sha256 != model_digest:
        found.fail(
            "integrity",
            Reason.MODEL_DIGEST_MISMATCH,
            "manifest's final model is not the committed one",
        )
    if model_file and final is not None:
        run.fetch(final.model.sha256, "final model file")  # hashes it
    n = manifest.rounds
    seg_steps = [
        plan.local_steps * max(1, len(records[r][1].accepted)) if r in records else plan.local_steps
        for r in range(1, n + 1)
    ]
    per_epoch = max(1, spec.steps_per_epoch)
    seg_epochs = [(plan.end_step(r) - 1) // per_epoch for r in range(1, n + 1)]
    chosen = select_segments(policy, challenge_seed, seg_steps, seg_epochs, sizes)
    if dataset is None and (bundle.train_x is None or bundle.train_y is None):
        raise CannotVerify("distributed runs take tasks that keep their data in two tensors")
    xs, ys = dataset if dataset is not None else (bundle.train_x, bundle.train_y)
    assert xs is not None and ys is not None
    if dataset_proofs is None:
        dataset_proofs = MerkleTree([sample_leaf(xs[i], ys[i]) for i in range(len(xs))]).proof
    _membership(run, chosen, segments, xs, ys, dataset_proofs)
    if dataset is not None:
        assert bundle.train_x is not None and bundle.train_y is not None
        bundle.train_x, bundle.train_y = xs.to(bundle.train_x.device), ys.to(bundle.train_y.device)
    results = []
    for r, why in chosen.items():
        if r not in records:
            found.reasons.add(Reason.MISSING_ARTEFACT)
            results.append(
                SegmentResult(
                    r,
                    plan.end_step(r - 1),
                    plan.end_step(r),
                    tuple(why),
                    None,
                    False,
                    False,
                    (Reason.MISSING_ARTEFACT,),
                )
            )
            continue
        subs, rec = records[r]
        try:
            results.append(
                run_task_code(
                    f"replay round {r}",
                    functools.partial(
                        _replay_round, run, bundle, r, why, subs, rec, segments[r], policy
                    ),
                )
            )
        except CodeFailure as exc:
            found.fail("replay", Reason.CODE_FAILURE, str(exc))
            return finish(found, results, model_digest=final_digest, last_index=n)
    return finish(
        found, results, model_digest=final_digest, finalized=final is not None, last_index=n
    )


# -- proof directories ------------------------------------------------------------------


class RoundsDirectorySource:
    """An :class:`~pol_chain.proof.ArtefactSource` over a distributed run's directory."""

    def __init__(self, proof_dir: Path | str) -> None:
        self.root = Path(proof_dir)
        self._paths: dict[bytes, Path] = {}
        spec = self.root / SPEC_FILE
        if spec.exists():
            self._paths[sha256(spec.read_bytes())] = spec
        for ref in self.manifest().refs():
            self._paths[ref.sha256] = self.root / ref.file

    def manifest(self) -> RoundsManifest:
        """The directory's manifest."""
        manifest = parse_any_manifest((self.root / MANIFEST_FILE).read_bytes())
        if not isinstance(manifest, RoundsManifest):
            raise MalformedArtefactError("manifest", "not a distributed run's manifest")
        return manifest

    def get(self, sha256: bytes) -> bytes:
        """The artefact with digest ``sha256`` (bytes as stored; the caller checks)."""
        path = self._paths.get(bytes(sha256))
        if path is None:
            raise KeyError(to_hex(sha256))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"artefact path {path} escapes the proof directory")
        return path.read_bytes()


def is_rounds_dir(proof_dir: Path | str) -> bool:
    """Whether ``proof_dir`` holds a distributed run (its manifest's format says so)."""
    path = Path(proof_dir) / MANIFEST_FILE
    try:
        return isinstance(parse_any_manifest(path.read_bytes()), RoundsManifest)
    except (OSError, FormatError):
        return False


def verify_rounds_dir(
    proof_dir: Path | str, *, run_id: bytes, run_seed: bytes, challenge_seed: bytes, **kwargs: Any
) -> Report:
    """Verify the distributed run in ``proof_dir`` (its manifest's leaves are taken as
    the committed ones unless ``committed_leaves`` is passed)."""
    source = RoundsDirectorySource(proof_dir)
    manifest = source.manifest()
    kwargs.setdefault("committed_leaves", manifest.leaves)
    kwargs.setdefault("model_file", True)
    return verify_rounds(
        manifest, source, run_id=run_id, run_seed=run_seed, challenge_seed=challenge_seed, **kwargs
    )
