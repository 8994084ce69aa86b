#!/usr/bin/env bash
# Installs what the tests need, runs the static checks, then the whole test suite.
# Arguments are passed to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/bootstrap.sh" --test
export PATH="$root/.venv/bin:$PATH"

echo "== ruff"; ruff check .
echo "== mypy"; mypy services
echo "== import-linter"; lint-imports
echo "== lowest direct dependency versions"; "$root/scripts/lowest_deps.sh"
# Two workers (pytest-xdist) on the two cores the suite is sized for, each test file on one
# worker (its module fixtures are made once); ZAQAR_TEST_WORKERS=0 runs everything in this
# process. (Not --dist loadgroup: pytest-xdist 3.8 cannot group tests under pytest 9.2.)
# Files are handed out longest first (tests/conftest.py orders them; xdist's own reordering, by
# number of tests, is turned off), so that no long file is left for the end of the run.
# The 30 slowest tests are listed at the end, to see where the time goes.
workers=${ZAQAR_TEST_WORKERS:-2}
echo "== pytest ($workers workers)"
if [ "$workers" = 0 ]; then exec pytest --durations=30 "$@"; fi
exec pytest -n "$workers" --dist loadfile --no-loadscope-reorder --durations=30 "$@"
