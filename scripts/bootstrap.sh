#!/usr/bin/env bash
# Idempotent setup: a project-local virtualenv (.venv) with pol_chain and its dev tools,
# and the npm tools (Anvil, solc-js, OpenZeppelin, ipfs-car) in node_modules from the
# committed package-lock.json. A second run that finds everything in place takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${POLCHAIN_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# --- Python -------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $PY"
  "$PY" -m venv .venv
fi
PY_STAMP="$(stamp pyproject.toml)"
if [ ! -f .venv/.polchain-stamp ] || [ "$(cat .venv/.polchain-stamp)" != "$PY_STAMP" ]; then
  echo "[bootstrap] installing Python dependencies (torch CPU build from the pinned wheel)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  # the test setup installs both framework extras (tests/integrations)
  .venv/bin/python -m pip install --quiet -e ".[dev,lightning,hf]"
  echo "$PY_STAMP" > .venv/.polchain-stamp
fi

# --- Node tools ---------------------------------------------------------
if ! command -v npm >/dev/null 2>&1; then
  echo "[bootstrap] npm not found: install Node.js 20+ (e.g. 'apt-get install nodejs npm')" >&2
  exit 1
fi
NPM_STAMP="$(stamp package.json package-lock.json)"
if [ ! -f node_modules/.polchain-stamp ] || [ "$(cat node_modules/.polchain-stamp)" != "$NPM_STAMP" ]; then
  echo "[bootstrap] installing npm tools (anvil, solc-js, openzeppelin, ipfs-car)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$NPM_STAMP" > node_modules/.polchain-stamp
fi

# --- Sandbox ------------------------------------------------------------
# The verifier replays other people's code under bubblewrap (docs/sandbox.md).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing bubblewrap (the verifier's sandbox)"
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) \
      || echo "[bootstrap] could not install bubblewrap: the agent will not vote on bundled proofs" >&2
  else
    echo "[bootstrap] bubblewrap (bwrap) is missing: install it (apt-get install bubblewrap) so the agent can replay proofs" >&2
  fi
fi
