"""Every command explains itself with an example, and --help stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    [],
    ["init"],
    ["chain"],
    ["chain", "up"],
    ["chain", "down"],
    ["chain", "status"],
    ["deploy"],
    ["register"],
    ["train"],
    ["distributed"],
    ["commit"],
    ["finalize"],
    ["challenge"],
    ["agent"],
    ["verify"],
    ["calibrate"],
    ["history"],
    ["owner"],
    ["show"],
    ["show", "run"],
    ["show", "challenge"],
    ["store"],
    ["store", "add"],
    ["store", "get"],
    ["store", "export"],
    ["store", "import"],
    ["store", "push"],
    ["store", "verify"],
    ["attack"],
    ["attack", "forge"],
    ["attack", "copy"],
]


def _help(args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pol_chain.cli", *args, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "polchain")
def test_help_has_an_example(args: list[str]) -> None:
    text = _help(args)
    assert "Usage:" in text
    assert "Example" in text, text


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['polchain', '--help']\n"
        "from pol_chain.cli.main import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'web3', 'eth_account', 'httpx', 'safetensors') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out, out
