#!/usr/bin/env bash
# Set up a local virtual environment with every extra and run the test suite.
# This is the README's test command; .ci/run calls it.
# Versions come from requirements/lock.txt (refresh: bash scripts/lock.sh); the lock holds
# torch to its CPU build, so nothing pulls a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -r requirements/lock.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
exec .venv/bin/python -m pytest -q -n 2 "$@"
