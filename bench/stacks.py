"""zbench against the HTTP ceiling and against ``zaqar-grpc up`` on every store, one after the
other in one run, printing a Markdown table (and JSON) of req/s and latency percentiles.

    python bench/stacks.py --seconds 15 [--observers] [--stores sqlite,redis,mongodb]
                           [--workers 4] [--set message_batch=false ...]

Each store gets its own fresh server: redis-server (``--save "" --appendonly no``, or with
``--durable`` AOF ``appendfsync always``), the MongoDB wire server (SecantusDB), or SQLite
files in a temporary folder. Only loopback addresses are used. ``--set name=value`` overrides
a setting of the stack (as ``ZAQAR_<NAME>`` would).

Besides the table it prints, per stack, the CPU time each process (services and store server)
used while the load ran, in microseconds per request served (user + system time from
``/proc/<pid>/stat``; requests = the requests of the timed load; zbench's 20 prefill posts
are not counted), and the gateway's account of its calls to message_svc (its shutdown log
line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import zbench  # noqa: E402
from services.cli import settings_environment  # noqa: E402
from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import Stack, start_stack  # noqa: E402
from tests.servers import (  # noqa: E402
    ServerProcess,
    free_port,
    mongodb_process,
    redis_process,
    service_ports,
)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, seconds: float, observers: bool, workers: int = 4) -> dict[str, Any]:
    args = ["--url", url, "-pp", "1", "-pw", str(workers), "-cp", "1", "-cw", str(workers),
            "-op", "1" if observers else "0", "-ow", "2", "-t", str(seconds)]
    return zbench.main(args)


def run_hello(seconds: float, observers: bool, workers: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "hello_app.py"),
                             "--port", str(port)])
    try:
        time.sleep(2)
        return {"results": load(f"http://127.0.0.1:{port}", seconds, observers, workers), "rss": {}}
    finally:
        proc.terminate()
        proc.wait()


def run_store(store: str, seconds: float, observers: bool, durable: bool,
              work: Path, settings_overrides: dict[str, str], workers: int) -> dict[str, Any]:
    server: ServerProcess | None = None
    overrides: dict[str, Any] = {
        "data_dir": str(work / store), **service_ports(),
        "log_level": "INFO",
        **settings_overrides,
    }
    if store == "redis":
        server = redis_process(work / "redis", durable=durable)
        server.start()
        uri = f"redis://127.0.0.1:{server.port}/0"
    elif store == "mongodb":
        server = mongodb_process(work / "mongodb")
        server.start()
        uri = f"mongodb://127.0.0.1:{server.port}/bench"
    if server is not None:
        overrides.update(queue_store=uri, message_store=uri, notifier_store=uri)
    settings = Settings.load(environ={}, overrides=overrides)
    stack: Stack = start_stack(settings)
    pids = stack.child_pids()
    if server is not None and server.proc is not None:
        pids[store + "-server"] = server.proc.pid
    try:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        results = load(stack.url, seconds, observers, workers)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        rss = {name: round(rss_mib(pid), 1) for name, pid in pids.items()}
    finally:
        stack.stop()
        if server is not None:
            server.stop()
    requests = sum(r["requests"] for r in results.values())
    cpu_us = {name: round((after[name] - before[name]) / requests * 1e6)
              for name in pids}
    calls = [line.split("api_gateway.coalesce: ", 1)[1].strip()
             for line in stack.output if "api_gateway.coalesce: " in line]
    return {"results": results, "rss": rss, "cpu_us_per_request": cpu_us,
            "requests": requests, "message_calls": calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--observers", action="store_true", help="add 1 observer process, 2 workers")
    ap.add_argument("--durable", action="store_true", help="Redis with AOF appendfsync always")
    ap.add_argument("--stores", default="sqlite,redis,mongodb")
    ap.add_argument("--no-hello", action="store_true")
    ap.add_argument("--workers", type=int, default=4,
                    help="workers of the producer process and of the consumer process (-pw, -cw)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the stacks, e.g. message_batch=false (repeatable)")
    args = ap.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    assert settings_environment  # the harness passes settings to children this way
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="zbench-") as tmp:
        if not args.no_hello:
            runs["hello (HTTP ceiling)"] = run_hello(args.seconds, args.observers, args.workers)
        for store in args.stores.split(","):
            runs[f"zaqar-grpc on {store}"] = run_store(
                store, args.seconds, args.observers, args.durable, Path(tmp), overrides,
                args.workers)
    print()
    print("| target | role | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        for role in ("producer", "consumer", "observer"):
            r = run["results"].get(role)
            if r:
                print(f"| {name} | {role} | {r['req_per_s']} | {r['p50_ms']} | {r['p95_ms']} "
                      f"| {r['p99_ms']} | {r['errors']} |")
    print()
    for name, run in runs.items():
        if run["rss"]:
            print(f"RSS MiB after load, {name}: {run['rss']}")
    for name, run in runs.items():
        if "cpu_us_per_request" in run:
            print(f"CPU µs per request, {name} ({run['requests']} requests): "
                  f"{run['cpu_us_per_request']}")
            for line in run["message_calls"]:
                print(f"  gateway -> message_svc: {line}")
    print(json.dumps({"seconds": args.seconds, "runs": runs}, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
