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


def _deep_json(depth: int) -> str:
    return '{"lr": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("args", "files", "needles"),
    [
        (["--set", "lr.base=null"], {}, ["config lr.base takes a float", "got null"]),
        (["--set", "batch_size=0"], {}, ["config batch_size must be a positive integer"]),
        (["--set", "dropout=1.5"], {}, ["does not build with this config", "dropout"]),
        (["--set", "batch_size=100000"], {}, ["plans 0 optimizer steps", "1438 samples"]),
        (["--set", "epochs=1000000000000"], {}, ["a run trains 1 to"]),
        (["--set", "lr.bse=0.1"], {}, ["no key 'lr.bse'", "did you mean 'lr.base'"]),
        (["--set", "lr.base=0.1", "--set", "lr.base=0.2"], {}, ["lr.base is given twice"]),
        (["--epochs", "2", "--set", "epochs=3"], {}, ["epochs is given twice"]),
        (["--config", "c.json"], {"c.json": '{"k": 5, "k": 6}'}, ["'k' is given twice"]),
        (["--config", "c.json"], {"c.json": _deep_json(100_000)}, ["nested more than 32"]),
        (["--config", "c.toml"], {"c.toml": "a = " + "[" * 50 + "]" * 50}, ["nested more"]),
    ],
)
def test_bad_config_is_one_clear_error_before_anything_is_registered(
    cli: Cli, args: list[str], files: dict[str, str], needles: list[str]
) -> None:
    """Each used to be an internal error (exit 70), a silent last-one-wins, or a run
    registered on chain that could not train (0 steps)."""
    for name, text in files.items():
        (cli.workdir / name).write_text(text)
    proc = cli.run("register", "digits", "--out", "p", *args, check=False)
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc, *needles)
    assert not (cli.workdir / "p").exists()
    assert not (cli.workdir / ".polchain").exists()  # no chain started, nothing registered


def test_the_console_script_imports_the_task_from_the_working_folder(tmp_path: Path) -> None:
    """``cd my-project; polchain register my_task:build`` (before: the console script's
    folder, not the working one, was on the import path: "No module named 'my_task'")."""
    import os
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "my_task.py").write_text(
        "from pol_chain.tasks.digits import DEFAULT_CONFIG, build\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLCHAIN_", "PYTHONPATH"))}
    env["POLCHAIN_HOME"] = str(tmp_path / "home")
    script = Path(sys.executable).with_name("polchain")
    proc = subprocess.run(
        [str(script), "register", "my_task:build", "--set", "no_such_key=1", "--out", "p"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_one_line_error(proc, "the task's config has no key 'no_such_key'")  # it imported


def test_resume_refuses_settings_other_than_the_registered_ones(cli: Cli) -> None:
    """``train --resume`` continues the run as registered (before: --set, --epochs and
    another task name were silently ignored); the registered values themselves are fine."""
    cli.run("register", "digits", "--epochs", "1", "-k", "50", "--out", "r")
    resume = ("train", "digits", "--out", "r", "--resume", "--no-finalize")
    proc = cli.run(*resume, "--set", "lr.base=0.5", check=False)
    assert_one_line_error(proc, "cannot change lr.base=0.5 (registered: 0.05)")
    proc = cli.run(*resume, "--epochs", "3", check=False)
    assert_one_line_error(proc, "cannot change epochs=3 (registered: 1)")
    proc = cli.run("train", "resnet20", "--out", "r", "--resume", check=False)
    assert_one_line_error(proc, "trains pol_chain.tasks.digits:build, not resnet20")
    done = cli.json(*resume, "--epochs", "1", "-k", "50", "--set", "lr.base=0.05")
    assert done["steps"] == 44 and not done["finalized"]
