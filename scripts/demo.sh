#!/usr/bin/env bash
# The main job: set up (idempotent), then the whole pol_chain story on the embedded
# default — a local Anvil and the local content-addressed store — in ./demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
exec .venv/bin/python scripts/story.py "$@"
