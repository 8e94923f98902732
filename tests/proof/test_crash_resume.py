"""A real training process SIGKILLed mid-run leaves a proof that verifies up to its last
complete checkpoint and resumes to the same final model as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pol_chain.proof import TaskSpec, inspect_proof, train
from pol_chain.proof.manifest import DirectorySource

from .helpers import CHALLENGE, RUN_ID, RUN_SEED

CHILD = """
import sys, time
from pathlib import Path
from pol_chain.proof import TaskSpec, train
spec = TaskSpec.from_bytes(Path(sys.argv[1]).read_bytes())
slow = lambda record: time.sleep(0.25)  # a slow subscriber: back-pressure slows training
train(spec, sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4]),
      threads=2, listeners=[slow], queue_size=1)
"""


def _entries(proof: Path) -> int:
    try:
        return len(json.loads((proof / "manifest.json").read_bytes())["entries"])
    except (FileNotFoundError, ValueError):
        return 0


def test_killed_run_is_reported_verified_and_resumed(
    tmp_path: Path, spec: TaskSpec, honest_proof: Path
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(spec.to_bytes())
    proof = tmp_path / "proof"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(spec_file), str(proof), RUN_ID.hex(), RUN_SEED.hex()],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300  # generous: CI boxes may be loaded
    while _entries(proof) < 4 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    # a half-written file from the crash (never listed in the manifest)
    (proof / "checkpoints" / ".000099.safetensors.tmp").write_bytes(b"\x00" * 10)

    status = inspect_proof(proof)
    entries = json.loads((proof / "manifest.json").read_bytes())["entries"]
    assert 4 <= status.complete_checkpoints == len(entries) < 10
    assert status.last_index == len(entries) - 1 and status.last_step == entries[-1]["step"]
    assert not status.finalized
    assert "checkpoints/.000099.safetensors.tmp" in status.leftovers

    report = DirectorySource(proof)  # the truncated proof verifies up to its last checkpoint
    from pol_chain.proof.verifier import verify_dir

    rep = verify_dir(proof, run_id=RUN_ID, run_seed=RUN_SEED, challenge_seed=CHALLENGE, threads=2)
    assert rep.passed, rep.checks
    assert rep.finalized is False and rep.last_index == status.last_index
    assert report.manifest().final is None

    result = train(spec, proof, RUN_ID, RUN_SEED, resume=True, threads=2)
    honest = DirectorySource(honest_proof).manifest()
    resumed = DirectorySource(proof).manifest()
    assert resumed.final is not None and honest.final is not None
    assert resumed.final.model.sha256 == honest.final.model.sha256
    assert result.model_digest == honest.final.model.sha256
    assert resumed.leaves == honest.leaves  # bitwise-identical continuation
