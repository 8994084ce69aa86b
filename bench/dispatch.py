"""Webhook delivery throughput of notifier_svc's dispatcher to one subscriber.

    python bench/dispatch.py --store redis://127.0.0.1:6379/0 --deliveries 2000
    python bench/dispatch.py --deliveries 2000          # SQLite in a temporary folder

Stores ``--deliveries`` pending deliveries for one webhook (a local aiohttp server in its own
process answering 204 at once), starts a dispatcher with the real webhook sender, and prints
how long the outbox took to drain and the CPU time of this process per delivery (event loop
and store driver threads together).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.notifier_svc.delivery.dispatcher import Dispatcher  # noqa: E402
from services.notifier_svc.delivery.webhook import WebhookSender  # noqa: E402
from services.notifier_svc.storage.base import DeliveryKind, NewDelivery  # noqa: E402
from services.notifier_svc.storage.registry import open_notifier_store  # noqa: E402
from tests.servers import free_port  # noqa: E402


def receiver(port: int) -> None:
    async def serve() -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def no_queue_policy(project: str, queue: str) -> Any:
    return None


async def run(uri: str, count: int) -> None:
    port = free_port()
    hook_process = multiprocessing.Process(target=receiver, args=(port,), daemon=True)
    hook_process.start()
    await asyncio.sleep(1)
    store = await open_notifier_store(uri)
    hook = f"http://127.0.0.1:{port}/hook"
    subscription, _ = await store.create("bench", "q", hook, 3600, {})
    for start in range(0, count, 500):
        await store.enqueue([
            NewDelivery(subscription.id, "bench", "q", hook, {}, DeliveryKind.NOTIFICATION,
                        b'{"body": {"n": %d}}' % n)
            for n in range(start, min(count, start + 500))
        ])
    sender = WebhookSender(10, 64)
    dispatcher = Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=64, timeout=10)
    began, cpu = time.monotonic(), time.process_time()
    dispatcher.start()
    while True:  # polled: the outbox has no event to wait on
        if await store.count_deliveries() == 0:
            break
        await asyncio.sleep(0.05)
    took, cpu = time.monotonic() - began, time.process_time() - cpu
    await dispatcher.stop()
    await sender.close()
    await store.close()
    hook_process.terminate()
    print(f"{uri.partition(':')[0]}: {count} deliveries in {took:.2f} s = {count / took:.0f}/s, "
          f"{cpu / count * 1e6:.0f} us CPU per delivery")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="", help="notifier store URI (default: SQLite, temporary)")
    ap.add_argument("--deliveries", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dispatch-") as tmp:
        asyncio.run(run(args.store or f"sqlite:///{tmp}/notifier.db", args.deliveries))


if __name__ == "__main__":
    main()
