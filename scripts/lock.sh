#!/usr/bin/env bash
# Refresh the locks: the exact versions (transitive dependencies included) that the
# README's two commands install. Resolved by pip-tools from pyproject.toml:
#   requirements/lock.txt       the `dev` extra: scripts/test.sh (and CI)
#   requirements/lock-main.txt  the `torch,lab,plot` extras: scripts/main.sh, resolved
#                               within lock.txt, so both hold the same versions
# torch is held to the CPU build named in requirements/torch-cpu.txt. Never edit a lock by hand.
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
"$tools/venv/bin/pip-compile" -q --upgrade --extra torch --extra lab --extra plot --strip-extras \
    --no-emit-index-url --no-emit-find-links --allow-unsafe \
    --constraint requirements/lock.txt \
    --output-file requirements/lock-main.txt pyproject.toml
echo "requirements/lock.txt and lock-main.txt refreshed; run bash scripts/test.sh before committing it"
