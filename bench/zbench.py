"""Load generator with zaqar-bench's roles, bounded by time, reporting latency percentiles.

Roles (as zaqar-bench defines them):
  producers  post one message per request;
  consumers  claim up to 5 messages, then delete each claimed message with its claim id;
  observers  list messages with include_claimed.

Each role runs ``--<role>-processes`` OS processes with ``--<role>-workers`` concurrent
workers each (asyncio + aiohttp, one connection per worker). Only loopback targets are
accepted. Prints, per role, requests/s and p50/p95/p99 latency, plus a JSON line for scripts.

    python bench/zbench.py --url http://127.0.0.1:8888 -pp 1 -pw 4 -cp 1 -cw 4 -op 0 -t 20
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing as mp
import socket
import statistics
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import aiohttp

MESSAGE = {"body": {"event": "BackupStarted", "backup_id": "c378813c-3f0b-11e2-ad92-7823d2b0f3ce",
                    "current_bytes": "0", "total_bytes": "99614720"}, "ttl": 300}


def _loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    addr = ipaddress.ip_address(socket.gethostbyname(host))
    if not addr.is_loopback:
        raise SystemExit(f"refusing to load {host}: only loopback targets are allowed")


async def _worker(role: str, base: str, queue: str, project: str, deadline: float,
                  latencies: list[float], errors: list[int]) -> int:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
               "Content-Type": "application/json", "Accept": "application/json"}
    requests = 0
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base, headers=headers, connector=conn) as http:
        msg_path = f"/v2/queues/{queue}/messages"
        post_body = json.dumps({"messages": [MESSAGE]})
        while time.monotonic() < deadline:
            if role == "producer":
                t = time.perf_counter()
                async with http.post(msg_path, data=post_body) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t)
                requests += 1
                if r.status != 201:
                    errors.append(r.status)
            elif role == "consumer":
                t = time.perf_counter()
                async with http.post(f"/v2/queues/{queue}/claims?limit=5",
                                     data='{"ttl": 300, "grace": 200}') as r:
                    data = await r.read()
                latencies.append(time.perf_counter() - t)
                requests += 1
                if r.status == 201:
                    for m in json.loads(data)["messages"]:
                        t = time.perf_counter()
                        async with http.delete(m["href"]) as d:
                            await d.read()
                        latencies.append(time.perf_counter() - t)
                        requests += 1
                        if d.status != 204:
                            errors.append(d.status)
                elif r.status != 204:
                    errors.append(r.status)
            else:
                t = time.perf_counter()
                async with http.get(f"{msg_path}?include_claimed=true&echo=true&limit=5") as r:
                    await r.read()
                latencies.append(time.perf_counter() - t)
                requests += 1
                if r.status != 200:
                    errors.append(r.status)
    return requests


def _process(role: str, base: str, queue: str, project: str, workers: int, duration: float,
             out: Any) -> None:
    async def run() -> tuple[int, list[float], list[int]]:
        deadline = time.monotonic() + duration
        latencies: list[float] = []
        errors: list[int] = []
        counts = await asyncio.gather(*[
            _worker(role, base, queue, project, deadline, latencies, errors)
            for _ in range(workers)])
        return sum(counts), latencies, errors

    total, latencies, errors = asyncio.run(run())
    out.put((role, total, latencies, errors))


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k] * 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8888")
    ap.add_argument("-pp", "--producer-processes", type=int, default=1)
    ap.add_argument("-pw", "--producer-workers", type=int, default=4)
    ap.add_argument("-cp", "--consumer-processes", type=int, default=1)
    ap.add_argument("-cw", "--consumer-workers", type=int, default=4)
    ap.add_argument("-op", "--observer-processes", type=int, default=0)
    ap.add_argument("-ow", "--observer-workers", type=int, default=2)
    ap.add_argument("-t", "--time", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--queue", default="bench-" + uuid.uuid4().hex[:8])
    ap.add_argument("--project", default="bench")
    ap.add_argument("--prefill", type=int, default=200,
                    help="messages posted before the clock starts, so consumers start busy")
    args = ap.parse_args(argv)
    _loopback_only(args.url)

    async def prefill() -> None:
        headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": args.project,
                   "Content-Type": "application/json"}
        async with aiohttp.ClientSession(args.url, headers=headers) as http:
            for _ in range(args.prefill // 10):
                body = json.dumps({"messages": [MESSAGE] * 10})
                async with http.post(f"/v2/queues/{args.queue}/messages", data=body) as r:
                    if r.status != 201:
                        raise SystemExit(f"prefill failed: {r.status} {await r.text()}")

    asyncio.run(prefill())
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    plan = [("producer", args.producer_processes, args.producer_workers),
            ("consumer", args.consumer_processes, args.consumer_workers),
            ("observer", args.observer_processes, args.observer_workers)]
    procs = [ctx.Process(target=_process, args=(role, args.url, args.queue, args.project,
                                                 workers, args.time, out))
             for role, n, workers in plan for _ in range(n)]
    for p in procs:
        p.start()
    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, tuple[int, list[float], list[int]]] = {}
    for _ in procs:
        role, total, lat, errs = out.get(timeout=args.time + 120)
        so_far, lats, errs_so_far = raw.get(role, (0, [], []))
        raw[role] = (so_far + total, lats + lat, errs_so_far + errs)
    for p in procs:
        p.join()
    for role, (total, lat, errs) in raw.items():
        lat.sort()
        results[role] = {
            "requests": total, "req_per_s": round(total / args.time, 1),
            "p50_ms": round(_pct(lat, 50), 2), "p95_ms": round(_pct(lat, 95), 2),
            "p99_ms": round(_pct(lat, 99), 2),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else float("nan"),
            "errors": len(errs), "error_codes": sorted(set(errs)),
        }
    print(f"{'role':<10}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for role, r in results.items():
        print(f"{role:<10}{r['req_per_s']:>10}{r['p50_ms']:>10}{r['p95_ms']:>10}"
              f"{r['p99_ms']:>10}{r['errors']:>8}")
    print(json.dumps({"url": args.url, "seconds": args.time, "results": results}))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
