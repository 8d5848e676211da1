#!/usr/bin/env bash
# Run the test suite against the newest release of every dependency, in a throwaway venv,
# so that an upstream change is seen here before users meet it. Not part of CI (its result
# changes with every upstream release); the lock in requirements/lock.txt is what CI runs.
#
#   bash scripts/check-latest.sh            # torch stays at the lock's CPU build
#   bash scripts/check-latest.sh --torch    # newest torch too (a CUDA build: several GB)
#
# Extra arguments after the flags go to pytest. Prints the versions that differ from the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
latest_torch=0
if [[ "${1:-}" == "--torch" ]]; then latest_torch=1; shift; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
if [[ $latest_torch == 0 ]]; then
    grep -E '^torch==' requirements/lock.txt > "$work/torch.txt"
    constraint=(-c "$work/torch.txt")
else
    constraint=()
fi
"${pip[@]}" install -q --upgrade --upgrade-strategy eager "${constraint[@]}" -e '.[dev]'
echo "versions that differ from requirements/lock.txt:"
normalize() { tr 'A-Z_' 'a-z-' | sort; }  # package names compare case- and _/- blind
"${pip[@]}" freeze --exclude-editable | normalize > "$work/freeze.txt"
grep -E '^[A-Za-z0-9_.-]+==' requirements/lock.txt | normalize | comm -13 - "$work/freeze.txt" | sed 's/^/  /'
"$work/venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider "$@"
