#!/usr/bin/env bash
# Set up costinfer in ./.venv: the CPU build of torch first (an unpinned torch pulls a CUDA build of several GB),
# then the project with its semantic, dev and ray extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[semantic,dev,ray,bedrock]" 2>&1 | grep -v '^WARNING: Location' || true
# PostgreSQL's server binaries, for the shared-store tests (they start a throwaway cluster): Debian's package, when
# this runs as root and it is missing; otherwise those tests say why they are skipped
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1 || echo "setup: could not install postgresql" >&2
fi
.venv/bin/python -c "import costinfer, duckdb, aiohttp, tiktoken" || { echo "setup failed: costinfer does not import" >&2; exit 1; }
echo "costinfer is set up in .venv (run .venv/bin/costinfer --help)"
