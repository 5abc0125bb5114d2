#!/usr/bin/env bash
# Run the test suite (after scripts/setup.sh). pytest's exit code 5 means no test ran: that is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 COLUMNS=120 HF_HUB_OFFLINE=1
# Tests run in parallel worker processes (pytest-xdist), two by default (these machines have two cores);
# COSTINFER_TEST_WORKERS=0 runs them in this process, one after the other.
workers=${COSTINFER_TEST_WORKERS:-2}
if [ "$workers" = "0" ]; then
  .venv/bin/python -m pytest -q "$@"
else
  .venv/bin/python -m pytest -q -n "$workers" --dist load "$@"  # the longest tests are collected first (conftest)
fi
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
