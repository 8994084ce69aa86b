"""``zaqar-grpc up`` with mutual TLS between its processes, driven over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zaqar_grpc.v2 import common_pb2, messages_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import open_channel
from services.common.tls import load_tls
from tests.certs import Pki
from tests.e2e.harness import Stack, start_stack
from tests.services.test_tls_rotation import a_new_client_answers, copies, put, settings_of
from tests.waiting import until

pytestmark = pytest.mark.e2e


def test_up_with_mutual_tls_serves_http_and_refuses_plaintext_grpc(
    make_settings: Callable[..., Settings], pki: Pki,
) -> None:
    # Given zaqar-grpc up with every gRPC server requiring client certificates
    settings = make_settings(
        tls_cert_file=str(pki.service.cert), tls_key_file=str(pki.service.key),
        tls_ca_file=str(pki.ca), tls_require_client_cert=True,
    )
    stack = start_stack(settings)
    try:
        headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "tls"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=10) as http:
            # When a message is posted and claimed over HTTP (gateway → message_svc →
            # queue_svc, and the hand-off to notifier_svc, all over TLS)
            posted = http.post("/v2/queues/secure/messages",
                               json={"messages": [{"body": {"over": "tls"}, "ttl": 300}]})
            claimed = http.post("/v2/queues/secure/claims", json={"ttl": 60, "grace": 60})
            subscribed = http.post("/v2/queues/secure/subscriptions",
                                   json={"subscriber": "http://127.0.0.1:9/hook", "ttl": 300})
            ping = http.get("/v2/ping")
        # Then each answers as without TLS
        assert posted.status_code == 201, posted.text
        assert claimed.status_code == 201, claimed.text
        assert [m["body"] for m in claimed.json()["messages"]] == [{"over": "tls"}]
        assert subscribed.status_code == 201, subscribed.text
        assert ping.status_code == 204, ping.text  # every service SERVING to the gateway
        # And message_svc's port refuses a plaintext gRPC client
        code, stats = _call_message_svc(settings)
        assert code == grpc.StatusCode.UNAVAILABLE
        # But serves a client with a certificate the CA signed
        assert (stats.total, stats.claimed) == (1, 1)
    finally:
        assert stack.stop() == 0, "".join(stack.output)


def _call_message_svc(settings: Settings) -> tuple[grpc.StatusCode, common_pb2.QueueStats]:
    async def calls() -> tuple[grpc.StatusCode, common_pb2.QueueStats]:
        target = settings.target("message")
        async with grpc.aio.insecure_channel(target) as plain:
            stub = health_pb2_grpc.HealthStub(plain)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        # The services' own certificate serves as the client certificate here.
        async with open_channel(target, load_tls(settings, serving=False)) as channel:
            messages = messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]
            stats = await messages.GetStats(
                common_pb2.QueueRef(project="tls", queue="secure"), timeout=5
            )
        return caught.value.code(), stats

    return asyncio.run(calls())


def test_up_takes_rotated_certificates_without_a_restart(
    make_settings: Callable[..., Settings], pki: Pki, tmp_path: Path,
) -> None:
    # Given zaqar-grpc up with mutual TLS on files that are looked at every 0.2 s
    files = copies(tmp_path / "tls", pki.service, pki.ca)
    settings = make_settings(**settings_of(files, tls_require_client_cert=True,
                                           tls_reload_interval=0.2))
    stack = start_stack(settings)
    try:
        asyncio.run(_rotate_under_traffic(stack, settings, files, pki))
        # And nothing restarted: the processes that started are the ones that answer
        assert sum("(pid " in line for line in stack.output) == 4
    finally:
        assert stack.stop() == 0, "".join(stack.output)


async def _rotate_under_traffic(
    stack: Stack, settings: Settings, files: dict[str, Path], pki: Pki
) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "tls"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=10) as http:
        async def post() -> int:
            r = await http.post("/v2/queues/rotated/messages", json={"messages": [{"body": 1}]})
            return r.status_code

        assert await post() == 201
        # When every file is replaced by material of another CA
        put(files, pki.stranger, pki.other_ca)
        # Then each service serves new connections with it: a client of the new CA is served,
        # one of the old CA refused
        for service in ("queue", "message", "notifier"):
            target = settings.target(service)
            await until(lambda t=target: a_new_client_answers(t, pki, pki.stranger, pki.other_ca),
                        what=f"{service} serving the new certificate")
            assert not await a_new_client_answers(target, pki, pki.client, pki.ca)

        # And the gateway's calls go on channels of the new files (the services refuse the old
        # certificate on a new connection), answering as before
        async def gateway_reloaded() -> bool:
            assert await post() == 201
            return any(line.startswith("[gateway]") and "TLS files reloaded" in line
                       for line in stack.output)

        await until(gateway_reloaded, what="the gateway's channels on the new files")
        for _ in range(20):
            assert await post() == 201
        claimed = await http.post("/v2/queues/rotated/claims?limit=20",
                                  json={"ttl": 60, "grace": 60})
        assert claimed.status_code == 201, claimed.text
