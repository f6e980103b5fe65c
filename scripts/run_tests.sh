#!/usr/bin/env bash
# Set up .venv with the tests' requirements and run the whole test suite (slow tests included). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/common.sh
"$PY" -m pip install -q --disable-pip-version-check -r requirements-test.txt
# two workers (pytest-xdist) on the 2-core CI machine, one thread each, so that the two workers (and the scripts
# they start) never ask for more threads than there are cores
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" -m pytest -q -n 2 "$@"
