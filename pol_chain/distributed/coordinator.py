"""The coordinator (rank 0, the model owner): verified data-parallel rounds.

Each round r (``docs/distributed.md``):

1. send the global state (the committed checkpoint's bytes) to every active worker;
2. gather the submissions (state + segment) until the round's deadline — a dead or late
   worker is dropped, never waited for;
3. store them, write the submissions record and **commit leaf 2r-1** binding them;
4. read back the hash of the block that mined it: the draw's seed, unknown to every
   worker when it submitted;
5. check every submission (format, step, structure, data order), find the outlying
   updates, draw ⌊p·n⌉ submitters, and replay the drawn and the outlying ones;
6. reject those whose replay fails (reasons recorded), exclude a worker at its
   ``max_rejections``-th rejection, aggregate the accepted states (mean), write the
   global checkpoint and the round record, and **commit leaf 2r**.

After the last round the final model is claimed with ``finalizeRun``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pol_chain.commitment import ZERO32
from pol_chain.commitment import leaf as make_leaf
from pol_chain.distributed.outliers import OutlierRule, find_outliers, model_update
from pol_chain.distributed.publish import RoundsPublisher
from pol_chain.distributed.wire import HELLO, STOP, SUBMIT, TRAIN, Channel, Limits, PeerLost
from pol_chain.errors import PolchainError
from pol_chain.format import (
    MODEL_FILE,
    ArtefactRef,
    CheckpointMeta,
    DistributedPlan,
    Draw,
    FormatError,
    Hello,
    Reason,
    RoundRecord,
    RoundsEntry,
    RoundsManifest,
    RunBinding,
    Segment,
    Submissions,
    TaskSpec,
    WorkerSubmission,
    WorkerVerdict,
    checkpoint_name,
    model_meta,
    to_hex,
)
from pol_chain.format.rounds import (
    ACCEPTED,
    EXCLUDED,
    MISSING,
    REJECTED,
    SUBMITTED,
    global_name,
    round_record_name,
    submissions_name,
    worker_segment_name,
    worker_state_name,
)
from pol_chain.proof.canonical import atomic_write
from pol_chain.proof.engine import model_tensors
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import Policy
from pol_chain.proof.rounds import (
    Schedule,
    State,
    aggregate,
    check_submission,
    draw,
    draw_seed,
    global_meta,
    initial_state,
    structure_problem,
    train_local,
)
from pol_chain.proof.serialization import (
    load_checkpoint_bytes,
    serialize_state,
    write_state,
)
from pol_chain.proof.task import configure_determinism

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.store import ArtefactStore

__all__ = ["Coordinator", "DistributedResult", "RoundSummary", "WorkerStatus"]

ACTIVE, LOST = "active", "lost"


@dataclass
class WorkerStatus:
    """A worker over the run: ``active``, ``excluded`` or ``lost`` (dead or late), and
    what happened to its submissions."""

    rank: int
    state: str = ACTIVE
    accepted: int = 0
    rejected: int = 0
    missing: int = 0
    checked: int = 0
    why: str = ""


@dataclass(frozen=True)
class RoundSummary:
    """What one round did (information for people and benchmarks; the committed truth is
    the round record). ``train_seconds`` sums the CPU seconds the workers *reported*;
    ``verify_seconds`` is the coordinator's CPU time spent on checks, outlier tests, the
    draw and replays (not on receiving, storing, committing or aggregating)."""

    round: int
    submitted: tuple[int, ...]
    accepted: tuple[int, ...]
    rejected: dict[int, tuple[str, ...]]
    missing: tuple[int, ...]
    checked: dict[int, tuple[str, ...]]
    picked: tuple[int, ...]
    excluded: tuple[int, ...]
    block: int
    block_hash: bytes
    verify_seconds: float
    train_seconds: float


@dataclass(frozen=True)
class DistributedResult:
    """A finished distributed run."""

    run_id: bytes
    proof_dir: Path
    model_digest: bytes
    test_accuracy: float | None
    rounds: tuple[RoundSummary, ...]
    workers: dict[int, WorkerStatus]
    finalized: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "run_id": to_hex(self.run_id),
            "proof_dir": str(self.proof_dir),
            "model_digest": to_hex(self.model_digest),
            "test_accuracy": self.test_accuracy,
            "finalized": self.finalized,
            "seconds": round(self.seconds, 3),
            "rounds": [
                {
                    "round": r.round,
                    "accepted": list(r.accepted),
                    "rejected": {str(k): list(v) for k, v in r.rejected.items()},
                    "missing": list(r.missing),
                    "checked": {str(k): list(v) for k, v in r.checked.items()},
                    "excluded": list(r.excluded),
                }
                for r in self.rounds
            ],
            "workers": {
                str(w.rank): {
                    "state": w.state,
                    "accepted": w.accepted,
                    "rejected": w.rejected,
                    "missing": w.missing,
                    "checked": w.checked,
                    "why": w.why,
                }
                for w in self.workers.values()
            },
        }


@dataclass
class _Candidate:
    state: State
    meta: CheckpointMeta
    segment: Segment


@dataclass
class _Judged:
    verdicts: dict[int, WorkerVerdict] = field(default_factory=dict)
    accepted: dict[int, State] = field(default_factory=dict)
    picked: tuple[int, ...] = ()
    seconds: float = 0.0


class Coordinator:
    """Runs a registered distributed run (``binding``) as rank 0 of the default process
    group, whose ranks 1..N are the workers (:func:`pol_chain.distributed.run_worker`)."""

    def __init__(
        self,
        spec: TaskSpec,
        binding: RunBinding,
        proof_dir: Path,
        client: LedgerClient,
        store: ArtefactStore,
        *,
        policy: Policy | None = None,
        rule: OutlierRule | None = None,
        round_timeout: float = 120.0,
        hello_timeout: float = 300.0,
        device: str = "cpu",
        finalize: bool = True,
        log: Callable[[str], None] | None = None,
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        plan = DistributedPlan.of_config(spec.config)
        if plan is None:
            raise PolchainError(
                "the spec has no distributed plan", hint="build it with distributed_spec()"
            )
        if spec.parent_digest is not None:
            raise PolchainError("distributed runs start from the seeded init (no parent model)")
        if binding.spec_sha256 != to_hex(spec.digest):
            raise PolchainError("the run is registered for another spec")
        self.spec, self.plan, self.binding = spec, plan, binding
        self.proof_dir, self.client, self.store = Path(proof_dir), client, store
        self.policy = policy or Policy()
        self.rule = rule or OutlierRule()
        self.round_timeout, self.hello_timeout = round_timeout, hello_timeout
        self.device, self.finalize_run = device, finalize
        self.log = log or (lambda _m: None)
        self.on_event = on_event or (lambda _e, _r: None)
        self.channel = Channel()
        self.publisher = RoundsPublisher(self.proof_dir, store, client, binding)
        self.run_id, self.run_seed = binding.run_id_bytes, binding.run_seed
        self.workers = {w: WorkerStatus(w) for w in range(1, plan.workers + 1)}
        self._previous: list[torch.Tensor] = []

    # -- helpers ---------------------------------------------------------------------------

    def _bytes(self, name: str, data: bytes) -> ArtefactRef:
        atomic_write(self.proof_dir / name, data)
        return ArtefactRef(name, hashlib.sha256(data).digest())

    def _model_file(self, model: Mapping[str, torch.Tensor]) -> ArtefactRef:
        digest = write_state(self.proof_dir / MODEL_FILE, model, model_meta())
        return ArtefactRef(MODEL_FILE, digest)

    def _lose(self, rank: int, why: str) -> None:
        status = self.workers[rank]
        if status.state == ACTIVE:
            status.state, status.why = LOST, why
            self.log(f"worker {rank} lost: {why}")
            try:  # a late worker that is still alive finds it when it is done
                self.channel.send(rank, STOP, 0)
            except PeerLost:
                pass

    def _active(self) -> list[int]:
        return [w for w, s in self.workers.items() if s.state == ACTIVE]

    def _send(self, rank: int, kind: int, round_: int, parts: tuple[bytes, ...] = ()) -> None:
        try:
            self.channel.send(rank, kind, round_, parts)
        except PeerLost as exc:
            self._lose(rank, exc.why)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> DistributedResult:
        """Run every round, claim the model; the torch thread count is restored after."""
        prior = torch.get_num_threads()
        try:
            return self._run(time.perf_counter())
        finally:
            torch.set_num_threads(prior)

    def _run(self, started: float) -> DistributedResult:
        plan, spec = self.plan, self.spec
        configure_determinism(True, plan.threads)
        hello_parts = {
            w: (
                Hello(
                    self.client.chain_id,
                    self.client.address,
                    self.run_id,
                    spec.digest,
                    w,
                    self.device,
                ).to_bytes(),
                spec.to_bytes(),
            )
            for w in self.workers
        }
        for w in self.workers:  # first: the workers build their task while we do ours
            self._send(w, HELLO, 0, hello_parts[w])
        self.bundle = build_bundle(spec, self.run_seed, self.device)
        self.schedule = Schedule.of(spec, self.run_seed, plan)
        for rank in self.workers:
            self.schedule.steps(1, rank)  # every shard holds a batch
        base, base_meta = initial_state(self.bundle)
        w0_bytes = serialize_state(base, base_meta)
        w0 = self._bytes(checkpoint_name(0), w0_bytes)
        manifest = RoundsManifest.new(self.run_id, spec.digest).with_entry(
            RoundsEntry(0, 0, w0, None, make_leaf(self.run_id, 0, 0, w0.sha256, ZERO32))
        )
        self.publisher.commit(manifest)
        self.reference, _ = train_local(self.bundle, base, base_meta, self.schedule.steps(1, 1)[:1])
        self.limits = Limits(
            4 * len(w0_bytes) + (1 << 20), (1 << 20) + 32 * plan.local_steps * spec.batch_size
        )
        summaries: list[RoundSummary] = []
        base_bytes, base_ref = w0_bytes, w0
        for r in range(1, plan.rounds + 1):
            if not self._active():
                self.log(f"no worker left before round {r}: the run ends")
                break
            manifest, summary, base, base_meta, base_bytes, base_ref = self._round(
                r, manifest, base, base_meta, base_bytes, base_ref
            )
            summaries.append(summary)
            self.on_event("round", r)
        for w in self._active():
            self._send(w, STOP, 0)
        model = model_tensors(base)
        if manifest.final is None:  # ended early: the claim names the model on chain
            manifest = manifest.with_final(self._model_file(model))
        assert manifest.final is not None
        model_ref = manifest.final.model
        self.publisher.write_local(manifest)
        finalized = False
        if self.finalize_run:
            self.publisher.finalize(manifest)
            finalized = True
        self.bundle.model.load_state_dict({k: v.to(self.device) for k, v in model.items()})
        evaluate = self.bundle.evaluate
        accuracy = evaluate(self.bundle.model) if evaluate is not None else None
        return DistributedResult(
            self.run_id,
            self.proof_dir,
            model_ref.sha256,
            accuracy,
            tuple(summaries),
            dict(self.workers),
            finalized,
            time.perf_counter() - started,
        )

    def _round(
        self,
        r: int,
        manifest: RoundsManifest,
        base: State,
        base_meta: CheckpointMeta,
        base_bytes: bytes,
        base_ref: ArtefactRef,
    ) -> tuple[RoundsManifest, RoundSummary, State, CheckpointMeta, bytes, ArtefactRef]:
        plan = self.plan
        start, end = plan.end_step(r - 1), plan.end_step(r)
        excluded_before = {w for w, s in self.workers.items() if s.state == EXCLUDED}
        for w in self._active():
            self._send(w, TRAIN, r, (base_bytes,))
        self.on_event("sent", r)
        deadline = time.monotonic() + self.round_timeout
        got = self.channel.gather(self._active(), (SUBMIT,), self.limits, deadline, r)
        received: dict[int, tuple[bytes, bytes]] = {}
        train_seconds = 0.0
        for w, msg in got.items():
            if isinstance(msg, PeerLost):
                self._lose(w, msg.why)
                continue
            self.channel.delivered(w)
            received[w] = msg.parts
            train_seconds += msg.extra / 1e6
        entries, artefacts = [], []
        for w in self.workers:
            if w in received:
                state_ref = self._bytes(worker_state_name(r, w), received[w][0])
                seg_ref = self._bytes(worker_segment_name(r, w), received[w][1])
                artefacts += [state_ref, seg_ref]
                entries.append(WorkerSubmission(w, SUBMITTED, state_ref.sha256, seg_ref.sha256))
            else:
                entries.append(WorkerSubmission(w, EXCLUDED if w in excluded_before else MISSING))
                if w not in excluded_before:
                    self.workers[w].missing += 1
        subs = Submissions(r, start, end, base_ref.sha256, tuple(entries))
        subs_ref = self._bytes(submissions_name(r), subs.to_bytes())
        subs_leaf = make_leaf(self.run_id, 2 * r - 1, end, ZERO32, subs_ref.sha256)
        manifest = manifest.with_artefacts(artefacts).with_entry(
            RoundsEntry(2 * r - 1, end, None, subs_ref, subs_leaf)
        )
        committed = self.publisher.commit(manifest)
        block = committed.tx.block_number
        block_hash = self.client.block_hash(block)
        if block_hash is None:
            raise PolchainError(f"the chain does not know block {block} it just mined")
        seed = draw_seed(block_hash, subs_leaf)
        judged = self._judge(r, received, subs, seed, base, base_meta)
        newly_excluded = []
        for w, v in judged.verdicts.items():
            status = self.workers[w]
            status.checked += bool(v.checked_by)
            if v.status == ACCEPTED:
                status.accepted += 1
            elif v.status == REJECTED:
                status.rejected += 1
                if plan.max_rejections and status.rejected >= plan.max_rejections:
                    if status.state == ACTIVE:
                        status.state, status.why = EXCLUDED, f"rejected {status.rejected} times"
                        newly_excluded.append(w)
        for w in newly_excluded:
            self._send(w, STOP, r)
        verdicts = []
        for w in self.workers:
            if w in judged.verdicts:
                verdicts.append(judged.verdicts[w])
            else:
                verdicts.append(WorkerVerdict(w, EXCLUDED if w in excluded_before else MISSING))
        record = RoundRecord(
            r,
            start,
            end,
            base_ref.sha256,
            subs_ref.sha256,
            Draw(block, block_hash, seed, plan.check_probability, judged.picked),
            tuple(verdicts),
            tuple(newly_excluded),
        )
        rec_ref = self._bytes(round_record_name(r), record.to_bytes())
        glob = aggregate(base, [judged.accepted[w] for w in sorted(judged.accepted)])
        glob_meta = global_meta(end)
        glob_bytes = serialize_state(glob, glob_meta)
        glob_ref = self._bytes(global_name(r), glob_bytes)
        manifest = manifest.with_entry(
            RoundsEntry(
                2 * r,
                end,
                glob_ref,
                rec_ref,
                make_leaf(self.run_id, 2 * r, end, glob_ref.sha256, rec_ref.sha256),
            )
        )
        if r == plan.rounds:  # the last round: the committed manifest names the model
            manifest = manifest.with_final(self._model_file(model_tensors(glob)))
        self.publisher.commit(manifest)
        rejected = {
            w: tuple(x.value for x in v.reasons)
            for w, v in judged.verdicts.items()
            if v.status == REJECTED
        }
        checked = {w: v.checked_by for w, v in judged.verdicts.items() if v.checked_by}
        summary = RoundSummary(
            round=r,
            submitted=tuple(sorted(received)),
            accepted=tuple(sorted(judged.accepted)),
            rejected=rejected,
            missing=tuple(
                w for w, e in zip(self.workers, entries, strict=True) if e.status == MISSING
            ),
            checked=checked,
            picked=judged.picked,
            excluded=tuple(newly_excluded),
            block=block,
            block_hash=block_hash,
            verify_seconds=judged.seconds,
            train_seconds=train_seconds,
        )
        self.log(
            f"round {r}: accepted {list(summary.accepted)}, rejected "
            f"{ {w: list(v) for w, v in rejected.items()} }, checked "
            f"{ {w: list(v) for w, v in checked.items()} }, missing {list(summary.missing)}"
            + (f", excluded {newly_excluded}" if newly_excluded else "")
        )
        return manifest, summary, glob, glob_meta, glob_bytes, glob_ref

    def _judge(
        self,
        r: int,
        received: Mapping[int, tuple[bytes, bytes]],
        subs: Submissions,
        seed: bytes,
        base: State,
        base_meta: CheckpointMeta,
    ) -> _Judged:
        plan, out = self.plan, _Judged()
        end = plan.end_step(r)
        candidates: dict[int, _Candidate] = {}

        def reject(
            w: int, reason: Reason, detail: str, why: tuple[str, ...] = (), m: Any = None
        ) -> None:
            out.verdicts[w] = WorkerVerdict(w, REJECTED, why, (reason,), detail[:480], m)

        for w, (state_bytes, seg_bytes) in received.items():
            what = f"round {r} worker {w}"
            try:
                state, meta = load_checkpoint_bytes(state_bytes, f"{what} state")
                segment = Segment.from_bytes(seg_bytes, f"{what} segment")
            except FormatError as exc:
                reject(w, exc.reason, str(exc))
                continue
            tick = time.thread_time()
            problem = structure_problem(state, self.reference)
            if problem is not None:
                reason = (
                    Reason.MALFORMED_ARTEFACT if "non-finite" in problem else Reason.STATE_STRUCTURE
                )
                reject(w, reason, problem)
            elif plan.verify and (meta.step, meta.scheduler_position) != (end, end):
                reject(
                    w, Reason.STEP_MISMATCH, f"state at step {meta.step}, the round ends at {end}"
                )
            elif plan.verify and (segment.index != r or segment.steps != self.schedule.steps(r, w)):
                reject(
                    w, Reason.DATA_ORDER, "the segment's batches or seeds are not the run seed's"
                )
            else:
                candidates[w] = _Candidate(state, meta, segment)
            out.seconds += time.thread_time() - tick
        tick = time.thread_time()
        checked: dict[int, list[str]] = {}
        if plan.verify:
            updates = {w: model_update(c.state, base) for w, c in candidates.items()}
            outliers = find_outliers(updates, self._previous, self.rule)
            self._previous = [torch.cat(list(u.values())) for u in updates.values() if u]
            out.picked = draw(seed, subs.submitted, plan.check_probability)
            for w in out.picked:
                if w in candidates:
                    checked[w] = ["random"]
            for w, tests in outliers.items():
                checked.setdefault(w, []).extend(tests)
        for w, c in candidates.items():
            why = tuple(checked.get(w, ()))
            if not why:
                out.verdicts[w] = WorkerVerdict(w, ACCEPTED)
                out.accepted[w] = c.state
                continue
            judgement = check_submission(
                self.bundle,
                base,
                base_meta,
                c.segment.steps,
                c.state,
                self.policy,
                f"round {r} worker {w} segment",
            )
            if judgement.reasons:
                error = judgement.metrics.normalized_error if judgement.metrics else None
                out.verdicts[w] = WorkerVerdict(
                    w,
                    REJECTED,
                    why,
                    judgement.reasons,
                    f"replay lands elsewhere (normalized error {error})",
                    judgement.metrics,
                )
            else:
                out.verdicts[w] = WorkerVerdict(w, ACCEPTED, why, (), "", judgement.metrics)
                out.accepted[w] = c.state
        out.seconds += time.thread_time() - tick
        return out
