"""Verify a proof: integrity, init rule, data order and membership, then replay.

:func:`verify` works from a manifest and any :class:`ArtefactSource` (a directory, or
the CLI's IPFS store), the values committed on chain (leaves, accumulator, spec and
model digests), the run id and run seed (recomputed by the caller from the chain),
and the challenge seed. Hyperparameters always come from the spec. Artefacts are parsed
as data only (safetensors / JSON). :func:`verify_dir` is the one-line path for a
proof directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pol_chain.commitment import ZERO32, accumulator
from pol_chain.commitment import leaf as make_leaf
from pol_chain.proof.canonical import from_hex, parse_canonical_json, sha256, to_hex
from pol_chain.proof.dataset import MerkleTree, sample_leaf, verify_membership
from pol_chain.proof.engine import StepSampler, model_tensors, replay_steps, step_seeds
from pol_chain.proof.errors import MalformedArtefactError, ProofError, SpecError
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import ArtefactSource, DirectorySource, Manifest
from pol_chain.proof.policy import Policy, select_segments
from pol_chain.proof.recorder import SEGMENT_FORMAT
from pol_chain.proof.report import REPORT_FORMAT, Report
from pol_chain.proof.serialization import digest_state, load_state_bytes
from pol_chain.proof.spec import TaskSpec, environment_facts
from pol_chain.proof.task import TaskBundle, configure_determinism

__all__ = ["compare_states", "verify", "verify_dir"]

State = dict[str, torch.Tensor]


def _flat(state: State, keys: Sequence[str]) -> torch.Tensor:
    parts = [state[k].detach().to("cpu", torch.float64).reshape(-1) for k in keys]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def compare_states(replayed: State, claimed: State, previous: State) -> dict[str, Any]:
    """Compare a replayed state W' with the claimed W_{i+1}, relative to W_i (full state)."""
    keys = sorted(k for k, v in claimed.items() if v.is_floating_point())
    exact = sorted(k for k, v in claimed.items() if not v.is_floating_point())
    w_new, w_claim = _flat(replayed, keys), _flat(claimed, keys)
    w_prev = _flat({k: previous.get(k, torch.zeros_like(claimed[k])) for k in keys}, keys)
    diff = w_new - w_claim
    update = w_claim - w_prev
    l2 = float(diff.norm())
    update_norm = float(update.norm())
    cos = (
        float(torch.nn.functional.cosine_similarity(w_new, w_claim, dim=0, eps=1e-30))
        if len(keys)
        else 1.0
    )
    replay_update = w_new - w_prev
    bitwise = all(torch.equal(replayed[k].cpu(), claimed[k].cpu()) for k in claimed)
    if update_norm > 0:
        normalized = l2 / update_norm
        denom = float(replay_update.norm()) * update_norm
        direction = float(replay_update @ update) / denom if denom > 0 else -1.0
    else:
        normalized = 0.0 if l2 == 0 else math.inf
        direction = 1.0 if l2 == 0 else -1.0
    return {
        "bitwise_identical": bitwise,
        "exact_fields_equal": all(torch.equal(replayed[k].cpu(), claimed[k].cpu()) for k in exact),
        "metrics": {
            "cosine": _num(cos),
            "cosine_distance": _num(1.0 - cos),
            "direction_cosine": _num(direction),
            "l1": _num(float(diff.abs().sum())),
            "l2": _num(l2),
            "linf": _num(float(diff.abs().max()) if diff.numel() else 0.0),
            "normalized_error": _num(normalized),
            "update_norm": _num(update_norm),
        },
    }


@dataclass
class _Ctx:
    spec: TaskSpec
    manifest: Manifest
    source: ArtefactSource
    run_id: bytes
    run_seed: bytes
    reasons: set[str] = field(default_factory=set)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fail(self, check: str, code: str, detail: str) -> None:
        self.reasons.add(code)
        entry = self.checks.setdefault(check, {"details": [], "ok": True})
        entry["ok"] = False
        if len(entry["details"]) < 20:
            entry["details"].append(f"{code}: {detail}")

    def ok(self, check: str) -> None:
        self.checks.setdefault(check, {"details": [], "ok": True})

    def fetch(self, digest: bytes, what: str) -> bytes | None:
        try:
            data = self.source.get(digest)
        except (KeyError, FileNotFoundError, OSError) as exc:
            self.fail("integrity", "missing_artefact", f"{what} {to_hex(digest)}: {exc!r}")
            return None
        if sha256(data) != digest:
            self.fail("integrity", "artefact_digest", f"{what} does not hash to {to_hex(digest)}")
            return None
        return data

    def checkpoint(self, index: int) -> tuple[State, dict[str, Any]] | None:
        entry = self.manifest.entries[index]
        data = self.fetch(from_hex(entry["checkpoint"]["sha256"]), f"checkpoint {index}")
        if data is None:
            return None
        try:
            tensors, meta = load_state_bytes(data, f"checkpoint {index}")
        except MalformedArtefactError as exc:
            self.fail("integrity", exc.code, str(exc))
            return None
        if meta.get("step") != entry["step"]:
            self.fail(
                "integrity", "step_mismatch", f"checkpoint {index} says step {meta.get('step')}"
            )
        return tensors, meta


def _parse_segment(ctx: _Ctx, index: int, data: bytes) -> list[dict[str, Any]] | None:
    what = f"segment {index}"
    try:
        seg = parse_canonical_json(data, what)
        entries = ctx.manifest.entries
        start, end = entries[index - 1]["step"], entries[index]["step"]
        if not isinstance(seg, dict) or seg.get("format") != SEGMENT_FORMAT:
            raise MalformedArtefactError(what, "not a polchain-segment-v1 object")
        steps = seg["steps"]
        if (
            seg["index"] != index
            or seg["start_step"] != start
            or seg["end_step"] != end
            or len(steps) != end - start
        ):
            raise MalformedArtefactError(what, "index/steps do not match the manifest")
        for j, st in enumerate(steps):
            ok = st["step"] == start + j and isinstance(st["indices"], list)
            ok = ok and all(isinstance(i, int) and not isinstance(i, bool) for i in st["indices"])
            ok = (
                ok
                and isinstance(st["seeds"], dict)
                and all(isinstance(v, int) for v in st["seeds"].values())
            )
            if not ok:
                raise MalformedArtefactError(what, f"step entry {j} is ill-formed")
        return steps  # type: ignore[no-any-return]
    except MalformedArtefactError as exc:
        ctx.fail("integrity", exc.code, str(exc))
    except (KeyError, TypeError, AttributeError) as exc:
        ctx.fail("integrity", "malformed_artefact", f"{what}: missing field {exc!r}")
    return None


def _check_leaves(ctx: _Ctx, committed: Sequence[bytes] | None, acc: bytes | None) -> list[bytes]:
    leaves: list[bytes] = []
    for entry in ctx.manifest.entries:
        seg = from_hex(entry["segment"]["sha256"]) if entry["segment"] else ZERO32
        if (entry["index"] == 0) != (entry["segment"] is None):
            ctx.fail(
                "integrity",
                "malformed_artefact",
                f"entry {entry['index']} segment presence is wrong",
            )
        value = make_leaf(
            ctx.run_id, entry["index"], entry["step"], from_hex(entry["checkpoint"]["sha256"]), seg
        )
        leaves.append(value)
        if value != from_hex(entry["leaf"]):
            ctx.fail(
                "integrity",
                "leaf_mismatch",
                f"manifest leaf {entry['index']} is not the recomputed leaf",
            )
    if committed is not None:
        committed = [bytes(from_hex(c) if isinstance(c, str) else c) for c in committed]
        if len(committed) != len(leaves):
            ctx.fail(
                "integrity",
                "leaf_mismatch",
                f"{len(committed)} leaves committed, proof has {len(leaves)}",
            )
        for i, (a, b) in enumerate(zip(leaves, committed, strict=False)):
            if a != b:
                ctx.fail("integrity", "leaf_mismatch", f"leaf {i} differs from the committed leaf")
    if acc is not None and accumulator(leaves) != bytes(acc):
        ctx.fail(
            "integrity", "accumulator_mismatch", "leaves do not fold to the committed accumulator"
        )
    ctx.ok("integrity")
    return leaves


def _check_init(ctx: _Ctx, w0: State, bundle: TaskBundle) -> None:
    model = model_tensors(w0)
    if any(not k.startswith("model.") for k in w0):
        ctx.fail("init", "init_mismatch", "checkpoint 0 carries optimizer state")
    parent = ctx.spec.parent_digest
    if parent is not None:
        got = digest_state(model, {"format": "polchain-model-v1"})
        if got != parent:
            ctx.fail(
                "init", "init_mismatch", f"W0 hashes to {to_hex(got)}, parent is {to_hex(parent)}"
            )
    else:
        expected = bundle.model.state_dict()
        same = set(expected) == set(model) and all(
            torch.equal(expected[k].cpu(), model[k]) for k in expected
        )
        if not same:
            ctx.fail("init", "init_mismatch", "W0 is not the seeded init of this run seed")
    ctx.ok("init")


def _check_order(ctx: _Ctx, index: int, steps: list[dict[str, Any]], sampler: StepSampler) -> None:
    for st in steps:
        t = st["step"]
        if t >= sampler.total_steps:
            ctx.fail(
                "data_order", "step_mismatch", f"step {t} beyond the spec's {sampler.total_steps}"
            )
            return
        if st["indices"] != sampler.batch(t).tolist():
            ctx.fail(
                "data_order", "data_order", f"segment {index} step {t}: batch is not the run seed's"
            )
            return
        if st["seeds"] != step_seeds(ctx.run_seed, t):
            ctx.fail(
                "data_order",
                "data_order",
                f"segment {index} step {t}: seeds are not the run seed's",
            )
            return
    ctx.ok("data_order")


def verify(
    manifest: Manifest,
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
) -> Report:
    """Verify a proof and return its :class:`Report` (also written to ``out_dir``).

    ``dataset`` is the data the replay uses (default: the dataset the spec's task builds);
    every index of a replayed segment must open to the spec's committed root, with paths
    from ``dataset_proofs(index)`` (default: the Merkle tree of ``dataset`` itself).
    """
    policy = policy or Policy()
    env = configure_determinism(deterministic, threads)
    base: dict[str, Any] = {
        "challenge_seed": to_hex(challenge_seed),
        "environment": {**environment_facts(device, deterministic), **env},
        "format": REPORT_FORMAT,
        "policy": policy.to_json(),
        "run_id": to_hex(run_id),
        "thresholds": {"c": policy.c, "rho": policy.rho},
    }
    want_spec = spec_digest or manifest.spec_sha256
    try:
        raw = spec_bytes if spec_bytes is not None else source.get(want_spec)
        if sha256(raw) != want_spec:
            raise SpecError(f"spec does not hash to the committed {to_hex(want_spec)}")
        if manifest.spec_sha256 != want_spec:
            raise SpecError("manifest names another spec than the committed one")
        spec = TaskSpec.from_bytes(raw)
        spec.check_source()
    except (ProofError, KeyError) as exc:
        return _finish(
            base,
            {"spec_invalid"},
            {"spec": {"details": [str(exc)], "ok": False}},
            [],
            None,
            out_dir,
        )
    ctx = _Ctx(spec, manifest, source, bytes(run_id), bytes(run_seed))
    base["spec_sha256"] = to_hex(spec.digest)
    entries = manifest.entries
    _check_leaves(ctx, committed_leaves, committed_accumulator)
    if not entries:
        ctx.fail("integrity", "malformed_artefact", "manifest lists no checkpoint")
        return _finish(base, ctx.reasons, ctx.checks, [], None, out_dir)
    for i, entry in enumerate(entries):
        want = min(i * spec.k, spec.total_steps)
        if entry["step"] != want and not (
            i == len(entries) - 1 and entry["step"] == spec.total_steps
        ):
            ctx.fail(
                "integrity",
                "step_mismatch",
                f"checkpoint {i} at step {entry['step']}, spec says {want}",
            )
    finalized = manifest.final is not None
    if finalized and entries[-1]["step"] != spec.total_steps:
        ctx.fail("integrity", "step_mismatch", "finalized before the spec's last step")
    try:
        bundle = build_bundle(spec, run_seed, device, parent_model)
    except ProofError as exc:
        ctx.fail("init", "init_mismatch", str(exc))
        return _finish(base, ctx.reasons, ctx.checks, [], None, out_dir)
    # pass 1: every checkpoint parses; update sizes for top-Q
    n = len(entries) - 1
    update_sizes: list[float] = []
    prev = ctx.checkpoint(0)
    if prev is not None:
        _check_init(ctx, prev[0], bundle)
    last_state: State | None = prev[0] if prev else None
    for i in range(1, n + 1):
        cur = ctx.checkpoint(i)
        if cur is None or prev is None:
            update_sizes.append(0.0)
        else:
            keys = sorted(
                k for k, v in cur[0].items() if k.startswith("model.") and v.is_floating_point()
            )
            a = _flat(cur[0], keys)
            b = _flat({k: prev[0].get(k, torch.zeros_like(cur[0][k])) for k in keys}, keys)
            update_sizes.append(float((a - b).norm()))
        prev = cur
        last_state = cur[0] if cur else None
    # model digest of the last checkpoint
    claimed_model = model_digest or (
        from_hex(manifest.final["model"]["sha256"]) if manifest.final else None
    )
    final_digest: bytes | None = None
    if last_state is not None:
        final_digest = digest_state(model_tensors(last_state), {"format": "polchain-model-v1"})
        if claimed_model is not None and final_digest != claimed_model:
            ctx.fail(
                "integrity",
                "model_digest_mismatch",
                f"last checkpoint's model is {to_hex(final_digest)}",
            )
    if (
        manifest.final is not None
        and model_digest is not None
        and from_hex(manifest.final["model"]["sha256"]) != model_digest
    ):
        ctx.fail(
            "integrity", "model_digest_mismatch", "manifest's final model is not the committed one"
        )
    # segments: parse all, data order for all
    sampler = StepSampler(run_seed, spec.dataset.size, spec.batch_size, spec.epochs)
    segments: dict[int, list[dict[str, Any]]] = {}
    for i in range(1, n + 1):
        data = (
            ctx.fetch(from_hex(entries[i]["segment"]["sha256"]), f"segment {i}")
            if entries[i]["segment"]
            else None
        )
        steps = _parse_segment(ctx, i, data) if data is not None else None
        if steps is not None:
            segments[i] = steps
            _check_order(ctx, i, steps, sampler)
    seg_steps = [entries[i]["step"] - entries[i - 1]["step"] for i in range(1, n + 1)]
    seg_epochs = [
        max(0, entries[i]["step"] - 1) // max(1, spec.steps_per_epoch) for i in range(1, n + 1)
    ]
    chosen = select_segments(policy, challenge_seed, seg_steps, seg_epochs, update_sizes)
    # membership of every index used in a replayed segment
    xs, ys = dataset if dataset is not None else (bundle.train_x, bundle.train_y)
    if dataset_proofs is None:
        dataset_proofs = MerkleTree([sample_leaf(xs[i], ys[i]) for i in range(len(xs))]).proof
    opened: dict[int, bool] = {}
    for i in chosen:
        for st in segments.get(i, []):
            for j in st["indices"]:
                if j not in opened:
                    opened[j] = 0 <= j < len(xs) and verify_membership(
                        sample_leaf(xs[j], ys[j]),
                        j,
                        spec.dataset.size,
                        dataset_proofs(j),
                        spec.dataset.root,
                    )
                if not opened[j]:
                    ctx.fail(
                        "membership",
                        "membership",
                        f"index {j} (segment {i}) does not open to the dataset root",
                    )
    ctx.ok("membership")
    if dataset is not None:
        bundle.train_x, bundle.train_y = xs.to(bundle.train_x.device), ys.to(bundle.train_y.device)
    reports = [_replay(ctx, bundle, i, why, segments.get(i), policy) for i, why in chosen.items()]
    return _finish(base, ctx.reasons, ctx.checks, reports, final_digest, out_dir, finalized, n)


def _replay(
    ctx: _Ctx,
    bundle: TaskBundle,
    index: int,
    why: list[str],
    steps: list[dict[str, Any]] | None,
    policy: Policy,
) -> dict[str, Any]:
    entries = ctx.manifest.entries
    out: dict[str, Any] = {
        "end_step": entries[index]["step"],
        "index": index,
        "selected_by": why,
        "start_step": entries[index - 1]["step"],
    }
    start, end = ctx.checkpoint(index - 1), ctx.checkpoint(index)
    fail: list[str] = []
    if steps is None or start is None or end is None:
        out.update(
            bitwise_identical=False, metrics=None, passed=False, reasons=["malformed_artefact"]
        )
        ctx.reasons.add("malformed_artefact")
        return out
    try:
        replayed, _ = replay_steps(bundle, start[0], start[1], steps, f"segment {index}")
    except MalformedArtefactError as exc:
        out.update(bitwise_identical=False, metrics=None, passed=False, reasons=[exc.code])
        ctx.reasons.add(exc.code)
        return out
    if set(replayed) != set(end[0]) or any(
        replayed[k].shape != end[0][k].shape or replayed[k].dtype != end[0][k].dtype
        for k in replayed
    ):
        out.update(bitwise_identical=False, metrics=None, passed=False, reasons=["state_structure"])
        ctx.reasons.add("state_structure")
        return out
    cmp = compare_states(replayed, end[0], start[0])
    m = cmp["metrics"]
    if (
        m["normalized_error"] is None
        or m["normalized_error"] > policy.rho
        or not cmp["exact_fields_equal"]
    ):
        fail.append("replay_distance")
    if not cmp["bitwise_identical"] and (
        m["direction_cosine"] is None or m["direction_cosine"] < policy.c
    ):
        fail.append("direction")
    ctx.reasons.update(fail)
    out.update(bitwise_identical=cmp["bitwise_identical"], metrics=m, passed=not fail, reasons=fail)
    return out


def _finish(
    base: dict[str, Any],
    reasons: set[str],
    checks: dict[str, dict[str, Any]],
    segments: list[dict[str, Any]],
    final_digest: bytes | None,
    out_dir: Path | str | None,
    finalized: bool = False,
    last_index: int = -1,
) -> Report:
    data = {
        **base,
        "bitwise_identical": bool(segments) and all(s["bitwise_identical"] for s in segments),
        "checks": checks,
        "finalized": finalized,
        "last_index": last_index,
        "model_digest": to_hex(final_digest) if final_digest is not None else None,
        "reasons": sorted(reasons),
        "segments": segments,
        "verdict": "pass" if not reasons and segments else "fail",
    }
    data.setdefault("spec_sha256", None)
    report = Report(data)
    if out_dir is not None:
        report.write(out_dir)
    return report


def verify_dir(
    proof_dir: Path | str, *, run_id: bytes, run_seed: bytes, challenge_seed: bytes, **kwargs: Any
) -> Report:
    """Verify the proof directory ``proof_dir`` (its manifest's leaves are taken as the
    committed ones unless ``committed_leaves`` is passed)."""
    source = DirectorySource(proof_dir)
    manifest = source.manifest()
    kwargs.setdefault("committed_leaves", manifest.leaves)
    return verify(
        manifest, source, run_id=run_id, run_seed=run_seed, challenge_seed=challenge_seed, **kwargs
    )
