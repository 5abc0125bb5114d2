#!/usr/bin/env bash
# Set up costinfer in ./.venv: the CPU build of torch first (an unpinned torch pulls a CUDA build of several GB),
# then the project with its semantic, dev and ray extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[semantic,dev,ray]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import costinfer, duckdb, aiohttp, tiktoken" || { echo "setup failed: costinfer does not import" >&2; exit 1; }
echo "costinfer is set up in .venv (run .venv/bin/costinfer --help)"
