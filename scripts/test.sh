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
echo "== pytest"; exec pytest "$@"
