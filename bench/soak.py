"""Memory soak: ``zaqar-grpc up`` on Redis (or MongoDB) under zaqar-bench's load for a long
time, with a webhook subscriber on the queue (so notifier_svc works too), sampling each
process's RSS.

    python bench/soak.py --minutes 30 [--round 60] [--store redis|redis-cluster|mongodb]

``--store mongodb`` puts every store on the test suite's MongoDB wire server (on disk), whose
own process is sampled as ``mongodb``. ``--store redis-cluster`` puts them on a Redis Cluster of
three masters with a replica each, whose nodes are sampled as ``redis-<port>``.

Load: rounds of ``bench/zbench.py -pp 1 -pw 4 -cp 1 -cw 4`` against one queue, each round
``--round`` seconds; after each round the RSS of every service process and of redis-server is
recorded with the round's req/s. Prints a Markdown table and, per service, the RSS after the
first round, the maximum, the last, and the growth per 10 minutes (least squares over the
rounds after the first), then the JSON of every sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import zbench  # noqa: E402
from bench.stacks import rss_mib  # noqa: E402
from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import start_stack  # noqa: E402
from tests.servers import (  # noqa: E402
    ServerProcess,
    free_port,
    mongodb_process,
    mongodb_uri,
    redis_process,
    service_ports,
    start_redis_cluster,
    wait_mongodb_primary,
)


def receiver(port: int, count: Any) -> None:
    """A webhook endpoint that answers 204 at once, counting requests, until terminated."""

    async def serve() -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            with count.get_lock():
                count.value += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def subscribe(url: str, queue: str, hook: str) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "bench",
               "Content-Type": "application/json"}
    async with aiohttp.ClientSession(url, headers=headers) as http:
        async with http.post(f"/v2/queues/{queue}/subscriptions",
                             json={"subscriber": hook, "ttl": 86400}) as r:
            if r.status != 201:
                raise SystemExit(f"subscribe failed: {r.status} {await r.text()}")


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return statistics.linear_regression(xs, ys).slope * 600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--round", type=float, default=60, help="seconds per load round")
    ap.add_argument("--store", choices=("redis", "redis-cluster", "mongodb"), default="redis")
    args = ap.parse_args()
    rounds = max(2, round(args.minutes * 60 / args.round))
    queue = "soak-" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        servers: dict[str, ServerProcess] = {}
        if args.store == "redis":
            server = servers["redis-server"] = redis_process(work / "redis")
            server.start()
            uris = {f"{s}_store": f"redis://127.0.0.1:{server.port}/0"
                    for s in ("queue", "message", "notifier")}
        elif args.store == "redis-cluster":
            cluster = start_redis_cluster(work / "cluster")
            servers.update({f"redis-{node.port}": node for node in cluster.nodes})
            uris = cluster.stack_uris("soak")
        else:
            server = servers["mongodb"] = mongodb_process(work / "mongodb")
            server.start()
            wait_mongodb_primary(server)
            # Without retryable writes: the test server keeps a record of each one and scans
            # them all on every write (83 % of its CPU after a few minutes), which would make
            # this a soak of the test server.
            uris = {f"{s}_store": mongodb_uri(server, f"soak_{s}", "retryWrites=false")
                    for s in ("queue", "message", "notifier")}
        settings = Settings.load(environ={}, overrides={
            "data_dir": str(work / "data"), **service_ports(), "log_level": "WARNING", **uris,
        })
        stack = start_stack(settings)
        hook_port = free_port()
        delivered = multiprocessing.Value("q", 0)
        hook = multiprocessing.Process(target=receiver, args=(hook_port, delivered), daemon=True)
        hook.start()
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            time.sleep(1)
            asyncio.run(subscribe(stack.url, queue, f"http://127.0.0.1:{hook_port}/hook"))
            pids = dict(stack.child_pids())
            for name, process in servers.items():
                assert process.proc is not None
                pids[name] = process.proc.pid
            for n in range(rounds):
                result = zbench.main([
                    "--url", stack.url, "-pp", "1", "-pw", "4", "-cp", "1", "-cw", "4",
                    "-op", "0", "-t", str(args.round), "--queue", queue, "--prefill", "0",
                ])
                sample = {
                    "round": n + 1, "minutes": round((time.monotonic() - started) / 60, 2),
                    "producer_rps": round(result["producer"]["req_per_s"], 1),
                    "consumer_rps": round(result["consumer"]["req_per_s"], 1),
                    "errors": result["producer"]["errors"] + result["consumer"]["errors"],
                    "delivered": delivered.value,
                    "rss": {name: round(rss_mib(pid), 1) for name, pid in pids.items()},
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        finally:
            hook.terminate()
            stack.stop()
            for process in servers.values():
                process.stop()
    names = list(samples[0]["rss"])
    print()
    print("| round | min | producer req/s | consumer req/s | errors | webhook deliveries | "
          + " | ".join(f"{n} MiB" for n in names) + " |")
    print("|" + "---:|" * (6 + len(names)))
    for s in samples:
        print(f"| {s['round']} | {s['minutes']} | {s['producer_rps']} | {s['consumer_rps']} | "
              f"{s['errors']} | {s['delivered']} | "
              + " | ".join(str(s["rss"][n]) for n in names) + " |")
    print()
    print("| process | RSS after round 1 | max | last | growth per 10 min (rounds 2..) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        series = [s["rss"][name] for s in samples]
        points = [(s["minutes"] * 60, s["rss"][name]) for s in samples[1:]]
        print(f"| {name} | {series[0]} | {max(series)} | {series[-1]} | "
              f"{slope_per_10min(points):+.2f} MiB |")


if __name__ == "__main__":
    main()
