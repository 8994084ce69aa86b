"""Notifications end to end: real processes, real HTTP receivers.

* Through ``zaqar-grpc up`` (the session stacks, SQLite and Redis): a message posted over HTTP
  reaches a webhook subscribed over gRPC.
* A crash: notifier_svc runs as its own process (``zaqar-grpc serve notifier``) and is killed
  with SIGKILL while notifications wait for a receiver that is down; once the receiver is up
  and notifier_svc started again, every acknowledged notification arrives (at least once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest
from aiohttp import web
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
)

from services.cli import settings_environment
from services.common.config import Settings
from services.message_svc import server as message_server
from services.notifier_svc.storage.registry import open_notifier_store
from services.queue_svc import server as queue_server
from tests.e2e.harness import Stack
from tests.servers import free_port

pytestmark = pytest.mark.e2e


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.arrived = asyncio.Event()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read())["body"])
        self.arrived.set()
        return web.Response(status=200)

    async def wait_for(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(set(map(str, self.bodies))) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"only {self.bodies} arrived"
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    yield hook
    await hook.stop()


async def subscribe(target: str, project: str, queue: str, url: str, **options: Any) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = notifier_pb2_grpc.SubscriptionsStub(channel)  # type: ignore[no-untyped-call]
        await stub.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
            project=project, queue=queue, subscriber=url, options=orjson.dumps(options)))


async def test_a_message_posted_over_http_reaches_a_webhook(
    stack: Stack, project: str, receiver: Receiver
) -> None:
    await receiver.start()
    await subscribe(stack.settings.target("notifier"), project, "hooked",
                    f"http://127.0.0.1:{receiver.port}/hook")
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers) as http:
        reply = await http.post("/v2/queues/hooked/messages",
                                json={"messages": [{"body": {"n": 1}, "ttl": 120}]})
        assert reply.status_code == 201
    await receiver.wait_for(1, within=10)
    assert receiver.bodies == [{"n": 1}]


def start_notifier(settings: Settings) -> subprocess.Popen[str]:
    env = {**os.environ, **settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "notifier"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY notifier_svc"), line
    return proc


def stop_notifier(proc: subprocess.Popen[str]) -> None:
    """Stop a notifier_svc of :func:`start_notifier` (if it still runs) and close its pipe."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)
    if proc.stdout is not None:
        proc.stdout.close()


async def pending(settings: Settings) -> int:
    store = await open_notifier_store(settings.store_uri("notifier"))
    try:
        return await store.count_deliveries()
    finally:
        await store.close()


async def test_sigkill_of_notifier_svc_loses_no_acknowledged_notification(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = make_settings(delivery_timeout=1.0)
    running = [await queue_server.start(settings), await message_server.start(settings)]
    notifier = start_notifier(settings)
    try:
        # Given a subscriber that is down, retried every second
        policy = {"retries_with_no_delay": 0, "minimum_delay_retries": 100,
                  "minimum_delay": 1, "maximum_delay": 11}
        await subscribe(settings.target("notifier"), "p", "q",
                        f"http://127.0.0.1:{receiver.port}/hook", _retry_policy=policy)
        # And five acknowledged posts, handed over to notifier_svc
        async with grpc.aio.insecure_channel(settings.target("message")) as channel:
            messages = messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]
            for i in range(5):
                await messages.PostMessages(messages_pb2.PostMessagesRequest(
                    project="p", queue="q", client_id=str(uuid.uuid4()),
                    messages=[messages_pb2.NewMessage(body=orjson.dumps(i))]))
        deadline = time.monotonic() + 10
        while await pending(settings) < 5:
            assert time.monotonic() < deadline, "the notifications were never stored"
            await asyncio.sleep(0.1)
        # When notifier_svc is killed, the receiver comes up and notifier_svc starts again
        notifier.send_signal(signal.SIGKILL)
        notifier.wait()
        assert notifier.stdout is not None
        notifier.stdout.close()
        await receiver.start()
        notifier = start_notifier(settings)
        # Then every notification arrives
        await receiver.wait_for(5, within=20)
        assert sorted(set(receiver.bodies)) == [0, 1, 2, 3, 4]
        deadline = time.monotonic() + 5
        while await pending(settings):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        stop_notifier(notifier)
        for service in reversed(running):
            await service.stop()


async def test_sigterm_keeps_undelivered_notifications_pending(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(delivery_timeout=1.0)
    notifier = start_notifier(settings)
    try:
        await subscribe(settings.target("notifier"), "p", "q",
                        f"http://127.0.0.1:{free_port()}/hook")
        async with grpc.aio.insecure_channel(settings.target("notifier")) as channel:
            internal = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]
            await internal.Notify(notifier_pb2.NotifyRequest(project="p", queue="q", messages=[
                common_pb2.Message(id="m", body=b"1", ttl=60)]))
        # When notifier_svc is stopped gracefully
        notifier.send_signal(signal.SIGTERM)
        assert notifier.wait(15) == 0
        # Then the undelivered notification is still pending in its store
        assert await pending(settings) == 1
    finally:
        if notifier.poll() is None:
            notifier.kill()
            notifier.wait()
        if notifier.stdout is not None:
            notifier.stdout.close()
