"""Fixtures for the CLI tests: ``polchain`` run in subprocesses against a real Anvil."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import Cli, make_cli


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """A fresh project (data folder, port) per test; its Anvil is stopped afterwards."""
    runner = make_cli(tmp_path / "project")
    yield runner
    runner.run("chain", "down", check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, dict[str, Any]]]:
    """One honest digits run (1 epoch), trained with live commits and finalized."""
    runner = make_cli(tmp_path_factory.mktemp("trained") / "project")
    result = runner.json("train", "digits", "--epochs", "1", "-k", "5", "--out", "runs/honest")
    yield runner, result
    runner.run("chain", "down", check=False)
