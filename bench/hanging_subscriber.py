"""Post latency to a queue whose webhook subscriber hangs for 30 s, against a queue with no
subscriber, through ``zaqar-grpc up`` (SQLite) over HTTP.

    python bench/hanging_subscriber.py --posts 300

Posts go one at a time in alternating blocks of ``--block`` posts per queue (so drift in the
machine's load hits the queues alike, and each queue's posts see the after-effects of its own
previous posts, as a client posting to it would). The webhook receivers run in their own
process, so that deliveries never compete with the measuring client's event loop.

Prints p50/p95/p99 of each; the contract is that delivery never slows the post.
"""

from __future__ import annotations

import argparse
import asyncio
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

from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import start_stack  # noqa: E402
from tests.servers import free_port, service_ports  # noqa: E402


def receivers(ports: dict[str, int], counts: dict[str, Any]) -> None:
    """A process serving one webhook endpoint per ``ports`` entry ("hung": answers after
    30 s, "fast": at once) until terminated; ``counts`` (shared memory) count the requests."""

    async def serve() -> None:
        runners = []
        for name, port in ports.items():
            hang = 30.0 if name == "hung" else 0.0

            async def handle(request: web.Request, name: str = name,
                             hang: float = hang) -> web.Response:
                with counts[name].get_lock():
                    counts[name].value += 1
                await asyncio.sleep(hang)
                return web.Response(status=204)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        await asyncio.Event().wait()

    asyncio.run(serve())


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


async def run(n: int, block: int, url: str) -> None:
    port, fast_port = free_port(), free_port()
    counts = {name: multiprocessing.Value("i", 0) for name in ("hung", "fast")}
    process = multiprocessing.Process(
        target=receivers, args=({"hung": port, "fast": fast_port}, counts), daemon=True
    )
    process.start()
    await asyncio.sleep(1.0)
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
            # Alternating blocks, so that drift in the machine's load affects the three alike.
            quiet: list[float] = []
            fast: list[float] = []
            hung: list[float] = []
            for _ in range(max(1, n // block)):
                quiet += await posts(http, "quiet", block)
                fast += await posts(http, "fast", block)
                hung += await posts(http, "hung", block)
        print(f"{'queue':<30}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        for name, values in (("no subscriber", quiet), ("subscriber answering at once", fast),
                             ("subscriber hanging 30 s", hung)):
            print(f"{name:<30}{pct(values, 50):>9.2f}{pct(values, 95):>9.2f}"
                  f"{pct(values, 99):>9.2f}{statistics.fmean(values) * 1000:>9.2f}")
        expected = len(fast) + 20
        posted = time.monotonic()
        for _ in range(600):  # the last deliveries may still be on their way
            if counts["fast"].value >= expected:
                break
            await asyncio.sleep(0.1)
        print(f"deliveries started to the hanging subscriber: {counts['hung'].value}; "
              f"delivered to the fast one: {counts['fast'].value} of {expected}, the last "
              f"{time.monotonic() - posted:.1f} s after the last post")
    finally:
        process.terminate()
        process.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=300, help="posts per queue")
    ap.add_argument("--block", type=int, default=25, help="posts per queue in a row")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hung-") as tmp:
        settings = Settings.load(environ={}, overrides={
            "data_dir": tmp, **service_ports(),
            "log_level": "WARNING", "delivery_timeout": 60.0})
        stack = start_stack(settings)
        try:
            asyncio.run(run(args.posts, args.block, stack.url))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
