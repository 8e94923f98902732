"""The README's main story, through the real CLI in subprocesses (docs/protocol.md §5, §6.7, §6.8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_story_honest_trainer_owns_the_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "story.py"),
            "--json",
            "--workdir",
            str(tmp_path / "story"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout)
    honest, early, late = result["honest"], result["early_thief"], result["late_thief"]
    # the early thief claimed first and owned the model until challenged
    assert result["owner_before_challenges"] == early["trainer"]
    assert result["claim_order"] == [early["run_id"], honest["run_id"], late["run_id"]]
    assert honest["status"] == "verified"
    assert early["status"] == "refuted"
    assert late["status"] == "refuted"
    assert result["owner"] == honest["trainer"]
    assert honest["test_accuracy"] >= 0.9
    reasons = {v["run_id"]: v["reasons"] for v in result["verdicts"]}
    assert "init_mismatch" in reasons[early["run_id"]]  # a copied proof fails under another seed
    assert reasons[honest["run_id"]] == []
    assert reasons[late["run_id"]]  # the forgery is rejected with a named reason
    for verdict in result["verdicts"]:
        assert Path(verdict["report_html"]).is_file()
