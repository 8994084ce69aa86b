#!/usr/bin/env bash
# Real OpenStack Zaqar vs zaqar-grpc, both on Redis, measured with the real zaqar-bench in one run.
#
#   bench/compare_zaqar.sh [SECONDS]          (default 20 s of load per measurement)
#
# Starts two redis-servers on free loopback ports (same config: --save "" --appendonly no), the
# reference zaqar-server (Zaqar 23, from bench/setup_reference.sh's venv) on one and
# `zaqar-grpc up` on the other, waits for both to answer GET /v2/ping, then runs zaqar-bench
# against the reference and then against zaqar-grpc (never both at once), sampling each system's
# RSS at the end of its load and the CPU time its processes used. With ZBENCH=both (default)
# it also runs bench/zbench.py against each system for p50/p95/p99 latencies. It prints both
# results and the ratios (ours/theirs), then stops everything and removes its temp dir.
#
# Environment:
#   VENV=DIR              venv holding zaqar-grpc (default: <repo>/.venv, else zaqar-grpc on PATH)
#   ZAQAR_REF_VENV=DIR    reference venv (default bench/.venv-zaqar; created if missing)
#   BENCH_ARGS="..."      zaqar-bench roles (default "-pp 1 -pw 4 -cp 1 -cw 4 -op 0")
#   ZBENCH=both|ours|none percentile runs with bench/zbench.py (default both)
#   RESULT_JSON=FILE      also write the summary as JSON to FILE
#   KEEP_TMP=1            keep the temp dir (configs, logs, raw results) for inspection
set -euo pipefail
[ "${BASH_VERSINFO[0]}" -ge 5 ] || { echo "compare_zaqar: needs bash 5 or newer" >&2; exit 2; }

secs=${1:-20}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ] || [ "$secs" -gt 600 ]; then
  echo "usage: $0 [SECONDS]   (1..600, default 20)" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ref_venv=${ZAQAR_REF_VENV:-$here/.venv-zaqar}
bench_args=${BENCH_ARGS:-"-pp 1 -pw 4 -cp 1 -cw 4 -op 0"}
zbench_mode=${ZBENCH:-both}
case $zbench_mode in both | ours | none) ;; *) echo "ZBENCH must be both, ours or none" >&2; exit 2 ;; esac
START_TIMEOUT=${START_TIMEOUT:-90}   # seconds a server may take to answer /v2/ping
HEADERS=(-H "Client-ID: 3381af92-2b9e-11e3-b191-71861300734c" -H "X-Project-ID: compare")

die() { echo "compare_zaqar: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- tools ----------------------------------------------------------------------------------
if [ -n "${VENV:-}" ]; then
  zg="$VENV/bin/zaqar-grpc"
elif [ -x "$root/.venv/bin/zaqar-grpc" ]; then
  zg="$root/.venv/bin/zaqar-grpc"
else
  zg=$(command -v zaqar-grpc || true)
fi
[ -n "$zg" ] && [ -x "$zg" ] ||
  die "zaqar-grpc not found: run scripts/bootstrap.sh (creates .venv), or set VENV=<venv dir>"
zg_python="$(dirname "$zg")/python"
[ -x "$zg_python" ] || zg_python=python3
command -v redis-server >/dev/null || die "redis-server not found (Debian: apt-get install redis-server)"
command -v curl >/dev/null || die "curl not found"
command -v setsid >/dev/null || die "setsid not found (util-linux)"
"$here/setup_reference.sh" "$ref_venv" || die "could not prepare the reference venv $ref_venv"
py="$ref_venv/bin/python"
if [ "$zbench_mode" != none ] && ! "$zg_python" -c 'import aiohttp' 2>/dev/null; then
  log "note: aiohttp missing next to $zg; skipping the zbench percentile runs"
  zbench_mode=none
fi

# --- process bookkeeping --------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/zaqar-compare.XXXXXX")
groups=()        # process-group ids started with setsid (killed as groups)
extra_pids=()    # zaqar-grpc services (own sessions, started by `up`)
samplers=()      # background RSS samplers
failed=1

stop_group() {   # stop_group PGID GRACE_SECONDS: TERM, bounded wait, then KILL
  local pg=$1 grace=$2 i
  kill -0 -- "-$pg" 2>/dev/null || return 0
  kill -TERM -- "-$pg" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 -- "-$pg" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pg" 2>/dev/null || true
}

cleanup() {
  local rc=$? i pid
  trap - EXIT INT TERM
  set +e
  for pid in "${samplers[@]}"; do kill "$pid" 2>/dev/null; done
  # Last started first: load generators, then servers (zaqar-grpc up stops its services on TERM).
  for ((i = ${#groups[@]} - 1; i >= 0; i--)); do stop_group "${groups[i]}" 15; done
  for pid in "${extra_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  if [ "$failed" = 1 ]; then
    for f in "$work"/*.log; do
      [ -s "$f" ] || continue
      echo "---- last lines of $(basename "$f") ----" >&2
      # (wsgiref's access lines are left out of zaqar-server's log tail)
      grep -v '^127\.0\.0\.1 - - \[' "$f" | tail -n 15 >&2
    done
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "temp dir kept: $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {        # start NAME CMD...: runs CMD in its own session, output to $work/NAME.log
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 </dev/null &
  local pid=$!
  groups+=("$pid")
  printf -v "pid_${name//-/_}" '%s' "$pid"
}

free_ports() {   # free_ports N: N distinct free loopback TCP ports
  "$py" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

wait_redis() {   # wait_redis PORT PID
  local deadline=$((SECONDS + 20)) reply
  while ((SECONDS < deadline)); do
    kill -0 "$2" 2>/dev/null || die "redis-server on port $1 exited at start"
    reply=$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)
    [ "$reply" = PONG ] && return 0
    sleep 0.2
  done
  die "redis-server on port $1 did not answer PING within 20 s"
}

wait_ping() {    # wait_ping NAME URL PID
  local deadline=$((SECONDS + START_TIMEOUT)) code
  while ((SECONDS < deadline)); do
    kill -0 "$3" 2>/dev/null || die "$1 exited before answering (log: $work/$1.log)"
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "${HEADERS[@]}" "$2/v2/ping" || true)
    [ "$code" = 204 ] && return 0
    sleep 0.5
  done
  die "$1 did not answer GET $2/v2/ping with 204 within ${START_TIMEOUT} s (last: ${code:-none})"
}

cpu_ticks() {    # cpu_ticks PID...: utime+stime of each, "pid:ticks" (0 if gone)
  local pid stat rest
  for pid in "$@"; do
    if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
      rest=${stat##*) }
      # after "pid (comm) ": state is field 1, utime 12, stime 13
      read -r -a f <<<"$rest"
      echo "$pid:$((f[11] + f[12]))"
    else
      echo "$pid:0"
    fi
  done
}

describe() {     # describe PID...: "pid rss_kb command" per line
  local pid
  for pid in "$@"; do
    ps -o pid=,rss=,args= -p "$pid" 2>/dev/null | awk '{printf "%s %s", $1, $2; $1=""; $2=""; print " " substr($0, 3)}' || true
  done
}

run_load() {     # run_load SYSTEM TOOL URL PIDS...: one measurement, results in $work/SYSTEM-TOOL.*
  local system=$1 tool=$2 url=$3; shift 3
  local pids=("$@") tag="$system-$tool" before after
  log "$tool -> $system ($url), ${secs} s ..."
  cut -d' ' -f1-3 /proc/loadavg >"$work/$tag.loadavg"
  head -n 1 /proc/stat >"$work/$tag.stat"
  before=$(cpu_ticks "${pids[@]}")
  # RSS sampled shortly before the load ends (the servers are still under load).
  (sleep "$((secs > 2 ? secs - 1 : secs))"; describe "${pids[@]}" >"$work/$tag.rss") &
  local sampler=$!
  samplers+=("$sampler")
  local t0=$EPOCHREALTIME
  if [ "$tool" = zaqar-bench ]; then
    # noauth with the project id zaqar-bench hard-codes; an empty config file keeps any
    # /etc/zaqar/zaqar.conf out of it.
    : >"$work/bench.conf"
    # shellcheck disable=SC2086
    start "$tag" env OS_AUTH_STRATEGY=noauth "$py" "$work/rusage.py" "$work/$tag.client" \
      timeout -k 5 "$((secs + 120))" "$ref_venv/bin/zaqar-bench" --config-file "$work/bench.conf" --nodebug \
      $bench_args -t "$secs" -s "$url"
  else
    # shellcheck disable=SC2086
    start "$tag" "$py" "$work/rusage.py" "$work/$tag.client" \
      timeout -k 5 "$((secs + 120))" "$zg_python" "$here/zbench.py" --url "$url" \
      $bench_args -t "$secs" --project compare
  fi
  local bpid_var="pid_${tag//-/_}" rc=0
  wait "${!bpid_var}" || rc=$?
  wait "$sampler" 2>/dev/null || true
  after=$(cpu_ticks "${pids[@]}")
  head -n 1 /proc/stat >>"$work/$tag.stat"
  paste -d' ' <(echo "$before") <(echo "$after") >"$work/$tag.cpu"
  echo "$t0 $EPOCHREALTIME" >"$work/$tag.wall"
  [ "$rc" = 0 ] || die "$tool against $system failed (exit $rc; log: $work/$tag.log)"
  grep '^{' "$work/$tag.log" | tail -n 1 >"$work/$tag.json"
  [ -s "$work/$tag.json" ] || die "$tool against $system printed no JSON result"
  sleep 2   # let the machine settle before the next measurement
}

# Runs a load generator and records the CPU time it and all its processes used, so a reader can
# see how much of the machine the client itself took.
cat >"$work/rusage.py" <<'EOF'
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{r.ru_utime + r.ru_stime:.2f}\n")
sys.exit(rc)
EOF

# --- start both systems ---------------------------------------------------------------------
read -r redis_ref redis_ours http_ref http_ours q_port m_port n_port <<<"$(free_ports 7)"
log "work dir $work"
for which in ref ours; do
  port_var="redis_$which"
  mkdir -p "$work/redis-$which"
  start "redis-$which" redis-server --bind 127.0.0.1 --port "${!port_var}" --save "" \
    --appendonly no --dir "$work/redis-$which" --daemonize no
done
wait_redis "$redis_ref" "$pid_redis_ref"
wait_redis "$redis_ours" "$pid_redis_ours"

sed -e "s|@BIND@|127.0.0.1|" -e "s|@PORT@|$http_ref|" \
  -e "s|@REDIS_URI@|redis://127.0.0.1:$redis_ref?dbid=0|" \
  "$here/zaqar-ref.conf.template" >"$work/zaqar-ref.conf"
start zaqar-ref "$ref_venv/bin/zaqar-server" --config-file "$work/zaqar-ref.conf"

start zaqar-grpc env ZAQAR_QUEUE_PORT="$q_port" ZAQAR_MESSAGE_PORT="$m_port" \
  ZAQAR_NOTIFIER_PORT="$n_port" ZAQAR_LOG_LEVEL=WARNING PYTHONUNBUFFERED=1 \
  "$zg" up --store "redis://127.0.0.1:$redis_ours/0" --port "$http_ours" \
  --data-dir "$work/zaqar-grpc-data"

url_ref="http://127.0.0.1:$http_ref"
url_ours="http://127.0.0.1:$http_ours"
wait_ping zaqar-ref "$url_ref" "$pid_zaqar_ref"
log "reference Zaqar $("$py" -m pip show zaqar | sed -n 's/^Version: //p') answering on $url_ref (Redis :$redis_ref)"
wait_ping zaqar-grpc "$url_ours" "$pid_zaqar_grpc"
# `up` starts each service in its own session: remember them so they can be killed if `up` can't.
mapfile -t extra_pids < <(ps -o pid= --ppid "$pid_zaqar_grpc" | tr -d ' ')
log "zaqar-grpc answering on $url_ours (Redis :$redis_ours; services: ${extra_pids[*]})"

pids_ref=("$pid_zaqar_ref" "$pid_redis_ref")
pids_ours=("$pid_zaqar_grpc" "${extra_pids[@]}" "$pid_redis_ours")

# --- measurements, one at a time ------------------------------------------------------------
run_load ref zaqar-bench "$url_ref" "${pids_ref[@]}"
run_load ours zaqar-bench "$url_ours" "${pids_ours[@]}"
if [ "$zbench_mode" = both ]; then
  run_load ref zbench "$url_ref" "${pids_ref[@]}"
fi
if [ "$zbench_mode" != none ]; then
  run_load ours zbench "$url_ours" "${pids_ours[@]}"
fi
kill -0 "$pid_zaqar_ref" 2>/dev/null || die "zaqar-server died during the run"
kill -0 "$pid_zaqar_grpc" 2>/dev/null || die "zaqar-grpc up died during the run"

# --- report ---------------------------------------------------------------------------------
"$py" - "$work" "$secs" "$bench_args" "$zbench_mode" "${RESULT_JSON:-}" <<'EOF'
import json, os, sys

work, secs, bench_args, zmode, out = sys.argv[1:6]
hz = os.sysconf("SC_CLK_TCK")

def load(tag):
    path = os.path.join(work, tag + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def procs(tag):
    rows = []
    rss_path = os.path.join(work, tag + ".rss")
    cpu = {}
    for line in open(os.path.join(work, tag + ".cpu")):
        b, a = line.split()
        pid, t0 = b.split(":")
        cpu[pid] = (int(a.split(":")[1]) - int(t0)) / hz if a.split(":")[1] != "0" else None
    seen = set()
    if os.path.exists(rss_path):
        for line in open(rss_path):
            parts = line.split(None, 2)
            if len(parts) == 3:
                pid, rss, cmd = parts
                seen.add(pid)
                rows.append({"pid": int(pid), "rss_mib": round(int(rss) / 1024, 1),
                             "cpu_s": None if cpu.get(pid) is None else round(cpu[pid], 2),
                             "cmd": cmd.strip()[:110]})
    return rows

def name(cmd):
    if "redis-server" in cmd: return "redis-server"
    if "zaqar-server" in cmd: return "zaqar-server"
    if " serve " in cmd: return "svc " + cmd.split(" serve ")[1].split()[0]
    if " up " in cmd or cmd.endswith(" up"): return "zaqar-grpc up"
    return cmd.split()[0]

systems = {"ref": "Zaqar 23 (zaqar-server)", "ours": "zaqar-grpc up"}
summary = {"seconds": int(secs), "zaqar_bench_args": bench_args, "loadavg_before": {}, "zaqar_bench": {},
           "zbench": {}, "processes": {}}
print()
print(f"== zaqar-bench {bench_args} -t {secs}  (both on Redis; req/s = successful requests / duration)")
print(f"{'system':<26}{'producer req/s':>15}{'ms/req':>8}{'consumer req/s':>16}{'ms/claim':>10}"
      f"{'ms/delete':>11}{'msgs':>8}{'errors':>8}")
for sys_ in ("ref", "ours"):
    r = load(f"{sys_}-zaqar-bench")
    p, c = r["producer"], r["consumer"]
    errors = (p["total_reqs"] - p["successful_reqs"]) + (c["total_reqs"] - c["successful_reqs"])
    summary["zaqar_bench"][sys_] = {"producer": p, "consumer": c, "errors": errors}
    summary["loadavg_before"][sys_] = open(os.path.join(work, f"{sys_}-zaqar-bench.loadavg")).read().strip()
    print(f"{systems[sys_]:<26}{p['reqs_per_sec']:>15.1f}{p['ms_per_req']:>8.2f}{c['reqs_per_sec']:>16.1f}"
          f"{c['ms_per_claim']:>10.2f}{c['ms_per_delete']:>11.2f}{c['messages_processed']:>8}{errors:>8}")
ref, ours = summary["zaqar_bench"]["ref"], summary["zaqar_bench"]["ours"]
ratio = lambda a, b: round(a / b, 2) if b else float("nan")
summary["ratios"] = {
    "producer_req_s": ratio(ours["producer"]["reqs_per_sec"], ref["producer"]["reqs_per_sec"]),
    "consumer_req_s": ratio(ours["consumer"]["reqs_per_sec"], ref["consumer"]["reqs_per_sec"]),
}
print(f"ratio ours/theirs: producer req/s x{summary['ratios']['producer_req_s']}, "
      f"consumer req/s x{summary['ratios']['consumer_req_s']}")
print(f"load average before each run: ref {summary['loadavg_before']['ref']}; ours {summary['loadavg_before']['ours']}")

print()
print("== processes at the end of the zaqar-bench load (RSS) and CPU time used during it")
for sys_ in ("ref", "ours"):
    rows = procs(f"{sys_}-zaqar-bench")
    total_rss = sum(r["rss_mib"] for r in rows)
    total_cpu = sum(r["cpu_s"] or 0 for r in rows)
    no_redis = [r for r in rows if "redis-server" not in r["cmd"]]
    cpu_no_redis = sum(r["cpu_s"] or 0 for r in no_redis)
    t0, t1 = map(float, open(os.path.join(work, f"{sys_}-zaqar-bench.wall")).read().split())
    wall = round(t1 - t0, 1)
    client = os.path.join(work, f"{sys_}-zaqar-bench.client")
    client_cpu = float(open(client).read()) if os.path.exists(client) else None
    b = summary["zaqar_bench"][sys_]
    reqs = b["producer"]["successful_reqs"] + b["consumer"]["successful_reqs"]
    per_req = lambda cpu: round(1000 * cpu / reqs, 2) if reqs else None
    # Whole-machine busy CPU time during the measurement; what neither this system nor
    # zaqar-bench used was other work on the machine (noise).
    st = [list(map(int, l.split()[1:])) for l in open(os.path.join(work, f"{sys_}-zaqar-bench.stat"))]
    busy = lambda v: sum(v[:3]) + sum(v[5:8])   # user nice system + irq softirq steal
    machine_busy = (busy(st[1]) - busy(st[0])) / hz
    other_cpu = max(0.0, machine_busy - total_cpu - (client_cpu or 0))
    summary["processes"][sys_] = {
        "rows": rows, "rss_mib_total": round(total_rss, 1),
        "rss_mib_without_redis": round(sum(r["rss_mib"] for r in no_redis), 1),
        "cpu_s_total": round(total_cpu, 2), "cpu_s_without_redis": round(cpu_no_redis, 2),
        "cpu_ms_per_request": per_req(total_cpu), "cpu_ms_per_request_without_redis": per_req(cpu_no_redis),
        "zaqar_bench_cpu_s": client_cpu, "wall_s": wall, "requests": reqs,
        "machine_busy_cpu_s": round(machine_busy, 2), "other_work_cpu_s": round(other_cpu, 2),
        "cores": os.cpu_count()}
    pr = summary["processes"][sys_]
    print(f"{systems[sys_]}:")
    for r in rows:
        print(f"  {name(r['cmd']):<16} pid {r['pid']:<8} RSS {r['rss_mib']:>7.1f} MiB   CPU {r['cpu_s'] if r['cpu_s'] is not None else '?':>6} s")
    print(f"  {'total':<16} {'':<12} RSS {total_rss:>7.1f} MiB   CPU {total_cpu:>6.2f} s "
          f"(without redis: {pr['rss_mib_without_redis']} MiB, {pr['cpu_s_without_redis']} s)")
    print(f"  server CPU per request: {pr['cpu_ms_per_request']} ms "
          f"({pr['cpu_ms_per_request_without_redis']} ms without redis) over {reqs} requests; "
          f"zaqar-bench itself used {client_cpu} s CPU in {wall} s")
    print(f"  machine: {pr['machine_busy_cpu_s']} CPU-s busy of {os.cpu_count() * wall:.1f} available; "
          f"other work on the machine: {pr['other_work_cpu_s']} CPU-s")

if zmode != "none":
    print()
    print(f"== bench/zbench.py {bench_args} -t {secs}  (latency percentiles; producer = post, consumer = claim + delete)")
    print(f"{'system':<26}{'role':<10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for sys_ in ("ref", "ours"):
        r = load(f"{sys_}-zbench")
        if not r:
            continue
        summary["zbench"][sys_] = r["results"]
        for role, v in sorted(r["results"].items(), key=lambda kv: ("producer", "consumer", "observer").index(kv[0])):
            print(f"{systems[sys_]:<26}{role:<10}{v['req_per_s']:>9}{v['p50_ms']:>9}{v['p95_ms']:>9}"
                  f"{v['p99_ms']:>9}{v['errors']:>8}")
print()
print("SUMMARY " + json.dumps(summary, sort_keys=True))
if out:
    with open(out, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
EOF
failed=0
log "done; stopping everything"
