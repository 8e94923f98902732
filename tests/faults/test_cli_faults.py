"""Findings 4 (and 1 end to end): the CLI after crashes, foreign chains and bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli.helpers import Cli, make_cli
from cli.test_errors import assert_one_line_error

from pol_chain.ledger.anvil import EmbeddedChain, free_port


@pytest.mark.fault("data_lost")
def test_resume_after_the_final_model_publishes_finalizes_and_survives_a_sigkill(
    tmp_path: Path,
) -> None:
    import faults_chain as fc

    cli = make_cli(tmp_path / "project")
    try:
        args = ("train", "digits", "--epochs", "1", "-k", "11", "--out", "runs/d")
        first = cli.json(*args, "--no-finalize")  # as if it crashed before finalize
        assert first["finalized"] is False
        resumed = cli.json(*args, "--resume")  # used to say "run is already finalized"
        assert resumed["finalized"] is True
        assert resumed["model_digest"] == first["model_digest"]
        # counted after the finalize: every checkpoint, the last one included
        assert resumed["committed"] == resumed["checkpoints"] == first["checkpoints"]
        # the CLI reported the finalize: a SIGKILL of Anvil now must not lose the claim
        fc.kill_anvil(EmbeddedChain(tmp_path / "project" / ".polchain", port=_port(cli)))
        owner = cli.json("owner", resumed["model_digest"])
        assert owner["run_id"] == resumed["run_id"]
    finally:
        cli.run("chain", "down", check=False)


def _port(cli: Cli) -> int:
    return int(cli.env["POLCHAIN_ANVIL_PORT"])


@pytest.mark.fault("wrong_verdict")
def test_another_folders_anvil_on_the_port_is_refused(tmp_path: Path) -> None:
    from pol_chain.ledger.errors import AnvilPortTaken

    other = EmbeddedChain(tmp_path / "other", port=free_port())
    other.start()
    try:
        with pytest.raises(AnvilPortTaken) as info:
            EmbeddedChain(tmp_path / "mine", port=other.port).start()
        assert "POLCHAIN_ANVIL_PORT" in info.value.hint
        assert EmbeddedChain(tmp_path / "other", port=other.port).start() == other.url  # ours
        cli = make_cli(tmp_path / "project")
        cli.env["POLCHAIN_ANVIL_PORT"] = str(other.port)
        proc = cli.run("chain", "up", check=False)
        assert_one_line_error(proc, "not this data folder's Anvil", "anvil_port")
    finally:
        other.stop()


@pytest.mark.fault("wrong_verdict")
def test_with_no_port_set_a_taken_port_is_not_an_error(tmp_path: Path) -> None:
    """No anvil_port anywhere (``polchain init``'s config leaves it commented out): the
    folder's remembered port held by another folder's Anvil moves it to a free port it
    keeps (before: every command refused until a port was configured)."""
    other = EmbeddedChain(tmp_path / "other", port=free_port())
    other.start()
    cli = make_cli(tmp_path / "project")
    del cli.env["POLCHAIN_ANVIL_PORT"]
    try:
        cli.run("init")
        mine = EmbeddedChain(tmp_path / "project" / ".polchain")
        mine.port_file.parent.mkdir(parents=True, exist_ok=True)
        mine.port_file.write_text(f"{other.port}\n")
        up = cli.json("chain", "up")
        assert up["reused"] is False and up["url"] != other.url
        status = cli.json("chain", "status")
        assert status["running"] and status["url"] == up["url"]
        assert cli.json("chain", "up")["reused"] is True
    finally:
        cli.run("chain", "down", check=False)
        other.stop()


@pytest.mark.parametrize(
    ("config", "args", "needle"),
    [
        ('[chain]\nanvil_port = "eighty"\n', ("chain", "status"), "anvil_port"),
        ("", ("--contract", "0x1234", "owner", "0x" + "ab" * 32), "not an address"),
        ('[chain]\ncontract_address = "nope"\n', ("owner", "0x" + "ab" * 32), "not an address"),
    ],
)
@pytest.mark.fault("bad_input")
def test_config_mistakes_are_one_clear_line(
    tmp_path: Path, config: str, args: tuple[str, ...], needle: str
) -> None:
    cli = make_cli(tmp_path / "project")
    home = tmp_path / "project" / ".polchain"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(config)
    proc = cli.run(*args, check=False)
    assert_one_line_error(proc, needle)
    assert "internal error" not in proc.stderr
    assert proc.returncode == 1
