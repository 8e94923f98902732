"""The agent survives a kill mid-verification with exactly one vote."""

from __future__ import annotations

import signal
import time
from typing import Any

from .helpers import Cli


def _votes(cli: Cli, challenge_id: int) -> tuple[int, str]:
    info = cli.json("show", "challenge", str(challenge_id))
    return info["pass_votes"] + info["fail_votes"], info["status"]


def test_agent_killed_mid_verification_votes_once(trained: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = trained
    opened = cli.json("challenge", run["run_id"], "-a", "4")["challenges"][0]
    cid = opened["challenge_id"]
    daemon = cli.popen("agent", "--poll", "0.5")
    try:
        deadline = time.monotonic() + 120
        seen = ""
        assert daemon.stderr is not None
        while time.monotonic() < deadline:
            line = daemon.stderr.readline()
            seen += line
            if "verifying run" in line:
                break
            assert daemon.poll() is None, seen
        else:
            raise AssertionError("the agent never started verifying:\n" + seen)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert _votes(cli, cid) == (0, "open")  # killed before it could vote
    outcomes = cli.json("agent", "--once")["outcomes"]
    assert [(o["challenge_id"], o["status"], o["passed"]) for o in outcomes] == [
        (cid, "attested", True)
    ]
    assert _votes(cli, cid) == (1, "passed")
    again = cli.json("agent", "--once")["outcomes"]
    assert again == []
    assert _votes(cli, cid) == (1, "passed")


def test_verify_locally_and_on_chain(trained: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = trained
    local = cli.json("verify", "runs/honest", "--full")
    assert local["verdict"] == "pass" and local["bitwise_identical"] is True
    remote = cli.json("verify", run["run_id"], "--seed", "0x" + "11" * 32)
    assert remote["verdict"] == "pass"
    status = cli.json("show", "run", run["run_id"])
    assert status["committed_count"] == run["checkpoints"]
