#!/usr/bin/env bash
# Set up a local virtual environment with every extra and run the test suite.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is the CPU build on this machine's disk; any looser spec pulls CUDA.
.venv/bin/python -m pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest -q -n 2 "$@"
