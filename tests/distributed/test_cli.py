"""``polchain distributed`` end to end (its own Anvil, worker processes), then
``polchain verify`` on the run id, as a user runs them."""

from __future__ import annotations

from pathlib import Path

from cli.helpers import make_cli


def test_polchain_distributed_then_polchain_verify(tmp_path: Path) -> None:
    cli = make_cli(tmp_path / "project")
    try:
        bad = cli.run(
            "distributed", "digits", "--workers", "2", "--byzantine", "7=lazy", check=False
        )
        assert bad.returncode == 1 and "error: --byzantine 7=lazy" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
        run = cli.json(
            "distributed", "digits", "--workers", "2", "--rounds", "2", "--local-steps", "2",
            "--check-probability", "0.25", "--byzantine", "2=sign_flip", "--out", "runs/d",
        )  # fmt: skip
        assert run["finalized"] is True
        assert [r["accepted"] for r in run["rounds"]] == [[1], [1]]  # both disagree: both replayed
        assert run["workers"]["2"]["rejected"] == 2 and run["workers"]["2"]["state"] == "excluded"
        remote = cli.json("verify", run["run_id"], "--seed", "0x" + "22" * 32)
        assert remote["verdict"] == "pass" and remote["segments"] == 2, remote
    finally:
        cli.run("chain", "down", check=False)
