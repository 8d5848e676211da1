#!/usr/bin/env bash
# Set up a local virtual environment and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[torch,lab,plot]'
exec .venv/bin/ropelab lab --out lab-out "$@"
