"""Bad input gets one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pol_chain.ledger import EmbeddedChain, create_keystore
from pol_chain.ledger.anvil import free_port

from .helpers import Cli


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode not in (0, None), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert len(lines) <= 3, proc.stderr  # the error, maybe a wrapped line, and a hint
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_model(cli: Cli) -> None:
    cli.run("deploy")
    proc = cli.run("history", "0x" + "ab" * 32, check=False)
    assert_one_line_error(proc, "no claims")


def test_unknown_run(cli: Cli) -> None:
    cli.run("deploy")
    proc = cli.run("show", "run", "0x" + "cd" * 32, check=False)
    assert_one_line_error(proc, "no run")


def test_garbage_model_reference(cli: Cli) -> None:
    cli.run("deploy")
    proc = cli.run("owner", "not-a-model", check=False)
    assert_one_line_error(proc, "not a model digest")


def test_not_a_proof_dir(cli: Cli) -> None:
    (cli.workdir / "empty").mkdir()
    proc = cli.run("commit", "empty", check=False)
    assert_one_line_error(proc, "is not a proof directory")


def test_task_that_does_not_import(cli: Cli) -> None:
    proc = cli.run("train", "no_such_module_xyz:build", check=False)
    assert_one_line_error(proc, "cannot import task module")


def test_unknown_task_name_suggests(cli: Cli) -> None:
    proc = cli.run("train", "digit", check=False)
    assert_one_line_error(proc, "unknown task", "did you mean 'digits'")


@pytest.fixture
def bare_chain(tmp_path: Path):  # type: ignore[no-untyped-def]
    chain = EmbeddedChain(tmp_path / "bare", port=free_port())
    chain.start()
    yield chain
    chain.stop()


def test_chain_without_the_contract(cli: Cli, bare_chain: EmbeddedChain) -> None:
    proc = cli.run("--rpc-url", bare_chain.url, "owner", "0x" + "ab" * 32, check=False)
    assert_one_line_error(proc, "deploy")


def test_unreachable_rpc(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = cli.run("--rpc-url", url, "owner", "0x" + "ab" * 32, check=False)
    assert_one_line_error(proc)


def test_wrong_keystore_password(cli: Cli, bare_chain: EmbeddedChain, tmp_path: Path) -> None:
    keystore = tmp_path / "key.json"
    create_keystore(keystore, "right password", iterations=2)
    env = {**cli.env, "POLCHAIN_KEYSTORE": str(keystore), "POLCHAIN_KEYSTORE_PASSWORD": "wrong"}
    proc = Cli(cli.workdir, env).run("--rpc-url", bare_chain.url, "deploy", check=False)
    assert_one_line_error(proc, "password")
