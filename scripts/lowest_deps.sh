#!/usr/bin/env bash
# Checks the lower bounds in pyproject.toml: installs the project with the lowest version of
# every direct dependency that its bounds allow (uv's --resolution lowest-direct) into a venv
# of its own, then runs scripts/smoke.py in it on SQLite and, when redis-server is installed,
# on Redis: in clear, over TLS, and on the master a Sentinel names (in clear and over TLS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=.venv-lowest
tools=.venv-tools
[ -x "$tools/bin/uv" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q uv; }
rm -rf "$venv"
"$tools/bin/uv" venv -q -p "$(.venv/bin/python -c 'import sys; print(sys.executable)')" "$venv"
VIRTUAL_ENV="$venv" "$tools/bin/uv" pip install -q --resolution lowest-direct .
echo "== lowest direct versions"
VIRTUAL_ENV="$venv" "$tools/bin/uv" pip freeze | grep -i -E \
  '^(aiohttp|aiosmtplib|aiosqlite|falcon|googleapis-common-protos|grpcio[a-z-]*|hiredis|httptools|msgpack|orjson|prometheus-client|protobuf|pymongo|redis|uvicorn|uvloop|websockets)=='
cd /tmp  # the installed copy, not the work tree, is what runs
"$root/$venv/bin/python" "$root/scripts/smoke.py"
if command -v redis-server >/dev/null 2>&1; then
  port=$("$root/$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >/dev/null 2>&1 &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$root/$venv/bin/python" "$root/scripts/smoke.py" --store "redis://127.0.0.1:$port/0"
  # The same over TLS (rediss://, a client certificate required): what redis-py's TLS
  # connection classes offer differs most between versions. The certificates are made with
  # the test venv's cryptography (tests/certs.py).
  pki=$(mktemp -d)
  (cd "$root" && .venv/bin/python -c "import sys; from pathlib import Path; \
from tests.certs import make_pki; make_pki(Path(sys.argv[1]))" "$pki")
  tls_port=$("$root/$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 --save "" --appendonly no \
    --tls-cert-file "$pki/service.crt" --tls-key-file "$pki/service.key" \
    --tls-ca-cert-file "$pki/ca.crt" --tls-auth-clients yes --daemonize no >/dev/null 2>&1 &
  tls_pid=$!
  trap 'kill $redis_pid $tls_pid 2>/dev/null || true; rm -rf "$pki"' EXIT
  tls="ssl_ca_certs=$pki/ca.crt&ssl_certfile=$pki/client.crt&ssl_keyfile=$pki/client.key"
  for _ in $(seq 100); do
    redis-cli --tls --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" \
      -p "$tls_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$root/$venv/bin/python" "$root/scripts/smoke.py" --store "rediss://127.0.0.1:$tls_port/0?$tls"
  # And on the master a Sentinel names (redis+sentinel://): redis-py's Sentinel classes.
  sentinel_port=$("$root/$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor smoke 127.0.0.1 %s 1\n' \
    "$sentinel_port" "$pki" "$port" > "$pki/sentinel.conf"
  redis-server "$pki/sentinel.conf" --sentinel --daemonize no >/dev/null 2>&1 &
  sentinel_pid=$!
  trap 'kill $redis_pid $tls_pid $sentinel_pid 2>/dev/null || true; rm -rf "$pki"' EXIT
  for _ in $(seq 100); do
    redis-cli -p "$sentinel_port" sentinel get-master-addr-by-name smoke 2>/dev/null \
      | grep -q . && break
    sleep 0.1
  done
  "$root/$venv/bin/python" "$root/scripts/smoke.py" \
    --store "redis+sentinel://127.0.0.1:$sentinel_port/smoke/1"
  # And both (rediss+sentinel://): a Sentinel speaking TLS only, watching the TLS server.
  tls_sentinel_port=$("$root/$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '%s\n' "port 0" "tls-port $tls_sentinel_port" "bind 127.0.0.1" "dir $pki" \
    "tls-cert-file $pki/service.crt" "tls-key-file $pki/service.key" \
    "tls-ca-cert-file $pki/ca.crt" "tls-replication yes" "tls-auth-clients yes" \
    "sentinel monitor smoke-tls 127.0.0.1 $tls_port 1" > "$pki/tls-sentinel.conf"
  redis-server "$pki/tls-sentinel.conf" --sentinel --daemonize no >/dev/null 2>&1 &
  tls_sentinel_pid=$!
  trap 'kill $redis_pid $tls_pid $sentinel_pid $tls_sentinel_pid 2>/dev/null || true; rm -rf "$pki"' EXIT
  for _ in $(seq 100); do
    redis-cli --tls --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" \
      -p "$tls_sentinel_port" sentinel get-master-addr-by-name smoke-tls 2>/dev/null \
      | grep -q . && break
    sleep 0.1
  done
  "$root/$venv/bin/python" "$root/scripts/smoke.py" \
    --store "rediss+sentinel://127.0.0.1:$tls_sentinel_port/smoke-tls/2?$tls"
fi
