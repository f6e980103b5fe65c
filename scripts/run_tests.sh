#!/usr/bin/env bash
# Set up .venv and run the whole test suite (slow tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# two workers (pytest-xdist) on the 2-core CI machine: most tests wait on subprocess start-up and file I/O
exec "${VENV:-.venv}/bin/python" -m pytest -q -n 2 "$@"
