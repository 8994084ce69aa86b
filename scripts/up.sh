#!/usr/bin/env bash
# Installs what is missing, then runs the whole service on the embedded SQLite store at
# http://127.0.0.1:8888 (arguments are passed to `zaqar-grpc up`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/zaqar-grpc" up "$@"
