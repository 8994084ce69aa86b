"""The HTTP ceiling, real Zaqar 23 under gunicorn (1, 2 and 4 sync workers) and zaqar-grpc,
loaded with wrk in alternating rounds: medians, ratios and a Markdown table from one command.

    .venv/bin/python bench/wrk_compare.py [--seconds 20] [--rounds 3] [--replicas 1]
                                          [--systems asgi,ceiling,zaqar,ours] [--json FILE]
                                          [--ours-tree LABEL=PATH ...]
                                          [--ours-env [LABEL:]NAME=VALUE ...]
                                          [--redis-cpus LIST]

Every system runs for the whole session, each on its own redis-server (``--save ""
--appendonly no``, loopback only): the ceilings are ``bench/hello_app.py`` (fixed answers, no
store), as a bare ASGI callable (``asgi``, the raw ceiling of the targets) and as a Falcon app
(``ceiling``); Zaqar 23.0.1 runs under gunicorn from the venv of ``bench/setup_reference.sh`` (this
adds gunicorn to it); ours is ``zaqar-grpc up --store redis://…`` with default settings, its
access log included (a line per request at the default level INFO, into the session's log
file; ``--ours-env ZAQAR_LOG_LEVEL=WARNING`` leaves it out); ``--replicas N``: N of every
service, the load split over the N gateways;
``--ours-tree LABEL=PATH`` adds ours from another checkout (``git worktree add PATH REV``),
run from that tree's code with this venv's packages, to compare changes A/B in one run;
``--ours-env LABEL:ZAQAR_X=V`` sets a variable for that one (no LABEL: for ``ours``), to compare
settings (``--ours-tree b2=. --ours-env b2:ZAQAR_MESSAGE_BATCH_IN_FLIGHT=2``);
``--redis-cpus 1`` runs every system's redis-server on CPU 1 (Redis's ``server_cpulist``), for
runs with our services placed on CPUs too (``--ours-env ZAQAR_GATEWAY_CPUS=0 --ours-env
ZAQAR_MESSAGE_CPUS=1``, docs/operations.md, "CPU placement"). A measurement loads one
system with two wrk processes at once, on a fresh queue: ``bench/wrk/post.lua`` on 4
connections (1 thread) and ``bench/wrk/claim_delete.lua`` on 4 connections (1 per thread, so each
claim's deletes follow it on its connection). A round measures every system once, each
round starting one system later; every system is warmed up first. The report gives medians
over the rounds, the best Zaqar worker count, the ratios ours/Zaqar-best and ours/each ceiling, the
CPU time per request of each system's processes, redis-server included (``/proc``), their RSS
after the load, and ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GUNICORN = "gunicorn==27.0.1"
HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-ID": "wrk-bench",
           "Content-Type": "application/json"}
START_TIMEOUT = 120.0
HZ = os.sysconf("SC_CLK_TCK")

# Zaqar's own WSGI module (zaqar.transport.wsgi.app) reads the default config paths only; this
# one reads the file written for the run, and nothing else.
ZAQAR_WSGI = """\
import os
from oslo_config import cfg
from oslo_log import log
from zaqar import bootstrap

conf = cfg.CONF
log.register_options(conf)
conf(project="zaqar", prog="zaqar-server", default_config_files=[],
     args=["--config-file", os.environ["WRK_COMPARE_ZAQAR_CONF"]])
log.setup(conf, "zaqar")
application = bootstrap.Bootstrap(conf).transport.app
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop the process group of ``proc`` (started in a session of its own): TERM, then KILL
    after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of a process so far, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except OSError:
            continue
    return sorted(found)


def machine_busy_ticks() -> int:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return sum(v[:3]) + sum(v[5:8])   # user nice system + irq softirq steal


def http(method: str, url: str) -> int:
    data = b"{}" if method == "PUT" else None
    request = urllib.request.Request(url, method=method, headers=HEADERS, data=data)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass
class System:
    key: str
    label: str
    urls: list[str] = field(default_factory=list)
    ready_path: str = "/v2/ping"
    ready_status: int = 204
    main_pid: int = 0      # its children are looked up again before every measurement
    named: dict[str, int] = field(default_factory=dict)   # processes that keep their pid
    store: str = ""        # ours: the store URI of every service; Zaqar: its config file

    def ready(self) -> bool:
        return bool(self.urls) and all(
            http("GET", url + self.ready_path) == self.ready_status for url in self.urls)

    def processes(self) -> dict[str, int]:
        procs = dict(self.named)
        if self.key.startswith("zaqar-"):
            procs.update((f"worker {i}", pid) for i, pid in enumerate(children(self.main_pid), 1))
        elif self.key.startswith("ours"):   # a replica that `up` started again has a new pid
            known = set(procs.values())
            procs.update((f"pid {pid}", pid) for pid in children(self.main_pid) if pid not in known)
        return procs


class Session:
    """The processes of one run, each in a session of its own; ``close`` stops them all."""

    def __init__(self, work: Path, redis_cpus: str = "") -> None:
        self.work = work
        self.redis_cpus = redis_cpus   # every system's redis-server on these CPUs ("" = any)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.service_pids: list[int] = []   # zaqar-grpc's services (sessions of their own)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def output(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, name: str, ready: Callable[[], bool]) -> None:
        proc = dict(self.procs)[name]
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if proc.poll() is not None else f"not ready in {START_TIMEOUT:g} s"
                tail = "\n".join(self.output(name).splitlines()[-15:])
                raise SystemExit(f"wrk_compare: {name} {why}:\n{tail}")
            time.sleep(0.3)

    def close(self) -> list[str]:
        """Stops everything, last started first (TERM, up to 30 s, then KILL); returns what
        still runs afterwards."""
        for _, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            stop_group(proc, 30)
        for pid in self.service_pids:   # `up` stops them on TERM; this is in case it could not
            try:
                if b"services.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
        pids = [(n, p.pid) for n, p in self.procs] + [("service", p) for p in self.service_pids]
        return [f"{name} (pid {pid})" for name, pid in pids if cpu_ticks(pid) is not None]


def start_redis(session: Session, name: str) -> tuple[int, int]:
    """A redis-server of its own for one system: (port, pid)."""
    port = free_port()
    (session.work / name).mkdir()
    placed = ["--server_cpulist", session.redis_cpus] if session.redis_cpus else []
    proc = session.start(name, ["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                                "--save", "", "--appendonly", "no", *placed,
                                "--dir", str(session.work / name), "--daemonize", "no"])

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    session.wait_for(name, pong)
    return port, proc.pid


def start_ceiling(session: Session, bare: bool = False) -> System:
    """The Falcon ceiling app, or with ``bare`` the bare ASGI one (``hello_app.py --bare``)."""
    port = free_port()
    key = "asgi" if bare else "ceiling"
    proc = session.start(key, [sys.executable, str(HERE / "hello_app.py"),
                               "--port", str(port), *(["--bare"] if bare else [])])
    label = ("HTTP ceiling, bare ASGI (hello_app.py --bare on uvicorn)" if bare
             else "HTTP ceiling, Falcon (hello_app.py on uvicorn)")
    system = System(key, label, [f"http://127.0.0.1:{port}"], "/v2/queues/ready/stats", 200,
                    named={"uvicorn": proc.pid})
    session.wait_for(key, system.ready)
    return system


# The programs the benches run, by the Debian package that has them.
TOOLS = {"wrk": "wrk", "redis-server": "redis-server", "uptime": "procps"}


def require_tools(program: str) -> None:
    """Install the Debian packages of the :data:`TOOLS` this machine lacks (``apt-get``, as
    root or through ``sudo``), as ``scripts/bootstrap.sh`` does for the tests; where that
    cannot be done, exit saying what to install."""
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if shutil.which("apt-get") and (not sudo or shutil.which("sudo")):
        log(f"installing {', '.join(missing)} (apt-get)")
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", *missing]):
            if subprocess.run([*sudo, *command], stdout=subprocess.DEVNULL).returncode:
                break
    still = sorted(tool for tool in TOOLS if not shutil.which(tool))
    if still:
        raise SystemExit(f"{program}: {', '.join(still)} not found; install the Debian "
                         f"packages {', '.join(TOOLS[tool] for tool in still)}")


def prepare_reference(venv: Path) -> None:
    subprocess.run([str(HERE / "setup_reference.sh"), str(venv)], check=True)
    python = str(venv / "bin" / "python")
    if subprocess.run([python, "-c", "import gunicorn"], capture_output=True).returncode:
        log(f"installing {GUNICORN} into {venv}")
        subprocess.run([python, "-m", "pip", "install", "-q", GUNICORN], check=True)


def start_zaqar(session: Session, venv: Path, workers: int) -> System:
    key = f"zaqar-{workers}w"
    redis_port, redis_pid = start_redis(session, f"redis-{key}")
    port = free_port()
    conf = session.work / f"{key}.conf"
    conf.write_text((HERE / "zaqar-ref.conf.template").read_text()
                    .replace("@BIND@", "127.0.0.1").replace("@PORT@", str(port))
                    .replace("@REDIS_URI@", f"redis://127.0.0.1:{redis_port}?dbid=0"))
    proc = session.start(
        key, [str(venv / "bin" / "gunicorn"), "--workers", str(workers), "--worker-class", "sync",
              "--bind", f"127.0.0.1:{port}", "--chdir", str(session.work),
              "--log-level", "warning", "zaqar_ref_wsgi:application"],
        env={**os.environ, "WRK_COMPARE_ZAQAR_CONF": str(conf)})
    system = System(key, f"Zaqar 23, gunicorn {workers} sync worker{'s' * (workers > 1)}",
                    [f"http://127.0.0.1:{port}"], main_pid=proc.pid,
                    named={"gunicorn master": proc.pid, "redis-server": redis_pid},
                    store=str(conf))
    session.wait_for(key, system.ready)
    return system


def start_ours(session: Session, replicas: int, key: str = "ours",
               tree: Path | None = None, extra_env: dict[str, str] | None = None) -> System:
    """``zaqar-grpc up`` on a redis-server of its own; from ``tree`` (another checkout, whose
    code goes first on PYTHONPATH) when given, with ``extra_env`` set."""
    redis_port, redis_pid = start_redis(session, f"redis-{key}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZAQAR_")}
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}:{tree / 'services' / 'common' / 'gen'}"
    # With replicas, `up` gives each replica of a port set to 0 a free port of its own; one
    # replica would listen on "any" port, where `up` cannot find it.
    ports = [0] * 5 if replicas > 1 else [free_port() for _ in range(5)]
    env.update({f"ZAQAR_{name}_PORT": str(port) for name, port in
                zip(("HTTP", "WS", "QUEUE", "MESSAGE", "NOTIFIER"), ports, strict=True)})
    # Metrics stay on, on ports of their own: the defaults (9181-9183) may be taken by another
    # zaqar-grpc on the same machine.
    env.update({f"ZAQAR_{name}_METRICS_PORT": str(free_port() if replicas == 1 else 0)
                for name in ("QUEUE", "MESSAGE", "NOTIFIER")})
    env.update(PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    proc = session.start(key, [sys.executable, "-m", "services.cli", "up",
                               "--store", f"redis://127.0.0.1:{redis_port}/0",
                               "--data-dir", str(session.work / f"{key}-data"),
                               *(["--replicas", str(replicas)] if replicas > 1 else [])],
                         env=env, cwd=tree or ROOT)
    label = "zaqar-grpc" + f" ({replicas} replicas)" * (replicas > 1)
    if tree is not None:
        label += f" [{key.removeprefix('ours-')}: {tree}]"
    if extra_env:
        label += " " + " ".join(f"{k}={v}" for k, v in extra_env.items())
    system = System(key, label,
                    main_pid=proc.pid, named={"up": proc.pid, "redis-server": redis_pid},
                    store=f"redis://127.0.0.1:{redis_port}/0")

    def up() -> bool:
        text = session.output(key)
        if "zaqar-grpc is up:" not in text:
            return False
        # "   message: 127.0.0.1:50062  (pid 123)", " gateway.1: http://… ws://…  (pid 124)"
        for m in re.finditer(r"^\s*(\S+): (\S+).*\(pid (\d+)\)\s*$", text, re.M):
            system.named[m[1]] = int(m[3])
            session.service_pids.append(int(m[3]))
            if m[1].startswith("gateway"):
                system.urls.append(m[2])
        return True

    session.wait_for(key, up)
    session.wait_for(key, system.ready)
    return system


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def merge_latency(results: list[dict[str, Any]]) -> dict[str, float]:
    """p50/p90/p99 in ms over the requests of several wrk processes: exact for one process,
    from the percentile points each reports for several."""
    if len(results) == 1:
        return {p: round(v / 1000, 2) for p, v in results[0]["latency_us"].items()
                if p in ("p50", "p90", "p99")}
    samples = []
    for r in results:
        previous = 0.0
        for p, value in r["quantiles_us"]:
            samples.append((value, r["requests"] * (p - previous) / 100))
            previous = p
    samples.sort()
    total = sum(w for _, w in samples)
    merged = {}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        acc = 0.0
        for value, weight in samples:
            acc += weight
            if acc >= total * p / 100 * (1 - 1e-9):
                merged[name] = round(value / 1000, 2)
                break
    return merged


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One role's numbers over its wrk processes (one per gateway)."""
    counters: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["counters"].items():
            counters[k] = counters.get(k, 0) + v
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {"req_s": round(sum(r["req_per_s"] for r in results), 1),
            "requests": sum(r["requests"] for r in results),
            "errors": sum(r["errors"] for r in results), "statuses": statuses,
            "counters": counters, **merge_latency(results)}


def measure(session: Session, system: System, seconds: float, connections: int, queue: str,
            tag: str) -> dict[str, Any]:
    """Loads ``system`` with the producer and the consumer at once; what was measured."""
    for url in system.urls:
        status = http("PUT", f"{url}/v2/queues/{queue}")
        if status not in (201, 204):
            raise SystemExit(f"wrk_compare: PUT queue {queue} on {system.label}: {status}")
    procs = system.processes()
    before = {name: cpu_ticks(pid) for name, pid in procs.items()}
    busy_before = machine_busy_ticks()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    runs = []
    for i, (url, conns) in enumerate(
            zip(system.urls, split(connections, len(system.urls)), strict=True)):
        for role, script, threads in (("producer", "post.lua", 1),
                                      ("consumer", "claim_delete.lua", conns)):
            argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "5s",
                    "-s", str(HERE / "wrk" / script), url, "--", f"queue={queue}",
                    f"project={HEADERS['X-Project-ID']}", f"client_id={HEADERS['Client-ID']}"]
            runs.append((role, f"{tag}-{role}-{i}", session.start(f"{tag}-{role}-{i}", argv)))
    for _, _, proc in runs:
        proc.wait(seconds + 60)
    after = {name: cpu_ticks(pid) for name, pid in procs.items()}
    rss = {name: rss_mib(pid) for name, pid in procs.items()}
    busy = (machine_busy_ticks() - busy_before) / HZ
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    by_role: dict[str, list[dict[str, Any]]] = {"producer": [], "consumer": []}
    for role, name, proc in runs:
        lines = [x for x in session.output(name).splitlines() if x.startswith("WRK_RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"wrk_compare: wrk ({role}) against {system.label} failed:\n"
                             + session.output(name)[-2000:])
        by_role[role].append(json.loads(lines[-1].split(" ", 1)[1]))
    for name, pid in system.named.items():
        if cpu_ticks(pid) is None:
            raise SystemExit(f"wrk_compare: {name} of {system.label} exited during the load")
    result = {role: combine(results) for role, results in by_role.items()}
    requests = result["producer"]["requests"] + result["consumer"]["requests"]
    cpu = {}
    for name in procs:
        b, a = before[name], after[name]
        if a is not None and b is not None:
            cpu[name] = (a - b) / HZ
    per_request = {name: round(s / max(requests, 1) * 1e6) for name, s in cpu.items()}
    return {**result, "cpu_us_per_request": per_request,
            "cpu_us_per_request_total": round(sum(cpu.values()) / max(requests, 1) * 1e6),
            "rss_mib": rss, "wrk_cpu_s": round(wrk_cpu, 2), "machine_busy_cpu_s": round(busy, 2),
            "other_cpu_s": round(max(0.0, busy - sum(cpu.values()) - wrk_cpu), 2)}


def summarize(systems: list[System], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for system in systems:
        runs = [r[system.key] for r in rounds]
        row: dict[str, Any] = {"label": system.label}
        for role in ("producer", "consumer"):
            for k in ("req_s", "p50", "p90", "p99"):
                row[f"{role}_{k}"] = round(statistics.median(x[role][k] for x in runs), 2)
            row[f"{role}_errors"] = sum(x[role]["errors"] for x in runs)
        for k in ("claims", "empty_claims", "deletes", "claimed_messages", "ambiguous"):
            row[k] = sum(x["consumer"]["counters"].get(k, 0) for x in runs)
        row["cpu_us_per_request"] = statistics.median(x["cpu_us_per_request_total"] for x in runs)
        row["cpu_us_per_request_by_process"] = {
            name: statistics.median(x["cpu_us_per_request"].get(name, 0) for x in runs)
            for name in runs[-1]["cpu_us_per_request"]}
        row["rss_mib_max"] = {name: max(x["rss_mib"].get(name) or 0 for x in runs)
                              for name in runs[-1]["rss_mib"]}
        rows[system.key] = row
    zaqars = [k for k in rows if k.startswith("zaqar-")]
    best = max(zaqars, default=None,
               key=lambda k: rows[k]["producer_req_s"] + rows[k]["consumer_req_s"])
    ratios: dict[str, Any] = {}
    for ours in (k for k in rows if k.startswith("ours")):
        refs = [("zaqar_best", best), ("asgi", "asgi"), ("ceiling", "ceiling")]
        if ours != "ours":
            refs.append(("ours", "ours"))
        for name, ref in refs:
            if ref in rows:
                ratios[f"{ours}/{name}"] = {
                    role: round(rows[ours][f"{role}_req_s"]
                                / max(rows[ref][f"{role}_req_s"], 1e-9), 3)
                    for role in ("producer", "consumer")}
    return {"systems": rows, "zaqar_best": best, "ratios": ratios}


def markdown(summary: dict[str, Any], rounds: list[dict[str, Any]]) -> str:
    rows, best = summary["systems"], summary["zaqar_best"]
    out = ["| system | producer req/s | p50 / p99 ms | consumer req/s | p50 / p99 ms "
           "| claims (empty) / deletes | errors | CPU µs/req |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in rows.items():
        out.append(
            f"| {r['label']}{' **(best Zaqar)**' * (key == best)} | {r['producer_req_s']} "
            f"| {r['producer_p50']} / {r['producer_p99']} | {r['consumer_req_s']} "
            f"| {r['consumer_p50']} / {r['consumer_p99']} "
            f"| {r['claims']} ({r['empty_claims']}) / {r['deletes']} "
            f"| {r['producer_errors'] + r['consumer_errors']} | {r['cpu_us_per_request']:g} |")
    for name, ratio in summary["ratios"].items():
        ours, ref = name.split("/")
        fmt = "{:.1%}" if ref in ("asgi", "ceiling") else "x{:.2f}"
        label = f"{ours} / " + (rows[best]["label"] if ref == "zaqar_best" else ref)
        out.append(f"| **{label}** | **{fmt.format(ratio['producer'])}** | "
                   f"| **{fmt.format(ratio['consumer'])}** | | | | |")
    out += ["", "CPU µs per request by process (median) and RSS MiB after the load (largest):", ""]
    for r in rows.values():
        cpu = ", ".join(f"{n} {v:g}" for n, v in r["cpu_us_per_request_by_process"].items())
        rss = ", ".join(f"{n} {v:g}" for n, v in r["rss_mib_max"].items())
        out.append(f"- {r['label']}: CPU {cpu}; RSS {rss}")
    out += ["", "Each round: producer / consumer req/s (CPU-s the machine spent on other work):",
            "", "| round | " + " | ".join(r["label"] for r in rows.values()) + " |",
            "|---|" + "---:|" * len(rows)]
    for i, rnd in enumerate(rounds, 1):
        cells = [f"{rnd[k]['producer']['req_s']} / {rnd[k]['consumer']['req_s']} "
                 f"({rnd[k]['other_cpu_s']})" for k in rows]
        out.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20, help="load per measurement (20)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of measurements (3)")
    ap.add_argument("--systems", default="asgi,ceiling,zaqar,ours",
                    help="some of asgi (bare ASGI ceiling), ceiling (Falcon ceiling), zaqar "
                         "(every --zaqar-workers), zaqar-Nw, ours")
    ap.add_argument("--zaqar-workers", default="1,2,4", help="gunicorn sync workers (1,2,4)")
    ap.add_argument("--replicas", type=int, default=1, help="zaqar-grpc up --replicas (1)")
    ap.add_argument("--connections", type=int, default=4,
                    help="connections of the producer, and of the consumer (4)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of load per system first (3)")
    ap.add_argument("--zaqar-venv", type=Path,
                    default=Path(os.environ.get("ZAQAR_REF_VENV", HERE / ".venv-zaqar")))
    ap.add_argument("--ours-tree", action="append", default=[], metavar="LABEL=PATH",
                    help="also ours from the checkout at PATH, labelled LABEL (repeatable)")
    ap.add_argument("--ours-env", action="append", default=[], metavar="[LABEL:]NAME=VALUE",
                    help="an environment variable of ours, or of --ours-tree LABEL (repeatable)")
    ap.add_argument("--redis-cpus", default="", metavar="LIST",
                    help="run every system's redis-server on these CPUs (its server_cpulist, "
                         "e.g. 1); default: wherever the system puts it")
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the logs and wrk outputs")
    args = ap.parse_args()
    args.wanted = []
    for name in args.systems.split(","):
        if name == "zaqar":
            args.wanted += [f"zaqar-{int(w)}w" for w in args.zaqar_workers.split(",")]
        elif name in ("asgi", "ceiling", "ours") or re.fullmatch(r"zaqar-\d+w", name):
            args.wanted.append(name)
        else:
            ap.error(f"unknown system {name!r}")
    args.trees = {}
    for spec in args.ours_tree:
        label, _, path = spec.partition("=")
        tree = Path(path).resolve()
        if not re.fullmatch(r"[\w.-]+", label) or not (tree / "services" / "cli.py").exists():
            ap.error(f"--ours-tree {spec!r}: LABEL=PATH of a checkout of this project")
        args.trees[f"ours-{label}"] = tree
        args.wanted.append(f"ours-{label}")
    args.envs = {}
    for spec in args.ours_env:
        labelled = ":" in spec.split("=")[0]
        target, _, assignment = spec.partition(":") if labelled else ("", "", spec)
        name, _, value = assignment.partition("=")
        key = f"ours-{target}" if target else "ours"
        if not name or key not in ("ours", *args.trees):
            ap.error(f"--ours-env {spec!r}: [LABEL:]NAME=VALUE, LABEL one of --ours-tree's")
        args.envs.setdefault(key, {})[name] = value
    if args.connections < args.replicas:
        ap.error("--connections must be at least --replicas (one per gateway)")
    return args


def main() -> None:
    args = parse_args()
    require_tools("wrk_compare")
    if any(name.startswith("zaqar-") for name in args.wanted):
        prepare_reference(args.zaqar_venv)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"wrk_compare: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    work = Path(tempfile.mkdtemp(prefix="wrk-compare-"))
    (work / "zaqar_ref_wsgi.py").write_text(ZAQAR_WSGI)
    session = Session(work, args.redis_cpus)
    uptime_before = uptime()
    log(f"uptime before: {uptime_before}")
    rounds: list[dict[str, Any]] = []
    try:
        systems = []
        for name in args.wanted:
            log(f"starting {name}")
            if name in ("asgi", "ceiling"):
                systems.append(start_ceiling(session, bare=name == "asgi"))
            elif name == "ours":
                systems.append(start_ours(session, args.replicas,
                                          extra_env=args.envs.get("ours")))
            elif name in args.trees:
                systems.append(start_ours(session, args.replicas, name, args.trees[name],
                                          args.envs.get(name)))
            else:
                systems.append(start_zaqar(session, args.zaqar_venv, int(name[6:-1])))
        for system in systems:
            log(f"warm-up: {system.label}, {args.warmup:g} s")
            measure(session, system, args.warmup, args.connections, "wrk-warmup",
                    f"warmup-{system.key}")
        for n in range(args.rounds):
            rnd = {}
            for system in systems[n % len(systems):] + systems[:n % len(systems)]:
                time.sleep(2)
                m = rnd[system.key] = measure(session, system, args.seconds, args.connections,
                                              f"wrk-r{n + 1}", f"r{n + 1}-{system.key}")
                p, c = m["producer"], m["consumer"]
                log(f"round {n + 1}, {system.label}: producer {p['req_s']} req/s p99 {p['p99']} "
                    f"ms, consumer {c['req_s']} req/s p99 {c['p99']} ms, errors "
                    f"{p['errors'] + c['errors']}, {m['cpu_us_per_request_total']} CPU µs/req")
            rounds.append(rnd)
    finally:
        log("stopping everything")
        left = session.close()
        if left:
            print(f"wrk_compare: still running after the stop: {', '.join(left)}",
                  file=sys.stderr)
        if args.keep_tmp:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    uptime_after = uptime()
    summary = summarize(systems, rounds)
    print()
    print(f"wrk: `-t1 -c{args.connections}` post.lua and `-t{args.connections} "
          f"-c{args.connections}` claim_delete.lua at once, {args.seconds:g} s per measurement, "
          f"{args.rounds} round(s), medians (errors, claims and deletes: totals)")
    print(f"uptime before: {uptime_before}")
    print(f"uptime after:  {uptime_after}")
    print()
    print(markdown(summary, rounds))
    if args.json:
        args.json.write_text(json.dumps(
            {"argv": sys.argv[1:], "uptime_before": uptime_before, "uptime_after": uptime_after,
             "summary": summary, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
