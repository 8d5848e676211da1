#!/usr/bin/env bash
# Refresh requirements/lock.txt: the exact versions (transitive dependencies included)
# that scripts/test.sh and scripts/main.sh install. Resolved by pip-tools from
# pyproject.toml's `dev` extra (a superset of what main.sh needs), with torch held to the
# CPU build named in requirements/torch-cpu.txt. Never edit the lock by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q 'pip-tools>=7.4'
"$tools/venv/bin/pip-compile" -q --upgrade --extra dev --strip-extras \
    --no-emit-index-url --no-emit-find-links --allow-unsafe \
    --constraint requirements/torch-cpu.txt \
    --output-file requirements/lock.txt pyproject.toml
echo "requirements/lock.txt refreshed; run bash scripts/test.sh before committing it"
