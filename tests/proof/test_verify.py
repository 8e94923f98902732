"""Verifier on real digits training: the honest proof passes bitwise; every forgery fails."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from pol_chain.commitment import accumulator
from pol_chain.format import canonical_json
from pol_chain.proof import TaskSpec, commit_dataset, make_spec, train
from pol_chain.proof.canonical import sha256
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import DirectorySource
from pol_chain.proof.report import Report
from pol_chain.proof.verifier import verify_dir

from .helpers import CHALLENGE, RUN_ID, RUN_SEED, load_checkpoint, recommit, save_checkpoint


def _verify(proof: Path, **kw: object) -> Report:
    kw.setdefault("run_id", RUN_ID)
    kw.setdefault("run_seed", RUN_SEED)
    kw.setdefault("threads", 2)
    return verify_dir(proof, challenge_seed=CHALLENGE, **kw)  # type: ignore[arg-type]


def _failed(report: Report) -> set[int]:
    return {s.index for s in report.segments if not s.passed}


def test_honest_proof_verifies_bitwise(honest_proof: Path, tmp_path: Path) -> None:
    man = DirectorySource(honest_proof).manifest()
    report = _verify(
        honest_proof,
        committed_leaves=man.leaves,
        committed_accumulator=accumulator(man.leaves),
        model_digest=man.final.model.sha256 if man.final else None,
        out_dir=tmp_path,
    )
    assert report.passed, report.checks
    assert report.bitwise_identical is True
    assert len(report.segments) == 9  # small run: verified in full
    assert all(s.metrics is not None and s.metrics.l2 == 0.0 for s in report.segments)
    written = (tmp_path / "report.json").read_bytes()
    assert written == canonical_json(report.to_json()) and sha256(written) == report.digest
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.environment["deterministic"] is True


def test_checkpoint_noise_of_one_update_fails_at_its_segment(proof_copy: Path) -> None:
    j = 4
    prev, _ = load_checkpoint(proof_copy, j - 1)
    cur, meta = load_checkpoint(proof_copy, j)
    keys = [k for k in cur if k.startswith("model.") and cur[k].is_floating_point()]
    update = torch.cat([(cur[k] - prev[k]).reshape(-1) for k in keys]).norm() / 10  # one step
    gen = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(cur[k].shape, generator=gen) for k in keys}
    scale = update / torch.cat([n.reshape(-1) for n in noise.values()]).norm()
    for k in keys:
        cur[k] = cur[k] + scale * noise[k]
    save_checkpoint(proof_copy, j, cur, meta)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed
    assert j in _failed(report)
    assert "replay_distance" in report.segment(j).reasons  # type: ignore[union-attr]
    assert report.segment(j - 1).passed  # type: ignore[union-attr]


def _rewrite_segment(proof: Path, j: int, edit: object) -> None:
    path = proof / f"segments/{j:06d}.json"
    seg = json.loads(path.read_bytes())
    edit(seg["steps"])  # type: ignore[operator]
    path.write_bytes(canonical_json(seg))


def test_permuted_batches_fail(proof_copy: Path) -> None:
    def swap(steps: list[dict[str, object]]) -> None:
        steps[2]["indices"], steps[5]["indices"] = steps[5]["indices"], steps[2]["indices"]

    _rewrite_segment(proof_copy, 3, swap)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed and 3 in _failed(report)
    assert "data_order" in report.reasons
    assert "replay_distance" in report.segment(3).reasons  # type: ignore[union-attr]


def test_substituted_batch_fails(proof_copy: Path) -> None:
    def substitute(steps: list[dict[str, list[int]]]) -> None:
        steps[1]["indices"] = [(i + 7) % 1438 for i in steps[1]["indices"]]

    _rewrite_segment(proof_copy, 6, substitute)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed and 6 in _failed(report)
    assert {"data_order", "replay_distance"} <= set(report.reasons)


def test_altered_momentum_fails(proof_copy: Path) -> None:
    j = 5
    cur, meta = load_checkpoint(proof_copy, j)
    for k in cur:
        if k.endswith(".momentum_buffer"):
            cur[k] = cur[k] * 0.5
    save_checkpoint(proof_copy, j, cur, meta)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed
    assert j in _failed(report) and j + 1 in _failed(report)


def test_lr_mismatch_caught_because_replay_uses_spec(proof_copy: Path, spec: TaskSpec) -> None:
    lr = dict(spec.config["lr"])
    lr["base"] = lr["base"] * 0.5  # the committed spec claims half the lr actually used
    forged = spec.replace(config={"lr": lr})
    (proof_copy / "spec.json").write_bytes(forged.to_bytes())
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed
    assert "replay_distance" in report.reasons
    assert report.spec_sha256 == forged.digest


def test_non_seeded_init_fails(proof_copy: Path, spec: TaskSpec) -> None:
    other = build_bundle(spec, b"\x99" * 32)
    w0, meta = load_checkpoint(proof_copy, 0)
    for k, v in other.model.state_dict().items():
        w0["model." + k] = v.clone()
    save_checkpoint(proof_copy, 0, w0, meta)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed
    assert "init_mismatch" in report.reasons
    assert report.checks["init"].ok is False


def test_proof_copied_under_another_run_seed_fails(proof_copy: Path) -> None:
    thief_run, thief_seed = b"\x44" * 32, b"\x55" * 32
    leaves = recommit(proof_copy, run_id=thief_run)  # thief commits under their own run
    report = _verify(proof_copy, run_id=thief_run, run_seed=thief_seed, committed_leaves=leaves)
    assert not report.passed
    assert {"init_mismatch", "data_order"} <= set(report.reasons)
    assert "leaf_mismatch" not in report.reasons  # the copy is internally consistent


def test_sample_outside_committed_dataset_fails_membership(
    honest_proof: Path, spec: TaskSpec
) -> None:
    bundle = build_bundle(spec, RUN_SEED)
    assert bundle.train_x is not None and bundle.train_y is not None
    seg = json.loads((honest_proof / "segments/000002.json").read_bytes())
    j = seg["steps"][0]["indices"][0]
    x, y = bundle.train_x.clone(), bundle.train_y.clone()
    _, tree = commit_dataset(bundle.train_x, bundle.train_y)  # the trainer's honest paths
    x[j] = x[j] + 0.01  # an adversarially perturbed sample
    report = _verify(honest_proof, dataset=(x, y), dataset_proofs=tree.proof)
    assert not report.passed
    assert "membership" in report.reasons
    assert any(f"index {j} " in d for d in report.checks["membership"].details)


def test_index_outside_dataset_fails(proof_copy: Path) -> None:
    def outside(steps: list[dict[str, list[int]]]) -> None:
        steps[0]["indices"][0] = 10_000

    _rewrite_segment(proof_copy, 2, outside)
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed and {"membership", "data_order"} <= set(report.reasons)


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.sentinel), "w"))


@pytest.mark.parametrize("target", ["checkpoints/000003.safetensors", "segments/000003.json"])
def test_pickle_payload_is_rejected_without_executing(
    proof_copy: Path, tmp_path: Path, target: str
) -> None:
    sentinel = tmp_path / "PWNED"
    (proof_copy / target).write_bytes(pickle.dumps(_Payload(sentinel)))
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed
    assert "malformed_artefact" in report.reasons
    assert not sentinel.exists()


def test_untouched_leaves_catch_tampering(proof_copy: Path) -> None:
    committed = DirectorySource(proof_copy).manifest().leaves
    cur, meta = load_checkpoint(proof_copy, 2)
    save_checkpoint(
        proof_copy, 2, {k: v * 1.0001 if v.is_floating_point() else v for k, v in cur.items()}, meta
    )
    report = _verify(proof_copy, committed_leaves=committed)
    assert "artefact_digest" in report.reasons
    recommit(proof_copy)
    report = _verify(
        proof_copy, committed_leaves=committed, committed_accumulator=accumulator(committed)
    )
    assert {"leaf_mismatch", "accumulator_mismatch"} <= set(report.reasons)


def test_a_finalized_proof_of_no_step_fails_with_a_reason(proof_copy: Path) -> None:
    """W0 alone claimed as the trained model (the recorder refuses to write it)."""
    path = proof_copy / "manifest.json"
    man = json.loads(path.read_bytes())
    man["entries"] = man["entries"][:1]
    man["final"] = {**man["final"], "index": 0, "step": 0}
    path.write_bytes(canonical_json(man))
    recommit(proof_copy)
    report = _verify(proof_copy)
    assert not report.passed and report.reason_codes == ["step_mismatch"]
    assert "no training step" in " ".join(report.checks["integrity"].details)


def test_a_model_file_that_is_not_the_claimed_model_fails(proof_copy: Path) -> None:
    """The final model file of a proof directory is hashed too (before: a flipped byte in
    model.safetensors, manifest untouched, verified as a pass)."""
    model = proof_copy / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))
    report = _verify(proof_copy)
    assert not report.passed and report.reason_codes == ["artefact_digest"]
    assert "final model file" in " ".join(report.checks["integrity"].details)


@pytest.mark.parametrize("field", ["k", "total_steps"])
def test_a_manifest_planning_another_run_than_its_spec_fails(proof_copy: Path, field: str) -> None:
    """The manifest's own k and total_steps are the spec's (the publisher reads them)."""
    path = proof_copy / "manifest.json"
    man = json.loads(path.read_bytes())
    man[field] -= 1
    path.write_bytes(canonical_json(man))
    report = _verify(proof_copy, committed_leaves=recommit(proof_copy))
    assert not report.passed and "step_mismatch" in report.reason_codes
    assert "the manifest plans" in " ".join(report.checks["integrity"].details)


def test_wrong_model_digest_fails(honest_proof: Path) -> None:
    report = _verify(honest_proof, model_digest=b"\x01" * 32)
    assert "model_digest_mismatch" in report.reasons


def test_tampered_spec_is_invalid(proof_copy: Path) -> None:
    (proof_copy / "spec.json").write_bytes(b'{"format": "polchain-spec-v1"}')
    recommit(proof_copy)
    report = _verify(proof_copy)
    assert report.reason_codes == ["spec_invalid"]


def test_an_edited_spec_file_is_invalid_not_missing(proof_copy: Path) -> None:
    """spec.json edited, manifest untouched (before: "spec ... is not available", an error
    instead of a verdict, though the file is right there)."""
    path = proof_copy / "spec.json"
    spec = json.loads(path.read_bytes())
    spec["config"]["lr"]["base"] *= 2
    path.write_bytes(canonical_json(spec))
    report = _verify(proof_copy)
    assert report.reason_codes == ["spec_invalid"]
    assert "does not hash to the committed" in " ".join(report.checks["spec"].details)


def test_digits_reaches_90_percent(tmp_path: Path) -> None:
    result = train(
        make_spec("pol_chain.tasks.digits:build"), tmp_path / "p", RUN_ID, RUN_SEED, threads=2
    )
    assert result.test_accuracy is not None and result.test_accuracy >= 0.90
    assert (tmp_path / "p" / "model.safetensors").exists()
