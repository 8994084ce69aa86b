"""What holding long-polling waiters costs: ``--waiters`` claims with ``wait=20`` held on one
queue of ``zaqar-grpc up`` (SQLite, in a temporary folder), and the CPU time and RSS of the
gateway and message_svc before and while they wait (``/proc``); then one post, and how long
the first waiter took to get it.

    python bench/long_polling.py [--waiters 1000] [--hold 10]

The waiters are asyncio HTTP/1.1 connections of this process (one per waiter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stacks import cpu_seconds, rss_mib  # noqa: E402
from services.common.config import Settings  # noqa: E402
from tests.e2e.harness import start_stack  # noqa: E402
from tests.servers import service_ports  # noqa: E402

PROJECT = "bench-long-polling"


async def waiter(host: str, port: int, done: list[float], first: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((
        "POST /v2/queues/lp/claims?wait=20&limit=1 HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Length: 0\r\nClient-ID: {uuid.uuid4()}\r\n"
        f"X-Project-ID: {PROJECT}\r\n\r\n"
    ).encode())
    await writer.drain()
    status = await reader.readline()
    done.append(time.monotonic())
    first.set()
    if b" 201 " in status or b" 204 " in status:
        writer.close()


async def measure(host: str, port: int, pids: dict[str, int], count: int,
                  hold: float) -> dict[str, Any]:
    def sample() -> dict[str, tuple[float, float]]:
        return {name: (cpu_seconds(pid), rss_mib(pid)) for name, pid in pids.items()}

    idle = sample()
    done: list[float] = []
    answered = asyncio.Event()
    tasks = [asyncio.ensure_future(waiter(host, port, done, answered)) for _ in range(count)]
    # Let every waiter arrive and settle before measuring.
    await asyncio.sleep(3)
    settled = sample()
    await asyncio.sleep(hold)
    held = sample()
    answered_early = len(done)
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"messages": [{"body": 1}]}'
    posted = time.monotonic()
    writer.write((
        "POST /v2/queues/lp/messages HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Client-ID: {uuid.uuid4()}\r\nX-Project-ID: {PROJECT}\r\n\r\n"
    ).encode() + body)
    await writer.drain()
    await reader.readline()
    await answered.wait()
    first = done[0] - posted
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.close()
    return {
        "waiters": count,
        "answered_before_the_post": answered_early,
        "hold_seconds": hold,
        "cpu_ms_while_held": {n: round((held[n][0] - settled[n][0]) * 1000) for n in pids},
        "cpu_percent_while_held": {
            n: round((held[n][0] - settled[n][0]) / hold * 100, 2) for n in pids
        },
        "rss_mib_idle": {n: round(idle[n][1], 1) for n in pids},
        "rss_mib_held": {n: round(held[n][1], 1) for n in pids},
        "first_waiter_answered_ms_after_post": round(first * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        settings = Settings.load(environ={}, overrides={"data_dir": work, **service_ports()})
        stack = start_stack(settings)
        try:
            pids = stack.child_pids()
            pids = {n: p for n, p in pids.items() if n in ("gateway", "message")}
            result = asyncio.run(measure(settings.host, settings.http_port, pids,
                                         args.waiters, args.hold))
        finally:
            stack.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
