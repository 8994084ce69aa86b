"""What clients see while the store is down, and how soon after it is back they are served.

Starts the MongoDB wire server (or a redis-server), a ``zaqar-grpc up`` with its three stores on
it, and a few queues with messages; then kills the store (SIGKILL) while ``--workers`` clients
keep sending posts, claims and queue reads, one request at a time each, for ``--down``
seconds; then starts the store again and keeps sending until every worker has been served.
Prints how many answers were 503 and how long they took (p50, p99, max), and how soon after
the store accepted connections again each worker had its first success. With ``--silent``, a
server that accepts connections and never answers takes the store's port while it is down (a
store behind a network partition, or a hung one), instead of nothing (connections refused).

    .venv/bin/python bench/store_outage.py --store mongodb --workers 16 --down 10
    .venv/bin/python bench/store_outage.py --store redis --workers 16 --down 10 --silent
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import start_stack  # noqa: E402
from tests.servers import (  # noqa: E402
    ServerProcess,
    SilentServer,
    mongodb_process,
    mongodb_uri,
    redis_process,
    service_ports,
    wait_mongodb_primary,
)

TRACE: list[float] = []  # with --trace: the moment the run starts
HEADERS = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "outage"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def worker(
    http: httpx.AsyncClient, queue: str, phase: list[str], answers: list[tuple[str, int, float]],
    served_after: dict[str, float], back: list[float], all_served: asyncio.Event, workers: int,
) -> None:
    requests = [
        ("POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": "x", "ttl": 600}]}),
        ("POST", f"/v2/queues/{queue}/claims?limit=1", {"ttl": 60, "grace": 60}),
        ("GET", f"/v2/queues/{queue}/stats", None),
    ]
    i = 0
    while phase[0] != "done":
        method, path, body = requests[i % len(requests)]
        i += 1
        moment = phase[0]
        started = time.monotonic()
        try:
            r = await http.request(method, path, json=body)
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        took = time.monotonic() - started
        answers.append((moment, status, took))
        if TRACE:
            print(f"{started - TRACE[0]:8.3f} {moment:5} {method} {path.rsplit('/', 1)[1]:8} "
                  f"{status} {took * 1000:8.1f} ms", file=sys.stderr)
        if moment == "after" and status < 500 and status != 0 and queue not in served_after:
            served_after[queue] = started - back[0]
            if len(served_after) == workers:
                all_served.set()
        if moment == "down" and status == 503:
            await asyncio.sleep(0.05)  # a client backing off a little, as a real one would


async def run(args: argparse.Namespace) -> list[str]:
    """The services' output."""
    work = Path(tempfile.mkdtemp(prefix="zg-outage-"))
    if args.store == "mongodb":
        server = mongodb_process(work / "mongodb")

        def uri(service: str) -> str:
            return mongodb_uri(server, f"outage_{service}", majority=False)
        serving = wait_mongodb_primary
    else:
        server = redis_process(work / "redis", durable=True)
        databases = {"queue": 1, "message": 2, "notifier": 3}

        def uri(service: str) -> str:
            return f"redis://127.0.0.1:{server.port}/{databases[service]}"

        def serving(_: ServerProcess) -> None:
            return None
    server.start()
    serving(server)
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(work / "data"), **service_ports(),
        "queue_store": uri("queue"), "message_store": uri("message"),
        "notifier_store": uri("notifier"), "log_level": args.log_level,
    })
    stack = start_stack(settings)
    answers: list[tuple[str, int, float]] = []
    served_after: dict[str, float] = {}
    back = [0.0]
    all_served = asyncio.Event()
    queues = [f"q{i}" for i in range(args.workers)]
    try:
        limits = httpx.Limits(max_connections=args.workers + 4)
        async with httpx.AsyncClient(base_url=stack.url, headers=HEADERS, timeout=60,
                                     limits=limits) as http:
            for queue in queues:
                r = await http.put(f"/v2/queues/{queue}", json={})
                assert r.status_code in (201, 204), r.text
            phase = ["up"]
            tasks = [asyncio.create_task(worker(
                http, q, phase, answers, served_after, back, all_served, len(queues)))
                     for q in queues]
            await asyncio.sleep(2)
            phase[0] = "down"
            if TRACE:
                print(f"{time.monotonic() - TRACE[0]:8.3f} kill", file=sys.stderr)
            server.kill()
            killed = time.monotonic()
            silent = SilentServer(server.port) if args.silent else None
            await asyncio.sleep(args.down)
            if silent is not None:
                silent.close()
            server.start()
            await asyncio.to_thread(serving, server)
            back[0] = time.monotonic()
            phase[0] = "after"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_served.wait(), 60)
            phase[0] = "done"
            await asyncio.gather(*tasks)
    finally:
        stack.stop()
        server.stop()
    down = [(status, took) for moment, status, took in answers if moment == "down"]
    unavailable = [took * 1000 for status, took in down if status == 503]
    others = sorted({status for status, _ in down if status != 503})
    print(f"store {args.store}, {args.workers} workers, store down {back[0] - killed:.1f} s")
    print(f"answers while down: {len(down)}, of which 503: {len(unavailable)}"
          f"{'; others: ' + str(others) if others else ''}")
    if unavailable:
        print(f"503 answer time ms: p50 {statistics.median(unavailable):.1f}, "
              f"p99 {percentile(unavailable, 0.99):.1f}, max {max(unavailable):.1f}")
    if served_after:
        after = sorted(served_after.values())
        print(f"first success after the store serves again, s: median "
              f"{statistics.median(after):.2f}, max {after[-1]:.2f} "
              f"({len(after)}/{len(queues)} workers)")
    return stack.output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("mongodb", "redis"), default="mongodb")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--down", type=float, default=10.0, help="seconds the store is down")
    parser.add_argument("--log", help="write the services' output to this file")
    parser.add_argument("--silent", action="store_true",
                        help="while the store is down, a server that never answers takes its port")
    parser.add_argument("--trace", action="store_true", help="print every answer to stderr")
    parser.add_argument("--log-level", default="WARNING", help="the services' log level")
    args = parser.parse_args()
    if args.trace:
        TRACE.append(time.monotonic())
    output = asyncio.run(run(args))
    if args.log:
        Path(args.log).write_text("".join(output))


if __name__ == "__main__":
    main()
