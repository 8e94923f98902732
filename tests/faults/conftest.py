"""Fault tests of the chain side: real Anvil processes killed with SIGKILL, real ledger,
real ``polchain`` subprocesses. The scenarios live in ``benchmarks/faults_chain.py`` (the
benchmark counts them); these tests run each one and assert on what it observed."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
