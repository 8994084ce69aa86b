"""A service's own credentials refused by the service it calls, against a real Keystone
(``tests/keystone.py``): the caller it acts for is not to blame, and a revoked token is not
kept.

- A process whose cached service token is revoked gets a new one: a unary call is made once
  more with it, a stream fails and the next one carries it (``grpc_auth._ServiceToken``); a
  refusal renews at most every ``RENEW_ON_REFUSAL_EVERY`` seconds.
- The gateway answers a refusal of its own credentials 503, not the 401 or 403 that would
  tell a user with a good token that theirs is bad.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import pytest
from zaqar_grpc.v2 import notifier_pb2, notifier_pb2_grpc, queues_pb2, queues_pb2_grpc

from services.api_gateway.app import create_app
from services.api_gateway.errors import CREDENTIALS_REFUSED
from services.api_gateway.upstream import Upstreams
from services.common.config import ConfigurationError, Settings
from services.common.errors import decode_rpc_error
from services.common.grpc_auth import client_interceptors, server_interceptors
from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from tests.gateway.conftest import CLIENT_ID, lifespan, new_queue, running_services
from tests.keystone import Keystone
from tests.waiting import until

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def services(keystone_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    """The three services in keystone mode, asking Keystone about every token they are sent
    (no cache: a revocation counts at once)."""
    async with running_services(keystone_settings(token_cache_seconds=0)) as settings:
        yield settings


@asynccontextmanager
async def calling(
    settings: Settings, service: str
) -> AsyncIterator[tuple[KeystoneAuth, grpc.aio.Channel]]:
    """A process's Keystone client, and its channel to ``service``, which carries its token."""
    auth = KeystoneAuth(settings)
    channel = open_channel(settings.target(service), None, auth)
    try:
        yield auth, channel
    finally:
        await channel.close()
        await auth.aclose()


@asynccontextmanager
async def gateway_on(
    settings: Settings, **headers: str
) -> AsyncIterator[tuple[KeystoneAuth, httpx.AsyncClient]]:
    """An in-process gateway with ``settings``' Keystone user, its client of Keystone, and an
    HTTP client of it sending ``headers``."""
    auth = KeystoneAuth(settings)
    up = Upstreams(settings, auth=auth)
    app = create_app(settings, up, auth)
    try:
        async with lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway",
            headers={"Client-ID": CLIENT_ID, "Accept": "application/json", **headers},
        ) as http:
            yield auth, http
    finally:
        await up.close()
        await auth.aclose()


async def test_a_revoked_service_token_is_renewed_and_the_call_made_again(
    services: Settings, keystone: Keystone
) -> None:
    # Given a process whose calls carry its service token
    async with calling(services, "queue") as (auth, channel):
        stub = queues_pb2_grpc.QueuesStub(channel)  # type: ignore[no-untyped-call]
        queue = new_queue()
        await stub.CreateQueue(queues_pb2.CreateQueueRequest(project="p", queue=queue))
        first = await auth.service_token()
        # When Keystone revokes that token, which the process still has cached
        await keystone.arevoke(first)
        # Then its next call succeeds, made again with a new token
        listed = await stub.ListQueues(queues_pb2.ListQueuesRequest(project="p"))
        assert queue in [q.name for q in listed.queues]
        second = await auth.service_token()
        assert second != first
        # And a refusal right after the renewal does not make it ask Keystone again: the
        # call fails with the service's reason
        await keystone.arevoke(second)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListQueues(queues_pb2.ListQueuesRequest(project="p"))
        info = decode_rpc_error(caught.value)
        assert (info.code, info.reason) == (
            grpc.StatusCode.UNAUTHENTICATED, "SERVICE_TOKEN_REFUSED"
        )
        assert await auth.service_token() == second
        # But once the process takes a password from its file (Keystone revokes a user's
        # tokens when its password changes), the next refusal renews at once
        auth.take({"keystone_password": services.keystone_password})
        listed = await stub.ListQueues(queues_pb2.ListQueuesRequest(project="p"))
        assert queue in [q.name for q in listed.queues]
        third = await auth.service_token()
        assert third not in (first, second)
        # An empty password (a Secret emptied by mistake) is refused, and the one in use stays
        with pytest.raises(ConfigurationError, match="keystone_password is empty"):
            auth.take({"keystone_password": ""})
        assert await auth.service_token(renew=True) != third  # logged in with it



async def test_a_call_made_again_keeps_the_callers_deadline(
    keystone_settings: Callable[..., Settings], keystone: Keystone
) -> None:
    """The refused try and the renewal count against the call's timeout: the call made again
    carries what is left of it, not a fresh one."""
    settings = keystone_settings(token_cache_seconds=0)
    # Each try as it leaves the process (an interceptor inside the service token's): the
    # deadline its timeout sets, on the monotonic clock.
    tries: list[float] = []

    class Tries(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(
            self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails,
            request: Any,
        ) -> Any:
            assert details.timeout is not None
            tries.append(time.monotonic() + details.timeout)
            return await continuation(details, request)

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    # Given a server of ours with the token check, and a process calling it with its token
    server_auth = KeystoneAuth(settings)
    server = grpc.aio.server(interceptors=server_interceptors(server_auth, public=()))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    ),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    auth = KeystoneAuth(settings)
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=[*client_interceptors(auth), Tries()]
    )
    try:
        call = channel.unary_unary("/test.Echo/Echo")
        assert await call(b"1", timeout=60) == b"1"
        first = await auth.service_token()
        # When its token is revoked, and its next call is refused, then made again
        await keystone.arevoke(first)
        tries.clear()
        started = time.monotonic()
        assert await call(b"2", timeout=60) == b"2"
        took = time.monotonic() - started
        assert await auth.service_token() != first
        # Then both tries end by the caller's one deadline, 60 s after it made the call; the
        # second, given a fresh 60 s, would end later by the refusal and the renewal (two of
        # the call's three Keystone round trips).
        assert len(tries) == 2
        late = [deadline - (started + 60) for deadline in tries]
        assert all(x < min(0.005, took / 3) for x in late), (late, took)
    finally:
        await channel.close()
        await auth.aclose()
        await server.stop(None)
        await server_auth.aclose()


async def test_a_stream_refused_for_a_revoked_token_renews_it_for_the_next(
    services: Settings, keystone: Keystone
) -> None:
    # Given a process with a service token, and that token revoked
    async with calling(services, "notifier") as (auth, channel):
        stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]
        request = notifier_pb2.WatchRequest(project="p", queue=new_queue(), ttl=60)
        first = await auth.service_token()
        await keystone.arevoke(first)
        # When it opens a stream, the stream is refused
        refused = stub.Watch(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert decode_rpc_error(caught.value).reason == "SERVICE_TOKEN_REFUSED"
        # Then the process renews its token, and the next stream is taken
        await until(lambda: auth._service_token not in (None, first),
                    what="the service token renewed after the refusal")
        watch = stub.Watch(request)
        await watch.initial_metadata()
        assert not watch.done()
        watch.cancel()


async def test_the_gateway_answers_503_when_a_service_refuses_its_credentials(
    services: Settings, keystone: Keystone, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a gateway whose Keystone user may validate tokens (an admin) but has no service
    # role (a misconfiguration), in front of services that check it
    gateway = dataclasses.replace(services, keystone_username="admin-a", keystone_project="a")
    # When a user with a good token lists queues and posts a message
    user = await keystone.atoken("user-b")
    async with gateway_on(gateway, **{"X-Auth-Token": user}) as (_, http):
        listed = await http.get("/v2/queues")
        posted = await http.post(f"/v2/queues/{new_queue()}/messages",
                                 json={"messages": [{"body": 1}]})
    # Then each is a 503 that does not blame the user's token
    for resp in (listed, posted):
        assert resp.status_code == 503, resp.text
        assert resp.json() == {
            "title": "Service temporarily unavailable", "description": CREDENTIALS_REFUSED,
        }
    # and the gateway's log tells the operator why
    logged = [r.getMessage() for r in caplog.records
              if r.name == "services.api_gateway.errors" and r.levelno == logging.ERROR]
    assert len(logged) == 2, logged
    assert all("refused the gateway's credentials (NOT_A_SERVICE)" in line for line in logged), (
        logged)


async def test_the_gateway_goes_on_when_its_service_token_is_revoked(
    services: Settings, keystone: Keystone
) -> None:
    # Given a gateway that has served with its service token (and caches the user's token,
    # so that no validation of it renews the service token first)
    gateway = dataclasses.replace(services, token_cache_seconds=300.0)
    queue = new_queue()
    user = {"X-Auth-Token": await keystone.atoken("user-a")}
    async with gateway_on(gateway, **user) as (auth, http):
        post = {"messages": [{"body": "before"}]}
        assert (await http.post(f"/v2/queues/{queue}/messages", json=post)).status_code == 201
        first = await auth.service_token()
        # When Keystone revokes it
        await keystone.arevoke(first)
        # Then a unary call is made again with a new token, and succeeds
        listed = await http.get("/v2/queues")
        assert listed.status_code == 200, listed.text
        assert await auth.service_token() != first
        # and posts (on the stream to message_svc, which may have been refused once
        # meanwhile, and reopened with the new token) are taken again
        async def posts() -> bool:
            resp = await http.post(f"/v2/queues/{queue}/messages",
                                   json={"messages": [{"body": "after"}]})
            assert resp.status_code in (201, 503), resp.text
            return resp.status_code == 201

        await until(posts, what="a post taken after the revocation", every=0.2)
        bodies = [m["body"] for m in (await http.get(
            f"/v2/queues/{queue}/messages", params={"echo": "true", "limit": 20}
        )).json()["messages"]]
        assert bodies[0] == "before" and "after" in bodies
