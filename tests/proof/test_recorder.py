"""Recorder hooks from a plain PyTorch loop, listeners, back-pressure, determinism."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pol_chain.proof import (
    CheckpointRecord,
    FinalRecord,
    Recorder,
    RecorderError,
    ResumeError,
    TaskSpec,
)
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import DirectorySource
from pol_chain.proof.verifier import verify_dir

from .helpers import CHALLENGE, RUN_ID, RUN_SEED


def test_plain_loop_with_hooks_verifies(tmp_path: Path, spec: TaskSpec, honest_proof: Path) -> None:
    records: list[CheckpointRecord | FinalRecord] = []
    b = build_bundle(spec, RUN_SEED)
    assert b.train_x is not None and b.train_y is not None  # digits: parts of its own loop
    assert b.loss_fn is not None and b.optimizer is not None
    rec = Recorder(
        tmp_path / "p",
        spec,
        RUN_ID,
        RUN_SEED,
        b.model,
        b.optimizer,
        b.scheduler,
        listeners=[records.append],
    )
    for step, idx in rec.sampler().steps():
        x, y = b.train_x[idx], b.train_y[idx]
        x = b.augment(x, rec.generator("augment")) if b.augment else x
        torch.manual_seed(rec.step_seeds()["dropout"])
        loss = b.loss_fn(b.model(x), y)
        b.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        b.optimizer.step()
        b.scheduler.step()  # type: ignore[union-attr]
        rec.on_step_end(idx)
        assert rec.step == step + 1
    rec.close(final=True)
    cps = [r for r in records if isinstance(r, CheckpointRecord)]
    assert [r.index for r in cps] == list(range(10))
    assert isinstance(records[-1], FinalRecord)
    assert cps[0].segment_path is None and cps[0].segment_sha256 == b"\x00" * 32
    # same run seed, same spec: the hand-written loop records the very same proof
    assert (
        DirectorySource(tmp_path / "p").manifest().leaves
        == DirectorySource(honest_proof).manifest().leaves
    )
    rep = verify_dir(
        tmp_path / "p", run_id=RUN_ID, run_seed=RUN_SEED, challenge_seed=CHALLENGE, threads=2
    )
    assert rep.passed


def test_slow_listener_back_pressure_bounds_the_queue(tmp_path: Path, spec: TaskSpec) -> None:
    b = build_bundle(spec, RUN_SEED)
    seen: list[int] = []

    def slow(record: CheckpointRecord | FinalRecord) -> None:
        time.sleep(0.1)
        seen.append(record.index)

    rec = Recorder(
        tmp_path / "p",
        spec,
        RUN_ID,
        RUN_SEED,
        b.model,
        b.optimizer,
        b.scheduler,
        listeners=[slow],
        queue_size=1,
    )
    start = time.perf_counter()
    lag = []
    for _, idx in rec.sampler().steps():
        rec.on_step_end(idx)  # no training: checkpoints come as fast as possible
        lag.append(rec._index - len(seen))  # checkpoints taken but not yet handed on
    waited = time.perf_counter() - start
    rec.close(final=False)
    assert max(lag) <= 3  # queue_size + one being written + one in hand
    assert waited >= 0.1 * (len(seen) - 3)  # training waited for the listener


def test_listener_failure_surfaces(tmp_path: Path, spec: TaskSpec) -> None:
    b = build_bundle(spec, RUN_SEED)

    def boom(record: CheckpointRecord | FinalRecord) -> None:
        raise OSError("network down")

    rec = Recorder(
        tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler, listeners=[boom]
    )
    with pytest.raises(RecorderError, match="network down"):
        rec.close(final=True)


def test_a_run_of_no_step_is_not_finalized(tmp_path: Path, spec: TaskSpec) -> None:
    b = build_bundle(spec, RUN_SEED)
    rec = Recorder(tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler)
    with pytest.raises(RecorderError, match="no training step"):
        rec.close(final=True)
    manifest = DirectorySource(tmp_path / "p").manifest()
    assert manifest.final is None and [e.step for e in manifest.entries] == [0]


def test_a_step_past_the_spec_is_refused(tmp_path: Path, spec: TaskSpec) -> None:
    b = build_bundle(spec, RUN_SEED)
    assert b.train_x is not None and b.train_y is not None  # digits: parts of its own loop
    assert b.loss_fn is not None and b.optimizer is not None
    rec = Recorder(tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler)
    for _, idx in rec.sampler().steps():
        loss = b.loss_fn(b.model(b.train_x[idx]), b.train_y[idx])
        b.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        b.optimizer.step()
        b.scheduler.step()  # type: ignore[union-attr]
        rec.on_step_end(idx)
    assert rec.step == spec.total_steps
    with pytest.raises(RecorderError, match=f"plans {spec.total_steps} steps"):
        rec.on_step_end(idx)
    with pytest.raises(RecorderError, match="past it"):
        rec.on_step_end()
    rec.close(final=True)
    assert DirectorySource(tmp_path / "p").manifest().final.step == spec.total_steps  # type: ignore[union-attr]


def test_existing_proof_needs_resume_and_matching_run(
    tmp_path: Path, spec: TaskSpec, honest_proof: Path
) -> None:
    b = build_bundle(spec, RUN_SEED)
    with pytest.raises(ResumeError):
        Recorder(honest_proof, spec, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler)
    with pytest.raises(ResumeError):
        Recorder(
            honest_proof,
            spec,
            b"\x01" * 32,
            RUN_SEED,
            b.model,
            b.optimizer,
            b.scheduler,
            resume=True,
        )


def test_a_paused_run_resumes_into_optimizers_attached_later(
    tmp_path: Path, spec: TaskSpec, honest_proof: Path
) -> None:
    """``close(final=False)`` off the k-step grid checkpoints nothing (a proof continues
    only from a grid checkpoint); a recorder resumed into a model alone (as a framework
    builds its optimizers when training starts) can record only after ``attach``, which
    loads the checkpoint's optimizer and scheduler state: the run ends as the honest one."""
    from pol_chain.proof import train
    from pol_chain.proof.engine import TrainState, run_step, step_seeds

    proof = tmp_path / "p"
    train(spec, proof, RUN_ID, RUN_SEED, max_steps=spec.k + 5)  # a pause mid-segment
    assert [e.step for e in DirectorySource(proof).manifest().entries] == [0, spec.k]

    b = build_bundle(spec, RUN_SEED)
    rec = Recorder(proof, spec, RUN_ID, RUN_SEED, state=TrainState(b.model), resume=True)
    assert rec.step == spec.k and rec.resuming
    with pytest.raises(RecorderError, match="without an optimizer"):
        rec.on_step_end()
    rec.attach([b.optimizer], [b.scheduler])  # type: ignore[list-item]
    assert not rec.resuming and b.scheduler.last_epoch == spec.k  # type: ignore[union-attr]
    sampler = rec.sampler()
    for step in range(rec.step, spec.total_steps):
        micro = sampler.micro_batches(step)
        run_step(b, micro, step_seeds(RUN_SEED, step), step)
        rec.on_step_end(micro)
    with pytest.raises(RecorderError, match="at step"):
        rec.attach([b.optimizer])  # mid-run: the new parts would not hold the run's state
    rec.close(final=True)
    assert (
        DirectorySource(proof).manifest().leaves == DirectorySource(honest_proof).manifest().leaves
    )


# A recorder in a child process: every step recorded at once (no training), each written
# checkpoint slowed by a listener so that several are still queued when the script ends:
# on an uncaught error ("raise") or with the recorder left open ("hold", then killed).
RECORDING_CHILD = """
import sys, time
from pathlib import Path
from pol_chain.proof import Recorder, TaskSpec, build_bundle
spec = TaskSpec.from_bytes(Path(sys.argv[1]).read_bytes())
mode, seed = sys.argv[3], bytes.fromhex("22" * 32)
b = build_bundle(spec, seed)
rec = Recorder(sys.argv[2], spec, bytes.fromhex("11" * 32), seed, b.model, b.optimizer,
               b.scheduler, listeners=[lambda r: time.sleep(0.2)], queue_size=4)
for step, idx in rec.sampler().steps():
    if step == 35:
        break
    rec.on_step_end(idx)
if mode == "hold":
    print("recording", flush=True)
    time.sleep(600)
raise RuntimeError("the training script fails")
"""


def _child(tmp_path: Path, spec: TaskSpec, mode: str) -> subprocess.Popen[str]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(spec.to_bytes())
    return subprocess.Popen(
        [sys.executable, "-c", RECORDING_CHILD, str(spec_file), str(tmp_path / "p"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_script_that_dies_on_an_error_keeps_the_checkpoints_it_took(
    tmp_path: Path, spec: TaskSpec
) -> None:
    """The writer is a daemon thread: before, the checkpoints still queued when the script
    ended on an uncaught error were lost (the manifest stopped where the writer was)."""
    child = _child(tmp_path, spec, "raise")
    _, err = child.communicate(timeout=300)
    assert child.returncode == 1 and "the training script fails" in err
    manifest = DirectorySource(tmp_path / "p").manifest()
    assert [e.step for e in manifest.entries] == [0, 10, 20, 30] and manifest.final is None


def test_one_recorder_writes_a_proof_directory_at_a_time(tmp_path: Path, spec: TaskSpec) -> None:
    """A second recorder on a directory another one is writing is refused (before: both
    wrote, and the later manifest silently replaced the other run's); the directory is
    free again once the first closes, or its process dies."""
    b = build_bundle(spec, RUN_SEED)
    first = Recorder(tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler)
    with pytest.raises(RecorderError, match=f"another recorder \\(process {os.getpid()}\\)"):
        Recorder(tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, resume=True)
    first.close(final=False)
    Recorder(tmp_path / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, resume=True).close(
        final=False
    )

    other = tmp_path / "other"
    other.mkdir()
    child = _child(other, spec, "hold")
    assert child.stdout is not None and child.stdout.readline().strip() == "recording"
    with pytest.raises(RecorderError, match=f"process {child.pid}"):
        Recorder(other / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, resume=True)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    rec = Recorder(other / "p", spec, RUN_ID, RUN_SEED, b.model, b.optimizer, resume=True)
    assert rec.step in (0, 10, 20, 30)  # where the killed writer had got to
    rec.close(final=False)


def test_packages_other_than_the_registered_versions_are_refused(
    tmp_path: Path, spec: TaskSpec
) -> None:
    """A package upgraded between register (or a crash) and the recorder's start would
    train steps the verifier, holding the registered versions, refutes: refused, naming
    the package and both versions; the registered versions record."""
    import dataclasses

    from pol_chain.format import (
        BUNDLE_FILE,
        MANIFEST_FILE,
        SPEC_FILE,
        BundleManifest,
        CodeBundle,
        Locator,
        Requirement,
        read_bundle,
        write_bundle,
    )
    from pol_chain.proof.canonical import sha256
    from pol_chain.proof.spec import bundle_bytes

    def start(code: bytes, proof: Path) -> Recorder:
        proof.mkdir()
        committed = dataclasses.replace(spec, bundle=Locator(sha256(code), None, len(code)))
        (proof / SPEC_FILE).write_bytes(committed.to_bytes())
        (proof / BUNDLE_FILE).write_bytes(code)
        b = build_bundle(committed, RUN_SEED)
        return Recorder(proof, committed, RUN_ID, RUN_SEED, b.model, b.optimizer, b.scheduler)

    code = bundle_bytes(spec.entry)
    start(code, tmp_path / "same").close(final=False)  # the versions installed here
    packed = read_bundle(code)
    forged = tuple(
        Requirement(r.name, "0.0.1") if r.name == "torch" else r
        for r in packed.manifest.requirements
    )
    older = write_bundle(
        CodeBundle(BundleManifest(packed.manifest.entry, packed.manifest.modules, forged),
                   packed.sources)
    )  # fmt: skip
    with pytest.raises(RecorderError, match=r"torch is \S+ here, the bundle needs 0\.0\.1") as e:
        start(older, tmp_path / "older")
    assert "pip install" in e.value.hint
    assert not (tmp_path / "older" / MANIFEST_FILE).exists()
