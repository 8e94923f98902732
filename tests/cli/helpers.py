"""Helpers for the CLI tests: ``polchain`` run in subprocesses against a real Anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pol_chain.ledger.anvil import free_port


@dataclass
class Cli:
    """Runs ``python -m pol_chain.cli`` in ``workdir`` with its own data folder and port."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pol_chain.cli", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"polchain {' '.join(args)} → {proc.returncode}\n{proc.stderr}")
        return proc

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.run(*args, "--json", **kw).stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pol_chain.cli", *args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def make_cli(workdir: Path, **extra: str) -> Cli:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    env.update(
        POLCHAIN_HOME=str(workdir / ".polchain"),
        POLCHAIN_ANVIL_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
        COLUMNS="160",
    )
    env.update(extra)
    return Cli(workdir, env)
