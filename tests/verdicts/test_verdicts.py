"""The verdict rule under faults: the agent votes on the proof alone.

Each test reproduces a wrong verdict or a stop found by probing the agent (issue 10):
stale state reused after a chain reset, local store damage blamed on the trainer, a
dropped log blamed on the trainer, a missing task module voted as spec_invalid, hostile
proofs that stopped the daemon, and an RPC outage that made it exit. Real Anvil, real
training, real `polchain` processes.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli.helpers import Cli, make_cli

from pol_chain.attacks.tamper import recommit_manifest
from pol_chain.format import Segment
from verdicts.rpc_proxy import RpcProxy, event_topic

COMMITTED = event_topic("CheckpointsCommitted(bytes32,uint256,bytes32[],bytes32,string)")


def _votes(cli: Cli, challenge_id: int) -> tuple[int, str]:
    info = cli.json("show", "challenge", str(challenge_id))
    return info["pass_votes"] + info["fail_votes"], info["status"]


def _challenge(cli: Cli, run_id: str) -> int:
    return int(cli.json("challenge", run_id, "-a", "4")["challenges"][0]["challenge_id"])


def _once(cli: Cli, **env: str) -> dict[int, dict[str, Any]]:
    runner = Cli(cli.workdir, {**cli.env, **env})
    return {o["challenge_id"]: o for o in runner.json("agent", "--once")["outcomes"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, dict[str, Any]]]:
    """One honest digits run (1 epoch, 5 segments), trained with live commits."""
    cli = make_cli(tmp_path_factory.mktemp("verdicts") / "project")
    run = cli.json("train", "digits", "--epochs", "1", "-k", "9", "--out", "runs/honest")
    yield cli, run
    cli.run("chain", "down", check=False)


def _block_file(cli: Cli, run: dict[str, Any], index: int) -> Path:
    """The store's block file holding checkpoint ``index`` of the run (one raw block)."""
    cids = json.loads((cli.workdir / "runs/honest/published.json").read_text())
    manifest = json.loads((cli.workdir / "runs/honest/manifest.json").read_text())
    cid = cids[manifest["entries"][index]["checkpoint"]["sha256"]]
    path = cli.workdir / ".polchain" / "store" / "blocks" / cid[-3:-1] / cid
    assert path.is_file(), path
    return path


@pytest.mark.fault("wrong_verdict")
def test_local_store_damage_is_not_blamed_on_the_trainer(world: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = world
    cid = _challenge(cli, run["run_id"])
    block = _block_file(cli, run, 2)
    good = block.read_bytes()
    block.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    try:
        outcome = _once(cli)[cid]
        assert outcome["status"] == "pending" and "local store damage" in outcome["detail"]
        assert _votes(cli, cid) == (0, "open")  # no vote, the honest run is not refuted
    finally:
        block.write_bytes(good)
    outcome = _once(cli)[cid]
    assert (outcome["status"], outcome["passed"]) == ("attested", True)


@pytest.mark.fault("wrong_verdict")
def test_a_dropped_log_is_not_blamed_on_the_trainer(world: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = world
    cid = _challenge(cli, run["run_id"])
    proxy = RpcProxy(cli.json("chain", "status")["url"])
    try:
        proxy.drop_topic = COMMITTED
        outcome = _once(cli, POLCHAIN_RPC_URL=proxy.url)[cid]
        assert outcome["status"] == "pending", outcome
        assert (
            "skip leaves" in outcome["detail"] or "differs from the contract" in outcome["detail"]
        )
        assert _votes(cli, cid) == (0, "open")
        proxy.drop_topic = None
        proxy.max_range = 3  # a node that limits eth_getLogs ranges: the reader pages
        outcome = _once(cli, POLCHAIN_RPC_URL=proxy.url, POLCHAIN_LOG_RANGE="3")[cid]
        assert (outcome["status"], outcome["passed"]) == ("attested", True), outcome
    finally:
        proxy.close()


@pytest.mark.fault("wrong_verdict")
def test_an_agent_without_the_task_module_replays_the_committed_bundle(tmp_path: Path) -> None:
    """The trainer's own task module is importable on the trainer's side only. An agent
    without it used to vote spec_invalid, refuting the run for ever; it now runs the code
    bundle the spec commits, in its sandbox, and attests."""
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(
        Path(__file__).parents[2] / "pol_chain" / "tasks" / "digits.py", code / "mydigits.py"
    )
    cli = make_cli(tmp_path / "project", PYTHONPATH=str(code))
    try:
        run = cli.json("train", "mydigits:build", "--epochs", "1", "-k", "22", "--out", "runs/own")
        cid = _challenge(cli, run["run_id"])
        without = {k: v for k, v in cli.env.items() if k != "PYTHONPATH"}
        outcome = {
            o["challenge_id"]: o
            for o in Cli(cli.workdir, without).json("agent", "--once")["outcomes"]
        }[cid]
        assert (outcome["status"], outcome["passed"]) == ("attested", True), outcome
        assert _votes(cli, cid) == (1, "passed")
    finally:
        cli.run("chain", "down", check=False)


def _hostile_copy(cli: Cli, name: str, index: int) -> str:
    """An attacker's copy of the honest proof whose segment 1 uses sample ``index``,
    committed and finalized under the attacker's own run; returns its run id."""
    copied = cli.json("attack", "copy", "runs/honest", "--out", name, "-a", "2")
    path = cli.workdir / name / "segments" / "000001.json"
    value = json.loads(path.read_bytes())
    value["steps"][0]["indices"][0] = index
    path.write_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())
    recommit_manifest(cli.workdir / name, bytes.fromhex(copied["run_id"][2:]))
    cli.run("commit", name, "-a", "2")
    cli.run("finalize", name, "-a", "2")
    return str(copied["run_id"])


@pytest.mark.fault("agent_stopped")
def test_hostile_proofs_do_not_stop_the_daemon(world: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = world
    huge = _hostile_copy(cli, "huge-index", 2**63)
    with pytest.raises(Exception):  # noqa: B017 - the format refuses it, as data
        Segment.from_bytes((cli.workdir / "huge-index/segments/000001.json").read_bytes())
    outside = _hostile_copy(cli, "outside", 2**63 - 1)
    hostile = [_challenge(cli, huge), _challenge(cli, outside)]
    honest = _challenge(cli, run["run_id"])
    daemon = cli.popen("agent", "--poll", "0.3")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if all(_votes(cli, c)[0] == 1 for c in [*hostile, honest]):
                break
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            time.sleep(1.0)
        else:
            raise AssertionError("the agent did not vote on every challenge")
        assert daemon.poll() is None  # still running after the hostile proofs
    finally:
        daemon.send_signal(signal.SIGINT)
        try:
            daemon.wait(10)
        except Exception:  # noqa: BLE001
            daemon.kill()
    for c in hostile:
        assert _votes(cli, c) == (1, "failed")
    assert _votes(cli, honest) == (1, "passed")
    reports = sorted(
        (cli.workdir / ".polchain" / "agent" / "reports").glob("challenge-*/report.json")
    )
    reasons = {p.parent.name: json.loads(p.read_text())["reasons"] for p in reports}
    for c in hostile:
        assert "malformed_artefact" in reasons[f"challenge-{c}"], reasons


@pytest.mark.fault("agent_stopped")
def test_an_rpc_outage_does_not_stop_the_daemon(world: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = world
    proxy = RpcProxy(cli.json("chain", "status")["url"])
    agent = Cli(cli.workdir, {**cli.env, "POLCHAIN_RPC_URL": proxy.url})
    daemon = agent.popen("agent", "--poll", "0.3")
    try:
        assert daemon.stderr is not None
        started = daemon.stderr.readline()
        assert "watching" in started, started
        proxy.down = True
        seen = proxy.requests
        time.sleep(3.0)
        assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
        assert proxy.requests > seen  # it kept trying, with backoff
        cid = _challenge(cli, run["run_id"])
        proxy.down = False
        deadline = time.monotonic() + 120
        while _votes(cli, cid)[0] == 0:
            assert time.monotonic() < deadline, "no vote after the RPC came back"
            assert daemon.poll() is None
            time.sleep(0.5)
        assert _votes(cli, cid) == (1, "passed")
    finally:
        daemon.kill()
        daemon.wait(10)
        proxy.close()


@pytest.mark.fault("wrong_verdict")
def test_stale_state_is_never_reused_after_a_chain_reset(tmp_path: Path) -> None:
    """A verified row of challenge #1 on a chain that was reset must not vote for the new
    challenge #1 of a fresh ledger at the same address (it once verified a forgery)."""
    cli = make_cli(tmp_path / "project")
    try:
        run = cli.json("train", "digits", "--epochs", "1", "-k", "22", "--out", "runs/honest")
        first = _challenge(cli, run["run_id"])
        assert _once(cli)[first]["passed"] is True
        ledger = cli.json("chain", "status")["ledger"]
        cli.run("chain", "down")
        shutil.rmtree(cli.workdir / ".polchain" / "chain")  # the chain is gone, state too
        assert cli.json("deploy")["ledger"] == ledger  # a fresh ledger at the same address
        stolen = cli.json("attack", "copy", "runs/honest", "--out", "stolen", "-a", "2")
        cli.run("commit", "stolen", "-a", "2")
        cli.run("finalize", "stolen", "-a", "2")
        again = _challenge(cli, stolen["run_id"])
        assert again == first  # the same challenge id, on another chain
        outcome = _once(cli)[again]
        assert (outcome["status"], outcome["passed"]) == ("attested", False), outcome
        assert "init_mismatch" in outcome["reasons"]
    finally:
        cli.run("chain", "down", check=False)


@pytest.mark.fault("data_lost")
def test_agent_killed_right_after_its_vote_is_mined_votes_once(
    world: tuple[Cli, dict[str, Any]],
) -> None:
    cli, run = world
    cid = _challenge(cli, run["run_id"])
    daemon = cli.popen("agent", "--poll", "0.2")
    try:
        deadline = time.monotonic() + 180
        while _votes(cli, cid)[0] == 0:  # the vote is mined: kill before it is recorded
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.05)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    again = _once(cli)
    assert cid not in again or again[cid]["status"] == "attested"
    assert _votes(cli, cid) == (1, "passed")


@pytest.mark.fault("wrong_verdict")
def test_missing_artefacts_wait_for_the_deadline_then_fail(
    world: tuple[Cli, dict[str, Any]],
) -> None:
    """A trainer who does not keep the proof available is to blame, but only after the
    availability deadline and a second try; before it, no vote. (Last in the module: it
    refutes the shared run.)"""
    cli, run = world
    cid = _challenge(cli, run["run_id"])
    block = _block_file(cli, run, 3)
    saved = block.read_bytes()
    block.unlink()
    try:
        outcome = _once(cli)[cid]  # default deadline (an hour): wait
        assert outcome["status"] == "pending" and "waiting for artefacts" in outcome["detail"]
        assert _votes(cli, cid) == (0, "open")
        # the second try, with the deadline passed: the trainer is to blame
        outcome = _once(cli, POLCHAIN_AVAILABILITY_DEADLINE="0")[cid]
        assert (outcome["status"], outcome["passed"]) == ("attested", False), outcome
        assert outcome["reasons"] == ["missing_artefact"]
        assert _votes(cli, cid) == (1, "failed")
    finally:
        block.write_bytes(saved)
