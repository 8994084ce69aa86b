#!/usr/bin/env bash
# Installs what the tests need, runs the static checks, then the whole test suite.
# Arguments are passed to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/bootstrap.sh" --test
export PATH="$root/.venv/bin:$PATH"

# The lowest-versions check mostly waits on installs and its own small stacks: it runs beside
# the others and pytest, its output shown, and its failure failing the run, at the end.
lowest_log=$(mktemp)
"$root/scripts/lowest_deps.sh" > "$lowest_log" 2>&1 &
lowest_pid=$!
lowest_done() {
  local status=0
  wait "$lowest_pid" || status=$?
  echo "== lowest direct dependency versions (run beside the rest)"
  cat "$lowest_log"; rm -f "$lowest_log"
  [ "$status" = 0 ] || echo "== the lowest-versions check FAILED ($status)"
  return "$status"
}
trap 'kill "$lowest_pid" 2>/dev/null || true; rm -f "$lowest_log"' INT TERM

# A static check that fails ends the run, once the lowest-versions check is reported too.
check() { echo "== $1"; shift; "$@" || { lowest_done || true; exit 1; }; }
check ruff ruff check .
check mypy mypy services
check import-linter lint-imports
# Two workers (pytest-xdist) on the two cores the suite is sized for, each test file on one
# worker (its module fixtures are made once); ZAQAR_TEST_WORKERS=0 runs everything in this
# process. (Not --dist loadgroup: pytest-xdist 3.8 cannot group tests under pytest 9.2.)
# Files are handed out longest first (tests/conftest.py orders them; xdist's own reordering, by
# number of tests, is turned off), so that no long file is left for the end of the run.
# The 30 slowest tests are listed at the end, to see where the time goes.
workers=${ZAQAR_TEST_WORKERS:-2}
echo "== pytest ($workers workers)"
status=0
if [ "$workers" = 0 ]; then
  pytest --durations=30 "$@" || status=$?
else
  pytest -n "$workers" --dist loadfile --no-loadscope-reorder --durations=30 "$@" || status=$?
fi
lowest_done || { [ "$status" != 0 ] || status=1; }
exit "$status"
