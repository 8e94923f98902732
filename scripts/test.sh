#!/usr/bin/env bash
# The test command: installs what is missing (idempotent), then lint, types and the
# test suite against a real Anvil (started and stopped by the test fixtures).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
echo "[test] ruff"
.venv/bin/ruff check pol_chain tests scripts benchmarks examples
.venv/bin/ruff format --check pol_chain tests scripts benchmarks examples
echo "[test] mypy"
.venv/bin/mypy  # the package (pyproject), then what uses it: each a tree of its own
.venv/bin/mypy tests
.venv/bin/mypy benchmarks examples scripts
echo "[test] contract artefact is current"
.venv/bin/python scripts/compile_contracts.py --check
echo "[test] pytest"
# One worker per core (pytest-xdist); a module's tests stay on one worker, so its
# module-scoped worlds are built once. POLCHAIN_TEST_WORKERS=0 runs in-process.
exec .venv/bin/pytest -n "${POLCHAIN_TEST_WORKERS:-auto}" --dist loadscope "$@"
