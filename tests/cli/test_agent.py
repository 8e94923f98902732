"""The agent survives a kill mid-verification with exactly one vote."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import Cli, make_cli


def _votes(cli: Cli, challenge_id: int) -> tuple[int, str]:
    info = cli.json("show", "challenge", str(challenge_id))
    return info["pass_votes"] + info["fail_votes"], info["status"]


@pytest.mark.fault("data_lost")
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


@pytest.mark.fault("wrong_verdict")
def test_unreachable_store_delays_attestation_but_loses_nothing(tmp_path: Path) -> None:
    """The trainer pins to a Kubo node; the agent (another machine: its own data folder,
    configured RPC and ledger) can only fetch through that node. While the node is down
    the challenge stays pending with no vote; once it is back the agent attests."""
    from store.conftest import FakeKubo  # the Kubo-RPC double of tests/store

    kubo = FakeKubo(tmp_path / "kubo-scratch")
    kubo.start()
    port = kubo.port
    api = f"http://127.0.0.1:{port}"
    trainer = make_cli(tmp_path / "trainer", POLCHAIN_STORE_BACKEND="kubo", POLCHAIN_KUBO_API=api)
    try:
        run = trainer.json("train", "digits", "--epochs", "1", "-k", "11", "--out", "runs/a")
        ledger = trainer.json("chain", "status")
        agent = make_cli(
            tmp_path / "verifier",
            POLCHAIN_RPC_URL=ledger["url"],
            POLCHAIN_CONTRACT_ADDRESS=ledger["ledger"],
            POLCHAIN_STORE_BACKEND="kubo",
            POLCHAIN_KUBO_API=api,
        )
        kubo.stop()
        cid = trainer.json("challenge", run["run_id"], "-a", "4")["challenges"][0]["challenge_id"]
        pending = agent.json("agent", "--once")["outcomes"]
        assert [(o["challenge_id"], o["status"]) for o in pending] == [(cid, "pending")]
        assert "unreachable" in pending[0]["detail"]
        assert _votes(trainer, cid) == (0, "open")
        kubo.start(port=port)
        done = agent.json("agent", "--once")["outcomes"]
        assert [(o["challenge_id"], o["status"], o["passed"]) for o in done] == [
            (cid, "attested", True)
        ]
        assert _votes(trainer, cid) == (1, "passed")
    finally:
        kubo.stop()
        trainer.run("chain", "down", check=False)


def test_finalize_refuses_a_model_that_is_not_the_last_checkpoints(
    trained: tuple[Cli, dict[str, Any]],
) -> None:
    """A second run that puts the honest run's model file in its directory (manifest
    resealed) cannot claim it (before: the claim went on chain, and stood until
    someone challenged it)."""
    import hashlib
    import json
    import shutil

    from pol_chain.format import canonical_json

    cli, honest = trained
    cli.json("train", "digits", "--epochs", "1", "-k", "5", "--set", "lr.base=0.02",
             "--out", "runs/copycat", "--no-finalize")  # fmt: skip
    proof = cli.workdir / "runs" / "copycat"
    shutil.copyfile(cli.workdir / honest["model_path"], proof / "model.safetensors")
    manifest = json.loads((proof / "manifest.json").read_bytes())
    stolen = hashlib.sha256((proof / "model.safetensors").read_bytes()).hexdigest()
    manifest["final"]["model"]["sha256"] = "0x" + stolen
    (proof / "manifest.json").write_bytes(canonical_json(manifest))
    proc = cli.run("finalize", "runs/copycat", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "is not the last checkpoint's model" in proc.stderr, proc.stderr
    owner = cli.json("owner", honest["model_digest"])
    assert owner["run_id"] == honest["run_id"]
