"""The trainer's own step is the replayed step: clipping, AdamW parameter groups,
gradient accumulation with dropout and BatchNorm, bf16 autocast, a DataLoader with
worker processes and early stopping all replay bitwise, and a tampered segment of each is
rejected."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pol_chain.attacks.tamper import recommit_manifest
from pol_chain.format import BUNDLE_FILE, SPEC_FILE
from pol_chain.proof import make_spec, train
from pol_chain.proof.policy import Policy
from pol_chain.proof.spec import bundle_bytes
from pol_chain.proof.verifier import verify_dir

from .step_tasks import CLIP_STATS

ENTRY = "steps.step_tasks:build"
RUN_ID = bytes.fromhex("5a" * 32)
RUN_SEED = bytes.fromhex("a5" * 32)
FULL = Policy(full_below=10**6, max_replay_fraction=1.0)
VARIANTS: dict[str, dict[str, Any]] = {
    "clip": {"variant": "clip"},
    "adamw-two-groups": {"variant": "adamw"},
    "accumulate-2": {"variant": "accum", "grad_accumulation": 2},
    "accumulate-4": {"variant": "accum", "grad_accumulation": 4},
    "bf16-autocast": {"variant": "bf16"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("steps")
    out = {}
    CLIP_STATS.update(steps=0, clipped=0)
    for name, config in VARIANTS.items():
        spec = make_spec(ENTRY, config)
        train(spec, root / name, RUN_ID, RUN_SEED)
        (root / name / BUNDLE_FILE).write_bytes(bundle_bytes(ENTRY))  # as registration does
        out[name] = root / name
    yield out


def _verify(proof: Path) -> Any:
    return verify_dir(
        proof, run_id=RUN_ID, run_seed=RUN_SEED, challenge_seed=b"\x01" * 32, policy=FULL
    )


# Two variants: what the sandbox adds (bundle loading, the child) is the same for all;
# every variant's step replays bitwise in process below.
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the agent's sandbox needs bwrap")
@pytest.mark.parametrize("name", ["accumulate-4", "bf16-autocast"])
def test_the_agents_sandboxed_replay_of_the_bundle_is_bitwise(
    name: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    """What the agent runs: the committed code bundle, fetched by digest, in its sandbox."""
    from pol_chain.compose.replay import runner_for
    from pol_chain.proof.manifest import DirectorySource

    proof = runs[name]
    runner = runner_for(
        (proof / SPEC_FILE).read_bytes(), RUN_SEED, DirectorySource(proof), work_dir=tmp_path
    )
    assert runner is not None
    try:
        report = verify_dir(
            proof,
            run_id=RUN_ID,
            run_seed=RUN_SEED,
            challenge_seed=b"\x02" * 32,
            policy=FULL,
            runner=runner,
        )
    finally:
        runner.close()
    assert report.passed, report.checks
    assert report.bitwise_identical
    assert all(s.metrics is not None and s.metrics.normalized_error == 0.0 for s in report.segments)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_honest_run_replays_bitwise(name: str, runs: dict[str, Path]) -> None:
    report = _verify(runs[name])
    assert report.passed, report.checks
    assert report.bitwise_identical
    assert all(s.metrics is not None and s.metrics.normalized_error == 0.0 for s in report.segments)


def test_clipping_fired_on_most_steps(runs: dict[str, Path]) -> None:
    assert CLIP_STATS["steps"] > 0
    assert CLIP_STATS["clipped"] / CLIP_STATS["steps"] > 0.8, CLIP_STATS


def test_accumulation_is_recorded_per_micro_batch(runs: dict[str, Path]) -> None:
    seg = json.loads((runs["accumulate-4"] / "segments" / "000001.json").read_bytes())
    assert seg["format"] == "polchain-segment-v2"
    assert [len(b) for b in seg["steps"][0]["batches"]] == [8, 8, 8, 8]
    plain = json.loads((runs["clip"] / "segments" / "000001.json").read_bytes())
    assert plain["format"] == "polchain-segment-v1"  # one micro-batch: the v1 bytes


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_tampered_segment_is_rejected(name: str, runs: dict[str, Path], tmp_path: Path) -> None:
    proof = tmp_path / name
    shutil.copytree(runs[name], proof)
    path = proof / "segments" / "000002.json"
    seg = json.loads(path.read_bytes())
    step = seg["steps"][3]
    key = "batches" if "batches" in step else "indices"
    if key == "batches":  # swap two micro-batches: same samples, another order
        step["batches"][0], step["batches"][1] = step["batches"][1], step["batches"][0]
    else:
        step["indices"][0] = (step["indices"][0] + 1) % 1438
    path.write_bytes(json.dumps(seg, sort_keys=True, separators=(",", ":")).encode())
    recommit_manifest(proof)
    report = _verify(proof)
    assert not report.passed
    assert "data_order" in report.reasons


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forged_checkpoint_is_rejected(name: str, runs: dict[str, Path], tmp_path: Path) -> None:
    """A checkpoint moved by one segment's worth of update fails the replay into it."""
    from pol_chain.attacks import tamper_checkpoint

    proof = tmp_path / name
    shutil.copytree(runs[name], proof)
    tamper_checkpoint(proof, 2, scale=0.5, recommit=True)
    report = _verify(proof)
    assert not report.passed
    assert 2 in report.failed_segments()
    assert "replay_distance" in report.reasons


def test_dataloader_workers_and_early_stopping_replay(tmp_path: Path) -> None:
    """The README's own loop: a DataLoader with 2 workers over the run's batch sampler,
    accumulation over 2 micro-batches, stopped early after 17 steps and finalized."""
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "examples"))
    try:
        import own_loop
    finally:
        sys.path.pop(0)
    from pol_chain.format import RunBinding

    spec = make_spec(ENTRY, {"variant": "accum", "grad_accumulation": 2})
    proof = tmp_path / "proof"
    proof.mkdir()
    (proof / "spec.json").write_bytes(spec.to_bytes())
    binding = RunBinding.offline(RUN_ID, spec.digest)
    binding.write(proof)
    seed = binding.run_seed
    own_loop.main(proof, workers=2, stop_after=17)
    manifest = json.loads((proof / "manifest.json").read_bytes())
    assert manifest["final"]["step"] == 17 and [e["step"] for e in manifest["entries"]] == [
        0,
        11,
        17,
    ]
    report = verify_dir(
        proof, run_id=RUN_ID, run_seed=seed, challenge_seed=b"\x02" * 32, policy=FULL
    )
    assert report.passed and report.bitwise_identical, report.checks


def test_early_stopping_with_the_ready_loop(tmp_path: Path) -> None:
    spec = make_spec(ENTRY, {"variant": "adamw"})
    result = train(
        spec, tmp_path / "p", RUN_ID, RUN_SEED, should_stop=lambda steps, _b: steps == 20
    )
    assert result.steps == 20
    report = _verify(tmp_path / "p")
    assert report.passed and report.finalized and report.last_index == 2


def test_a_model_nudge_hidden_behind_adamws_step_counters_is_rejected(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """AdamW keeps a float ``step`` per parameter tensor that grows by k each segment; as a
    distance it swamped the model's update, so a checkpoint moved by a tenth of its
    segment's model update (a backdoor nudge at every checkpoint) passed. Counters are
    compared exactly and the model part against its own update."""
    import torch

    from pol_chain.attacks import tamper_checkpoint
    from pol_chain.proof.serialization import load_checkpoint_bytes

    proof = tmp_path / "adamw"
    shutil.copytree(runs["adamw-two-groups"], proof)

    def state(i: int) -> dict[str, torch.Tensor]:
        data = (proof / "checkpoints" / f"{i:06d}.safetensors").read_bytes()
        return load_checkpoint_bytes(data, f"checkpoint {i}")[0]

    before, after = state(1), state(2)

    def update(keys: list[str]) -> float:
        return float(sum(((after[k] - before[k]).double() ** 2).sum() for k in keys) ** 0.5)

    model = [k for k, v in after.items() if k.startswith("model.") and v.is_floating_point()]
    counters = [k for k in after if k.endswith(".step")]
    assert update(counters) > 5 * update(model)  # what hid the nudge
    tamper_checkpoint(proof, 2, scale=0.1 * update(model), recommit=True)
    report = _verify(proof)
    assert not report.passed and "replay_distance" in report.reasons
    error = report.segment(2).metrics.normalized_error  # type: ignore[union-attr]
    assert error is not None and error > 0.05


def test_a_wrong_step_counter_is_rejected(runs: dict[str, Path], tmp_path: Path) -> None:
    """Counters are no distance: one AdamW ``step`` off by one fails the replay into it."""
    from pol_chain.proof.serialization import load_checkpoint_bytes, serialize_state

    proof = tmp_path / "adamw"
    shutil.copytree(runs["adamw-two-groups"], proof)
    path = proof / "checkpoints" / "000002.safetensors"
    tensors, meta = load_checkpoint_bytes(path.read_bytes(), "checkpoint 2")
    key = next(k for k in sorted(tensors) if k.endswith(".step"))
    tensors[key] = tensors[key] + 1
    path.write_bytes(serialize_state(tensors, meta))
    recommit_manifest(proof)
    report = _verify(proof)
    assert not report.passed and 2 in report.failed_segments()
    assert "replay_distance" in report.reasons
