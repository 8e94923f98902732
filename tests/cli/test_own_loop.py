"""The recorder inside a user's own loop, committed live by `polchain commit --follow`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import Cli

ROOT = Path(__file__).resolve().parents[2]


def test_register_record_commit_follow_finalize_verify(cli: Cli) -> None:
    reg = cli.json("register", "digits", "--epochs", "1", "-k", "8", "--out", "proof")
    assert reg["run_seed"].startswith("0x") and len(reg["run_seed"]) == 66
    follower = cli.popen("commit", "proof", "--follow", "--json")
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_loop.py"), "proof"],
        cwd=cli.workdir,
        env=cli.env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    syncs = json.loads(out)["syncs"]
    committed = syncs[-1]["committed_after"]
    manifest = json.loads((cli.workdir / "proof" / "manifest.json").read_text())
    assert committed == len(manifest["entries"])  # every checkpoint, the last one included
    again = cli.json("commit", "proof")  # rerunning commits nothing more
    assert again["syncs"][-1]["committed_after"] == committed
    assert again["syncs"][-1]["committed_before"] == committed
    final = cli.json("finalize", "proof")
    assert final["model_digest"] == manifest["final"]["model"]["sha256"]
    report = cli.json("verify", "proof", "--full")
    assert report["verdict"] == "pass", report
    owner = cli.json("owner", "proof/model.safetensors")
    assert owner["run_id"] == reg["run_id"]
