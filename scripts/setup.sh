#!/usr/bin/env bash
# Set up everything the commands and tests need, idempotently:
# a virtual environment in .venv with the package and its dev tools, and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# pip >= 25.1 reads the pyproject dependency groups.
.venv/bin/python -m pip install --quiet -e . --group dev

scripts/ensure-docker.sh
echo "setup: ready. Commands: .venv/bin/invoke --list   Tests: .venv/bin/nox --list" >&2
