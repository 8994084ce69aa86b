"""TLS and mutual TLS on real gRPC servers and channels, with certificates made for the test.

Services run in-process with the ``tls_*`` settings; callers use ``open_channel`` with the TLS
material of a client's settings (or a plaintext channel), so the code under test is the one the
services use between themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)

from services.api_gateway.upstream import Upstreams
from services.common.config import Settings
from services.common.grpc_server import Running, open_channel
from services.common.tls import load_tls
from services.message_svc.server import start as start_message_svc
from services.notifier_svc.server import start as start_notifier_svc
from services.queue_svc.server import start as start_queue_svc
from tests.certs import Leaf, Pki

Code = grpc.StatusCode
Call = Callable[[grpc.aio.Channel], Awaitable[Any]]


def tls_settings(pki: Pki, leaf: Leaf | None = None, ca: str = "", **more: Any) -> dict[str, Any]:
    """``tls_*`` overrides: ``leaf`` as certificate and key, ``ca`` (default: the test CA)."""
    values: dict[str, Any] = {"tls_ca_file": ca or str(pki.ca), **more}
    if leaf is not None:
        values.update(tls_cert_file=str(leaf.cert), tls_key_file=str(leaf.key))
    return values


def client_channel(target: str, pki: Pki, leaf: Leaf | None = None, ca: str = "",
                   **more: Any) -> grpc.aio.Channel:
    """A channel as a process with these ``tls_*`` settings opens it."""
    client = Settings.load(environ={}, overrides=tls_settings(pki, leaf, ca, **more))
    return open_channel(target, load_tls(client, serving=False))


async def health(channel: grpc.aio.Channel) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    return await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


async def ensure_queue(channel: grpc.aio.Channel) -> Any:
    stub = queues_pb2_grpc.QueuesStub(channel)  # type: ignore[no-untyped-call]
    return await stub.EnsureQueue(queues_pb2.GetQueueRequest(project="p", queue="q"), timeout=5)


async def refused(channel: grpc.aio.Channel, call: Call = health) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel)
    return caught.value.code()


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Starts services; stops them all after the test."""
    async with AsyncExitStack() as stack:

        async def run(starter: Callable[[Settings], Awaitable[Running]],
                      settings: Settings) -> Running:
            running = await starter(settings)
            stack.push_async_callback(running.stop)
            return running

        yield run


async def test_a_tls_service_serves_tls_clients_and_refuses_plaintext(
    make_settings: Callable[..., Settings], pki: Pki,
    start: Callable[..., Awaitable[Running]],
) -> None:
    # Given queue_svc serving TLS (no client certificates asked for)
    settings = make_settings(**tls_settings(pki, pki.service))
    running = await start(start_queue_svc, settings)
    target = f"127.0.0.1:{running.port}"
    # When a client that trusts the CA calls it, without a certificate of its own
    async with client_channel(target, pki) as channel:
        # Then it is served
        assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
        assert (await ensure_queue(channel)).exists
    # And a plaintext client is refused, as is a client that does not trust the CA
    assert await refused(grpc.aio.insecure_channel(target), ensure_queue) == Code.UNAVAILABLE
    assert await refused(client_channel(target, pki, ca=str(pki.other_ca))) == Code.UNAVAILABLE


@pytest.mark.parametrize("who", ["plaintext", "no certificate", "certificate of another CA"])
async def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    who: str, make_settings: Callable[..., Settings], pki: Pki,
    start: Callable[..., Awaitable[Running]],
) -> None:
    # Given message_svc requiring client certificates signed by the CA
    settings = make_settings(**tls_settings(pki, pki.service, tls_require_client_cert=True))
    running = await start(start_message_svc, settings)
    target = f"127.0.0.1:{running.port}"
    # When a client with a certificate the CA signed calls it, it is served
    async with client_channel(target, pki, pki.client) as channel:
        assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
    # But any other client is refused
    channel = {
        "plaintext": lambda: grpc.aio.insecure_channel(target),
        "no certificate": lambda: client_channel(target, pki),
        "certificate of another CA": lambda: client_channel(target, pki, pki.stranger),
    }[who]()
    assert await refused(channel) == Code.UNAVAILABLE


async def test_services_and_gateway_call_each_other_over_mutual_tls(
    make_settings: Callable[..., Settings], pki: Pki,
    start: Callable[..., Awaitable[Running]],
) -> None:
    # Given every service with the same certificate, requiring client certificates
    settings = make_settings(**tls_settings(pki, pki.service, tls_require_client_cert=True))
    for starter in (start_queue_svc, start_message_svc, start_notifier_svc):
        await start(starter, settings)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    ref = queues_pb2.GetQueueRequest(project="p", queue=queue)
    async with AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(
                client_channel(settings.target(name), pki, pki.client)
            )
            for name in ("queue", "message", "notifier")
        }
        messages = messages_pb2_grpc.MessagesStub(  # type: ignore[no-untyped-call]
            channels["message"]
        )
        queues = queues_pb2_grpc.QueuesStub(channels["queue"])  # type: ignore[no-untyped-call]
        notifier = notifier_pb2_grpc.NotifierInternalStub(  # type: ignore[no-untyped-call]
            channels["notifier"]
        )
        watch = notifier.Watch(notifier_pb2.WatchRequest(project="p", queue=queue, ttl=30))
        await watch.initial_metadata()
        # When a message is posted to a new queue (message_svc → queue_svc creates it, and the
        # message is handed to notifier_svc)
        await messages.PostMessages(messages_pb2.PostMessagesRequest(
            project="p", queue=queue, client_id=str(uuid.uuid4()),
            messages=[messages_pb2.NewMessage(body=b'"over tls"', ttl=60)],
        ), timeout=5)
        # Then the queue exists and the watcher gets the message
        assert (await queues.GetQueue(ref, timeout=5)).exists
        notification = await watch.read()
        assert notification.message.body == b'"over tls"'
        watch.cancel()
        # And deleting the queue reaches message_svc and notifier_svc (queue_svc answers
        # UNAVAILABLE when either cannot be reached)
        await queues.DeleteQueue(queues_pb2.DeleteQueueRequest(project="p", queue=queue),
                                 timeout=5)
        stats = await messages.GetStats(common_pb2.QueueRef(project="p", queue=queue),
                                        timeout=5)
        assert stats.total == 0
    # And the gateway's channels, with its own settings, find every service SERVING
    up = Upstreams(settings, load_tls(settings, serving=False))
    try:
        assert await up.serving() == {
            "zaqar.v2.Queues": True, "zaqar.v2.Messages": True, "zaqar.v2.Subscriptions": True,
        }
    finally:
        await up.close()


async def test_server_name_checks_a_certificate_that_does_not_name_the_address(
    make_settings: Callable[..., Settings], pki: Pki,
    start: Callable[..., Awaitable[Running]],
) -> None:
    # Given queue_svc serving a certificate for zaqar.internal only, called at 127.0.0.1
    settings = make_settings(**tls_settings(pki, pki.internal))
    running = await start(start_queue_svc, settings)
    target = f"127.0.0.1:{running.port}"
    # Then a client checking the address refuses the certificate
    assert await refused(client_channel(target, pki)) == Code.UNAVAILABLE
    # And a client told the certificate's name is served
    async with client_channel(target, pki, tls_server_name="zaqar.internal") as channel:
        assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
