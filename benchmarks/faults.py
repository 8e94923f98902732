"""The fault-injection suite, counted: scenarios survived, wrong verdicts, lost data,
agent stops, and bad inputs answered with one clean line.

Run: ``.venv/bin/python benchmarks/faults.py [-- extra pytest args]``. It runs every test
marked ``@pytest.mark.fault(kind)`` (tests/verdicts, tests/faults, tests/cli …: real
Anvil, real `polchain` processes, real SIGKILL) with ``POLCHAIN_FAULTS_LOG`` set, so each
scenario appends its outcome (see tests/conftest.py), then counts them:

- a scenario of kind ``wrong_verdict`` that fails is a wrong verdict (an honest run
  refuted, a forgery verified, or a vote where there must be none);
- ``data_lost``: an acknowledged transaction or vote lost, or a vote doubled;
- ``agent_stopped``: the agent exited or stalled on a hostile proof or an outage;
- ``bad_input``: one bad input; it is *clean* when the CLI answered with one
  ``error:`` line (plus a hint) and an exit code that is not 70.

The last line printed is one JSON object: ``{"scenarios", "faults_survived",
"wrong_verdicts", "data_lost", "agent_stopped", "bad_inputs", "bad_inputs_clean",
"seconds"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(extra: list[str]) -> dict[str, object]:
    """Run the marked tests and count their outcomes."""
    with tempfile.TemporaryDirectory(prefix="polchain-faults-") as tmp:
        log = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "POLCHAIN_FAULTS_LOG": str(log)}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "fault", "-p", "no:cacheprovider", *extra],
            cwd=ROOT,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    failed = Counter(r["kind"] for r in rows if not r["passed"])
    scenarios = [r for r in rows if r["kind"] != "bad_input"]
    bad = [r for r in rows if r["kind"] == "bad_input"]
    for row in rows:
        if not row["passed"]:
            print(f"details: {row['kind']}: {row['test']} failed", file=sys.stderr)
    return {
        "scenarios": len(scenarios),
        "faults_survived": sum(r["passed"] for r in scenarios),
        "wrong_verdicts": failed["wrong_verdict"],
        "data_lost": failed["data_lost"],
        "agent_stopped": failed["agent_stopped"],
        "bad_inputs": len(bad),
        "bad_inputs_clean": sum(r["passed"] for r in bad),
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    print(json.dumps(main(args), sort_keys=True))
