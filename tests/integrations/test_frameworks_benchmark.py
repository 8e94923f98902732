"""The frameworks benchmark is a measuring device that uses the integrations the way a
user cannot (a recorder that starts steps in, hooks switched off mid-run): the
integrations' own checks can break it without any other test noticing. A quick run of its
Lightning path must still end in the JSON line the issue specifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "frameworks.py"


def test_quick_lightning_run_ends_in_the_json_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--reps", "1", "--only", "lightning"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lightning = result["lightning"]
    assert lightning["interleaved_chunks"] >= 1  # the interleaved device ran its chunks
    for ratio in ("overhead", "replay_vs_train", "interleaved", "cross_run"):
        assert 0.2 < lightning[ratio] < 5.0, (ratio, lightning)
