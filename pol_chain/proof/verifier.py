"""Verify a proof: integrity, init rule, data order and membership, then replay.

:func:`verify` works from a manifest and any :class:`ArtefactSource` (a directory, or
the CLI's IPFS store), the values committed on chain (leaves, accumulator, spec and
model digests), the run id and run seed (recomputed by the caller from the chain),
and the challenge seed. Hyperparameters always come from the spec. Artefacts are parsed
as data only (safetensors / JSON, bounded). :func:`verify_dir` is the one-line path for
a proof directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pol_chain.commitment import accumulator
from pol_chain.commitment import leaf as make_leaf
from pol_chain.format import (
    Check,
    CheckpointMeta,
    DatasetIndex,
    FormatError,
    Manifest,
    Metrics,
    Reason,
    Report,
    RoundsManifest,
    Segment,
    SegmentResult,
    TaskSpec,
    Thresholds,
    to_hex,
)
from pol_chain.proof.canonical import sha256
from pol_chain.proof.dataset import MerkleTree, verify_membership
from pol_chain.proof.engine import (
    StepSampler,
    check_order_fits,
    is_counter,
    model_tensors,
    step_seeds,
)
from pol_chain.proof.errors import (
    ArtefactUnavailable,
    CannotVerify,
    CodeFailure,
    IntegrityError,
    MembershipError,
    ProofError,
)
from pol_chain.proof.manifest import ArtefactSource, DirectorySource
from pol_chain.proof.policy import Policy, select_segments
from pol_chain.proof.report import write_report
from pol_chain.proof.runner import ContainedRunner, ReplayJob, TaskRunner
from pol_chain.proof.serialization import digest_model, load_checkpoint_bytes
from pol_chain.proof.shards import ShardDataset, check_index, shards_for, verify_shard
from pol_chain.proof.spec import check_bundle, environment_facts
from pol_chain.proof.task import check_source, configure_determinism

__all__ = ["compare_states", "verify", "verify_dir"]

State = dict[str, torch.Tensor]
MAX_DETAILS = 20


def _flat(state: State, keys: Sequence[str]) -> torch.Tensor:
    parts = [state[k].detach().to("cpu", torch.float64).reshape(-1) for k in keys]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Comparison:
    """How a replayed state W' compares with the claimed W_{i+1}."""

    metrics: Metrics
    bitwise_identical: bool
    exact_fields_equal: bool


def _part_distance(
    replayed: State, claimed: State, previous: State, keys: list[str]
) -> tuple[float, float]:
    """(normalized error, direction cosine) of one part of the state."""
    w_new, w_claim = _flat(replayed, keys), _flat(claimed, keys)
    w_prev = _flat({k: previous.get(k, torch.zeros_like(claimed[k])) for k in keys}, keys)
    l2 = float((w_new - w_claim).norm())
    update, replay_update = w_claim - w_prev, w_new - w_prev
    update_norm = float(update.norm())
    if update_norm == 0:
        return (0.0, 1.0) if l2 == 0 else (math.inf, -1.0)
    denom = float(replay_update.norm()) * update_norm
    return l2 / update_norm, float(replay_update @ update) / denom if denom > 0 else -1.0


def compare_states(replayed: State, claimed: State, previous: State) -> Comparison:
    """Compare a replayed state W' with the claimed W_{i+1}, relative to W_i.

    Counters (:func:`~pol_chain.proof.engine.is_counter`) and integer tensors must be
    equal. The normalized error and direction cosine are the worst of two parts, each
    against its own update: the model (parameters, buffers) and the optimizer state, so
    that a part whose update is large cannot hide a change to the other."""
    floats = sorted(k for k, v in claimed.items() if v.is_floating_point() and not is_counter(k))
    distances = set(floats)
    exact = sorted(k for k in claimed if k not in distances)
    w_new, w_claim = _flat(replayed, floats), _flat(claimed, floats)
    w_prev = _flat({k: previous.get(k, torch.zeros_like(claimed[k])) for k in floats}, floats)
    diff = w_new - w_claim
    l2 = float(diff.norm())
    cos = (
        float(torch.nn.functional.cosine_similarity(w_new, w_claim, dim=0, eps=1e-30))
        if floats
        else 1.0
    )
    parts = [
        [k for k in floats if k.startswith("model.")],
        [k for k in floats if not k.startswith("model.")],
    ]
    found = [_part_distance(replayed, claimed, previous, keys) for keys in parts if keys]
    normalized = max((e for e, _ in found), default=0.0)
    direction = min((d for _, d in found), default=1.0)
    return Comparison(
        metrics=Metrics(
            cosine=_num(cos),
            cosine_distance=_num(1.0 - cos),
            direction_cosine=_num(direction),
            l1=_num(float(diff.abs().sum())),
            l2=_num(l2),
            linf=_num(float(diff.abs().max()) if diff.numel() else 0.0),
            normalized_error=_num(normalized),
            update_norm=_num(float((w_claim - w_prev).norm())),
        ),
        bitwise_identical=all(torch.equal(replayed[k].cpu(), claimed[k].cpu()) for k in claimed),
        exact_fields_equal=all(torch.equal(replayed[k].cpu(), claimed[k].cpu()) for k in exact),
    )


@dataclass
class _Findings:
    """What the checks found so far: reasons and each check's details."""

    reasons: set[Reason] = field(default_factory=set)
    details: dict[str, list[str]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def fail(self, check: str, reason: Reason, detail: str) -> None:
        self.reasons.add(reason)
        self.failed.add(check)
        found = self.details.setdefault(check, [])
        if len(found) < MAX_DETAILS:
            found.append(f"{reason.value}: {detail}")

    def ok(self, check: str) -> None:
        self.details.setdefault(check, [])

    def checks(self) -> dict[str, Check]:
        return {
            name: Check(name not in self.failed, tuple(found))
            for name, found in self.details.items()
        }


@dataclass
class _Ctx:
    spec: TaskSpec
    manifest: Manifest
    source: ArtefactSource
    run_id: bytes
    run_seed: bytes
    found: _Findings = field(default_factory=_Findings)
    index: DatasetIndex | None = None
    unseeded: set[int] = field(default_factory=set)
    """Segments whose seeds are not the run seed's: judged, never replayed."""

    def fetch(self, digest: bytes, what: str) -> bytes | None:
        """The artefact's bytes; None (and a reason) when they are not its committed bytes.
        An artefact the source does not have raises :class:`ArtefactUnavailable`."""
        try:
            data = self.source.get(digest)
        except KeyError:
            raise ArtefactUnavailable(what, digest) from None
        except IntegrityError as exc:
            self.found.fail("integrity", Reason.ARTEFACT_DIGEST, f"{what}: {exc}")
            return None
        if sha256(data) != digest:
            self.found.fail(
                "integrity", Reason.ARTEFACT_DIGEST, f"{what} does not hash to {to_hex(digest)}"
            )
            return None
        return data

    def checkpoint(self, index: int) -> tuple[State, CheckpointMeta] | None:
        entry = self.manifest.entries[index]
        data = self.fetch(entry.checkpoint.sha256, f"checkpoint {index}")
        if data is None:
            return None
        try:
            tensors, meta = load_checkpoint_bytes(data, f"checkpoint {index}")
        except FormatError as exc:
            self.found.fail("integrity", exc.reason, str(exc))
            return None
        if meta.step != entry.step:
            self.found.fail(
                "integrity", Reason.STEP_MISMATCH, f"checkpoint {index} says step {meta.step}"
            )
        return tensors, meta

    def segment(self, index: int) -> Segment | None:
        ref = self.manifest.entries[index].segment
        data = self.fetch(ref.sha256, f"segment {index}") if ref is not None else None
        if data is None:
            return None
        what = f"segment {index}"
        try:
            seg = Segment.from_bytes(data, what)
        except FormatError as exc:
            self.found.fail("integrity", exc.reason, str(exc))
            return None
        entries = self.manifest.entries
        if (seg.index, seg.start_step, seg.end_step) != (
            index,
            entries[index - 1].step,
            entries[index].step,
        ):
            self.found.fail(
                "integrity",
                Reason.MALFORMED_ARTEFACT,
                f"malformed artefact {what}: index/steps do not match the manifest",
            )
            return None
        return seg


def _check_leaves(ctx: _Ctx, committed: Sequence[bytes] | None, acc: bytes | None) -> None:
    leaves: list[bytes] = []
    for entry in ctx.manifest.entries:
        value = make_leaf(
            ctx.run_id, entry.index, entry.step, entry.checkpoint.sha256, entry.segment_sha256
        )
        leaves.append(value)
        if value != entry.leaf:
            ctx.found.fail(
                "integrity",
                Reason.LEAF_MISMATCH,
                f"manifest leaf {entry.index} is not the recomputed leaf",
            )
    if committed is not None:
        committed = [bytes(c) for c in committed]
        if len(committed) != len(leaves):
            ctx.found.fail(
                "integrity",
                Reason.LEAF_MISMATCH,
                f"{len(committed)} leaves committed, proof has {len(leaves)}",
            )
        for i, (a, b) in enumerate(zip(leaves, committed, strict=False)):
            if a != b:
                ctx.found.fail(
                    "integrity", Reason.LEAF_MISMATCH, f"leaf {i} differs from the committed leaf"
                )
    if acc is not None and accumulator(leaves) != bytes(acc):
        ctx.found.fail(
            "integrity",
            Reason.ACCUMULATOR_MISMATCH,
            "leaves do not fold to the committed accumulator",
        )
    ctx.found.ok("integrity")


def _check_init(ctx: _Ctx, w0: State, runner: TaskRunner) -> None:
    model = model_tensors(w0)
    if any(not k.startswith("model.") for k in w0):
        ctx.found.fail("init", Reason.INIT_MISMATCH, "checkpoint 0 carries optimizer state")
    parent = ctx.spec.parent_digest
    if parent is not None:
        got = digest_model(model)
        if got != parent:
            ctx.found.fail(
                "init",
                Reason.INIT_MISMATCH,
                f"W0 hashes to {to_hex(got)}, parent is {to_hex(parent)}",
            )
    else:
        expected = runner.initial_model()
        same = set(expected) == set(model) and all(
            torch.equal(expected[k].cpu(), model[k]) for k in expected
        )
        if not same:
            ctx.found.fail(
                "init", Reason.INIT_MISMATCH, "W0 is not the seeded init of this run seed"
            )
    ctx.found.ok("init")


def _check_order(ctx: _Ctx, seg: Segment, sampler: StepSampler) -> None:
    """Every step's micro-batches and seeds are the run seed's. A segment whose seeds are
    not is not replayed (:attr:`_Ctx.unseeded`): its step would run on seeds the run
    never had, or none."""
    for st in seg.steps:
        t = st.step
        if t >= sampler.total_steps:
            ctx.found.fail(
                "data_order",
                Reason.STEP_MISMATCH,
                f"step {t} beyond the spec's {sampler.total_steps}",
            )
            return
        if [list(b) for b in st.batches] != sampler.micro_batches(t):
            ctx.found.fail(
                "data_order",
                Reason.DATA_ORDER,
                f"segment {seg.index} step {t}: batch is not the run seed's",
            )
            return
        if dict(st.seeds) != step_seeds(ctx.run_seed, t):
            ctx.unseeded.add(seg.index)
            ctx.found.fail(
                "data_order",
                Reason.DATA_ORDER,
                f"segment {seg.index} step {t}: seeds are not the run seed's",
            )
            return
    ctx.found.ok("data_order")


def _check_steps(ctx: _Ctx) -> None:
    """Checkpoint i sits at step i·k; the last one anywhere after the one before it up to
    i·k (a run may stop early and finalize there), never past the spec's last step; a
    proof of no step at all proves no learning."""
    spec, entries = ctx.spec, ctx.manifest.entries
    planned = (ctx.manifest.k, ctx.manifest.total_steps)
    if planned != (spec.k, spec.total_steps):
        ctx.found.fail(
            "integrity",
            Reason.STEP_MISMATCH,
            f"the manifest plans k={planned[0]}, {planned[1]} steps; the spec k={spec.k}, "
            f"{spec.total_steps} steps",
        )
    last = len(entries) - 1
    if last == 0:
        ctx.found.fail("integrity", Reason.STEP_MISMATCH, "the proof records no training step")
    for i, entry in enumerate(entries):
        want = min(i * spec.k, spec.total_steps)
        ok = entry.step == want
        if i == last and i > 0:
            ok = (i - 1) * spec.k < entry.step <= want
        if not ok:
            ctx.found.fail(
                "integrity",
                Reason.STEP_MISMATCH,
                f"checkpoint {i} at step {entry.step}, spec says {want}",
            )


def _update_sizes(ctx: _Ctx, runner: TaskRunner) -> tuple[list[float], State | None]:
    """Parse every checkpoint (init rule on W0); return each segment's model update size
    (for top-Q) and the last checkpoint's state."""
    sizes: list[float] = []
    prev = ctx.checkpoint(0)
    if prev is not None:
        _check_init(ctx, prev[0], runner)
    last = prev[0] if prev else None
    for i in range(1, len(ctx.manifest.entries)):
        cur = ctx.checkpoint(i)
        if cur is None or prev is None:
            sizes.append(0.0)
        else:
            keys = sorted(
                k for k, v in cur[0].items() if k.startswith("model.") and v.is_floating_point()
            )
            a = _flat(cur[0], keys)
            b = _flat({k: prev[0].get(k, torch.zeros_like(cur[0][k])) for k in keys}, keys)
            sizes.append(float((a - b).norm()))
        prev = cur
        last = cur[0] if cur else None
    return sizes, last


def _check_model(ctx: _Ctx, last: State | None, model_digest: bytes | None) -> bytes | None:
    final = ctx.manifest.final
    claimed = model_digest or (final.model.sha256 if final is not None else None)
    digest = digest_model(model_tensors(last)) if last is not None else None
    if digest is not None and claimed is not None and digest != claimed:
        ctx.found.fail(
            "integrity",
            Reason.MODEL_DIGEST_MISMATCH,
            f"last checkpoint's model is {to_hex(digest)}",
        )
    if final is not None and model_digest is not None and final.model.sha256 != model_digest:
        ctx.found.fail(
            "integrity",
            Reason.MODEL_DIGEST_MISMATCH,
            "manifest's final model is not the committed one",
        )
    return digest


def _committed_dataset(ctx: _Ctx) -> ShardDataset | None:
    """The committed dataset of a sharded spec, its index checked against the spec's root;
    None (and a reason) when the index is not that. Shards load lazily, each checked."""
    locator = ctx.spec.dataset.index
    assert locator is not None
    data = ctx.fetch(locator.sha256, "dataset index")
    if data is None:
        return None
    try:
        index = DatasetIndex.from_bytes(data)
        check_index(index, ctx.spec.dataset)
    except FormatError as exc:
        ctx.found.fail("membership", exc.reason, str(exc))
        return None
    except MembershipError as exc:
        ctx.found.fail("membership", Reason.MEMBERSHIP, str(exc))
        return None
    ctx.index = index

    def shard(number: int) -> bytes:
        found = ctx.fetch(index.shards[number].sha256, f"dataset shard {number}")
        if found is None:
            raise MembershipError(f"dataset shard {number} is not the committed one")
        return found

    return ShardDataset(index, shard, verify=True)


def _check_shard_membership(
    ctx: _Ctx, chosen: dict[int, list[str]], segments: dict[int, Segment]
) -> None:
    """Every sample of a replayed segment lies in a shard whose samples fold to the
    committed root (each needed shard fetched and checked; none other)."""
    index = ctx.index
    assert index is not None
    used = sorted(
        {j for i in chosen if i in segments for st in segments[i].steps for j in st.indices}
    )
    outside = [j for j in used if j >= index.size]
    for j in outside[:MAX_DETAILS]:
        ctx.found.fail("membership", Reason.MEMBERSHIP, f"index {j} is outside the dataset")
    for number in shards_for(index, [j for j in used if j < index.size]):
        data = ctx.fetch(index.shards[number].sha256, f"dataset shard {number}")
        if data is None:
            continue
        try:
            verify_shard(index, number, data)
        except (FormatError, MembershipError, IntegrityError) as exc:
            ctx.found.fail("membership", Reason.MEMBERSHIP, f"shard {number}: {exc}")
    ctx.found.ok("membership")


def _check_membership(
    ctx: _Ctx,
    chosen: dict[int, list[str]],
    segments: dict[int, Segment],
    leaves: Sequence[bytes],
    proofs: Callable[[int], Sequence[bytes]],
) -> None:
    root, size = ctx.spec.dataset.root, ctx.spec.dataset.size
    opened: dict[int, bool] = {}
    for i in chosen:
        seg = segments.get(i)
        for st in seg.steps if seg is not None else ():
            for j in st.indices:
                if j not in opened:
                    opened[j] = 0 <= j < len(leaves) and verify_membership(
                        leaves[j], j, size, proofs(j), root
                    )
                if not opened[j]:
                    ctx.found.fail(
                        "membership",
                        Reason.MEMBERSHIP,
                        f"index {j} (segment {i}) does not open to the dataset root",
                    )
    ctx.found.ok("membership")


def verify(
    manifest: Manifest | RoundsManifest,
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
    runner: TaskRunner | None = None,
    model_file: bool = False,
) -> Report:
    """Verify a proof and return its :class:`~pol_chain.format.Report` (also written to
    ``out_dir``).

    The report's verdict depends on the proof alone (docs/protocol.md §4). What is not the
    trainer's to blame raises instead of failing: :class:`CannotVerify` (this machine
    cannot run the task, or lacks the parent model) and :class:`ArtefactUnavailable` (the
    source lacks an artefact; the caller applies the availability deadline).

    ``runner`` runs the task's code (default: :class:`InProcessRunner`, this process).
    ``dataset`` is the data the replay uses (default: the dataset the spec's task builds);
    every index of a replayed segment must open to the spec's committed root, with paths
    from ``dataset_proofs(index)`` (default: the Merkle tree of the runner's leaves).
    With ``model_file`` the final model's own file is fetched and hashed too (a proof
    directory ships it; a claim commits only its digest).
    """
    if isinstance(manifest, RoundsManifest):  # a distributed run (docs/distributed.md)
        args = dict(locals())
        del args["runner"]  # rounds replay in-process, from installed code that packs to
        # the committed bundle (docs/distributed.md): a sandboxed round runner is left to do
        from pol_chain.proof.rounds import verify_rounds

        return verify_rounds(**args)
    policy = policy or Policy()
    env = configure_determinism(deterministic, threads)
    base: dict[str, Any] = {
        "challenge_seed": bytes(challenge_seed),
        "environment": {**environment_facts(device, deterministic), **env},
        "policy": policy.to_json(),
        "run_id": bytes(run_id),
        "thresholds": Thresholds(rho=policy.rho, c=policy.c),
    }

    def finish(
        found: _Findings,
        segments: Sequence[SegmentResult] = (),
        **values: Any,
    ) -> Report:
        report = Report.build(
            reasons=found.reasons, segments=segments, checks=found.checks(), **base, **values
        )
        if out_dir is not None:
            write_report(report, out_dir)
        return report

    want_spec = spec_digest or manifest.spec_sha256
    try:
        raw = spec_bytes if spec_bytes is not None else source.get(want_spec)
    except KeyError:
        raise ArtefactUnavailable("spec", want_spec) from None
    try:
        if sha256(raw) != want_spec:
            raise ProofError(f"spec does not hash to the committed {to_hex(want_spec)}")
        if manifest.spec_sha256 != want_spec:
            raise ProofError("manifest names another spec than the committed one")
        spec = TaskSpec.from_bytes(raw)
    except (ProofError, FormatError) as exc:
        spec_found = _Findings()
        spec_found.fail("spec", Reason.SPEC_INVALID, str(exc))
        spec_found.details["spec"] = [str(exc)]
        return finish(spec_found)
    ctx = _Ctx(spec, manifest, source, bytes(run_id), bytes(run_seed))
    base["spec_sha256"] = spec.digest
    shards = None
    if spec.dataset.sharded:
        shards = _committed_dataset(ctx)
        if shards is None:
            return finish(ctx.found)
    if runner is None:
        try:
            check_source(spec) if spec.version == 1 else check_bundle(spec)
            runner = ContainedRunner.build(spec, run_seed, device, parent_model, dataset, shards)
        except CodeFailure as exc:  # the committed code does not build on its config
            ctx.found.fail("replay", Reason.CODE_FAILURE, str(exc))
            return finish(ctx.found)
        except CannotVerify:
            raise
        except (ProofError, FormatError) as exc:
            raise CannotVerify(
                f"cannot run the task of this proof here: {exc}",
                hint="install the trainer's task module (same source) on this machine",
            ) from None
    try:
        return _verify_run(
            ctx,
            runner,
            policy,
            challenge_seed,
            committed_leaves,
            committed_accumulator,
            model_digest,
            dataset_proofs,
            finish,
            model_file,
        )
    except CodeFailure as exc:
        ctx.found.fail("replay", Reason.CODE_FAILURE, str(exc))
        return finish(ctx.found)
    except FormatError as exc:  # what the runner found malformed in the proof's data
        ctx.found.fail("integrity", exc.reason, str(exc))
        return finish(ctx.found)


def _dataset_matches(ctx: _Ctx, runner: TaskRunner) -> bool:
    """The spec's dataset size is the size of the data the task trains on (a committed
    index's size was checked against the spec already): else fail ``membership``. The
    run's order must fit this machine: else :class:`CannotVerify`, before any allocation
    (a spec of 2^40 samples must not take the verifier down)."""
    claimed = ctx.spec.dataset.size
    actual = ctx.index.size if ctx.index is not None else runner.dataset_size()
    if claimed != actual:
        ctx.found.fail(
            "membership",
            Reason.MEMBERSHIP,
            f"the spec commits {claimed} samples, the task's dataset has {actual}",
        )
        return False
    check_order_fits(claimed)
    return True


def _verify_run(
    ctx: _Ctx,
    runner: TaskRunner,
    policy: Policy,
    challenge_seed: bytes,
    committed_leaves: Sequence[bytes] | None,
    committed_accumulator: bytes | None,
    model_digest: bytes | None,
    dataset_proofs: Callable[[int], Sequence[bytes]] | None,
    finish: Callable[..., Report],
    model_file: bool,
) -> Report:
    spec, manifest, run_seed = ctx.spec, ctx.manifest, ctx.run_seed
    entries = manifest.entries
    _check_leaves(ctx, committed_leaves, committed_accumulator)
    if not entries:
        ctx.found.fail("integrity", Reason.MALFORMED_ARTEFACT, "manifest lists no checkpoint")
        return finish(ctx.found)
    _check_steps(ctx)
    finalized = manifest.final is not None
    n = len(entries) - 1
    update_sizes, last_state = _update_sizes(ctx, runner)
    final_digest = _check_model(ctx, last_state, model_digest)
    if model_file and manifest.final is not None:
        ctx.fetch(manifest.final.model.sha256, "final model file")  # hashes it
    if not _dataset_matches(ctx, runner):
        return finish(ctx.found, model_digest=final_digest, finalized=finalized, last_index=n)
    sampler = StepSampler.of(spec, run_seed)
    segments: dict[int, Segment] = {}
    for i in range(1, n + 1):
        seg = ctx.segment(i)
        if seg is not None:
            segments[i] = seg
            _check_order(ctx, seg, sampler)
    seg_steps = [entries[i].step - entries[i - 1].step for i in range(1, n + 1)]
    seg_epochs = [
        max(0, entries[i].step - 1) // max(1, spec.steps_per_epoch) for i in range(1, n + 1)
    ]
    chosen = select_segments(policy, challenge_seed, seg_steps, seg_epochs, update_sizes)
    if ctx.index is not None:
        _check_shard_membership(ctx, chosen, segments)
    else:
        leaves = runner.sample_leaves()
        if dataset_proofs is None:
            dataset_proofs = MerkleTree(leaves).proof
        _check_membership(ctx, chosen, segments, leaves, dataset_proofs)
    results = _replay_all(ctx, runner, chosen, segments, policy)
    return finish(
        ctx.found,
        results,
        model_digest=final_digest,
        finalized=finalized,
        last_index=n,
    )


def _replay_all(
    ctx: _Ctx,
    runner: TaskRunner,
    chosen: dict[int, list[str]],
    segments: dict[int, Segment],
    policy: Policy,
) -> list[SegmentResult]:
    """Replay every chosen segment (one batch for the runner) and judge each."""
    starts: dict[int, tuple[State, CheckpointMeta]] = {}
    ends: dict[int, State] = {}
    jobs = []
    for i in chosen:
        start, end, seg = ctx.checkpoint(i - 1), ctx.checkpoint(i), segments.get(i)
        if start is not None and end is not None and seg is not None and i not in ctx.unseeded:
            starts[i], ends[i] = start, end[0]
            jobs.append(ReplayJob(i, start[0], start[1], seg.steps))
    replayed = runner.replay(jobs) if jobs else {}
    results = []
    for i, why in chosen.items():
        outcome = replayed.get(i)
        if i in ctx.unseeded:
            results.append(_segment_result(ctx, i, why, [Reason.DATA_ORDER]))
        elif outcome is None or outcome.state is None:
            error = outcome.error if outcome is not None else None
            reason = error.reason if error is not None else Reason.MALFORMED_ARTEFACT
            results.append(_segment_result(ctx, i, why, [reason]))
        else:
            results.append(_judge(ctx, i, why, outcome.state, ends[i], starts[i][0], policy))
    return results


def _segment_result(
    ctx: _Ctx,
    index: int,
    why: Sequence[str],
    reasons: list[Reason],
    metrics: Metrics | None = None,
    bitwise: bool = False,
) -> SegmentResult:
    ctx.found.reasons.update(reasons)
    entries = ctx.manifest.entries
    return SegmentResult(
        index=index,
        start_step=entries[index - 1].step,
        end_step=entries[index].step,
        selected_by=tuple(why),
        metrics=metrics,
        bitwise_identical=bitwise,
        passed=not reasons,
        reasons=tuple(reasons),
    )


def _judge(
    ctx: _Ctx,
    index: int,
    why: Sequence[str],
    replayed: State,
    claimed: State,
    start: State,
    policy: Policy,
) -> SegmentResult:
    """Accept a replayed state within ρ and c of the claimed one (over the full state)."""
    if set(replayed) != set(claimed) or any(
        replayed[k].shape != claimed[k].shape or replayed[k].dtype != claimed[k].dtype
        for k in replayed
    ):
        return _segment_result(ctx, index, why, [Reason.STATE_STRUCTURE])
    cmp = compare_states(replayed, claimed, start)
    m = cmp.metrics
    fail: list[Reason] = []
    if m.normalized_error is None or m.normalized_error > policy.rho or not cmp.exact_fields_equal:
        fail.append(Reason.REPLAY_DISTANCE)
    if not cmp.bitwise_identical and (m.direction_cosine is None or m.direction_cosine < policy.c):
        fail.append(Reason.DIRECTION)
    return _segment_result(ctx, index, why, fail, m, cmp.bitwise_identical)


def verify_dir(
    proof_dir: Path | str, *, run_id: bytes, run_seed: bytes, challenge_seed: bytes, **kwargs: Any
) -> Report:
    """Verify the proof directory ``proof_dir`` (its manifest's leaves are taken as the
    committed ones unless ``committed_leaves`` is passed)."""
    from pol_chain.proof import rounds

    if rounds.is_rounds_dir(proof_dir):  # a distributed run (docs/distributed.md)
        seeds = {"run_id": run_id, "run_seed": run_seed, "challenge_seed": challenge_seed}
        return rounds.verify_rounds_dir(proof_dir, **seeds, **kwargs)
    source = DirectorySource(proof_dir)
    manifest = source.manifest()
    kwargs.setdefault("committed_leaves", manifest.leaves)
    kwargs.setdefault("model_file", True)
    return verify(
        manifest, source, run_id=run_id, run_seed=run_seed, challenge_seed=challenge_seed, **kwargs
    )
