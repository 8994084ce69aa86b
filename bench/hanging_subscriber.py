"""Post latency to a queue whose webhook subscriber hangs for 30 s, against a queue with no
subscriber, through ``zaqar-grpc up`` (SQLite) over HTTP.

    python bench/hanging_subscriber.py --posts 300

Prints p50/p95/p99 of each; the contract is that delivery never slows the post.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import start_stack  # noqa: E402
from tests.servers import free_port  # noqa: E402


async def receiver(port: int, hits: list[float], hang: float) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        await asyncio.sleep(hang)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1)] * 1000


async def posts(http: aiohttp.ClientSession, queue: str, n: int) -> list[float]:
    took: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        async with http.post(f"/v2/queues/{queue}/messages",
                             json={"messages": [{"body": {"i": i}}]}) as r:
            await r.read()
            assert r.status == 201, r.status
        took.append(time.perf_counter() - started)
    return took


async def run(n: int, url: str) -> None:
    hits: list[float] = []
    fast_hits: list[float] = []
    port, fast_port = free_port(), free_port()
    runner = await receiver(port, hits, hang=30)
    fast_runner = await receiver(fast_port, fast_hits, hang=0)
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "bench",
               "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession(url, headers=headers) as http:
            async with http.post("/v2/queues/hung/subscriptions", json={
                    "subscriber": f"http://127.0.0.1:{port}/hook", "ttl": 3600}) as r:
                assert r.status == 201, await r.text()
            async with http.post("/v2/queues/fast/subscriptions", json={
                    "subscriber": f"http://127.0.0.1:{fast_port}/hook", "ttl": 3600}) as r:
                assert r.status == 201, await r.text()
            for queue in ("quiet", "fast", "hung"):
                await posts(http, queue, 20)  # warm-up
            # Interleaved, so that drift in the machine's load affects the three alike.
            quiet, fast, hung = [], [], []
            for _ in range(n):
                quiet += await posts(http, "quiet", 1)
                fast += await posts(http, "fast", 1)
                hung += await posts(http, "hung", 1)
        print(f"{'queue':<30}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        for name, values in (("no subscriber", quiet), ("subscriber answering at once", fast),
                             ("subscriber hanging 30 s", hung)):
            print(f"{name:<30}{pct(values, 50):>9.2f}{pct(values, 95):>9.2f}"
                  f"{pct(values, 99):>9.2f}{statistics.fmean(values) * 1000:>9.2f}")
        print(f"deliveries started to the hanging subscriber: {len(hits)}; "
              f"delivered to the fast one: {len(fast_hits)}")
    finally:
        await runner.cleanup()
        await fast_runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hung-") as tmp:
        settings = Settings.load(environ={}, overrides={
            "data_dir": tmp, "queue_port": free_port(), "message_port": free_port(),
            "notifier_port": free_port(), "http_port": free_port(), "ws_port": free_port(),
            "log_level": "WARNING", "delivery_timeout": 60.0})
        stack = start_stack(settings)
        try:
            asyncio.run(run(args.posts, stack.url))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
