#!/usr/bin/env bash
# Set up a local virtual environment and run the main job (the lab on its defaults).
# Versions come from requirements/lock.txt (refresh: bash scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -c requirements/lock.txt setuptools
.venv/bin/python -m pip install -q -c requirements/lock.txt --no-build-isolation -e '.[torch,lab,plot]'
exec .venv/bin/ropelab lab --out lab-out "$@"
