#!/usr/bin/env bash
# message_svc's CPU per item over TLS to Redis against the same in clear: bench/message_inprocess.py
# on two local redis-servers (one plain, one TLS only with a test CA and a client
# certificate), in alternating runs. Run from the repository root:  bash bench/tls_cost.sh
set -e
cd "$(dirname "$0")/.."
W=$(mktemp -d)
trap 'kill $(cat $W/p.pid) $(cat $W/t.pid) 2>/dev/null; rm -rf $W' EXIT
.venv/bin/python -c "
from pathlib import Path; from tests.certs import make_pki; make_pki(Path('$W'))"
redis-server --port 6481 --bind 127.0.0.1 --save "" --appendonly no --dir $W --daemonize yes --pidfile $W/p.pid
redis-server --port 0 --tls-port 6482 --tls-cert-file $W/service.crt --tls-key-file $W/service.key --tls-ca-cert-file $W/ca.crt --tls-auth-clients optional --bind 127.0.0.1 --save "" --appendonly no --dir $W --daemonize yes --pidfile $W/t.pid
sleep 0.5
ticks() { awk '{print $14 + $15}' /proc/"$(cat "$1")"/stat; }  # the server's CPU, 1/100 s
run() {  # label, pid file, store URI
  local before after
  before=$(ticks "$2")
  PYTHONPATH=.:services/common/gen .venv/bin/python -m bench.message_inprocess --store "$3" \
    --batches 3000 2>&1 | tail -1
  after=$(ticks "$2")
  echo "$1: redis-server used $(( (after - before) * 10 )) ms of CPU"
}
for i in 1 2 3; do
  run "in clear $i" $W/p.pid "redis://127.0.0.1:6481/0"
  run "over TLS $i" $W/t.pid \
    "rediss://127.0.0.1:6482/0?ssl_ca_certs=$W/ca.crt&ssl_certfile=$W/client.crt&ssl_keyfile=$W/client.key"
done
