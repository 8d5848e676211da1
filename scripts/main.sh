#!/usr/bin/env bash
# Set up a local virtual environment and run the main job (the lab on its defaults).
# Versions come from requirements/lock-main.txt (refresh: bash scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -r requirements/lock-main.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
exec .venv/bin/ropelab lab --out lab-out "$@"
