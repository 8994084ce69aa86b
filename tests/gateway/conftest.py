"""Fixtures of the gateway tests.

Every test that takes ``client`` (or ``down_client``) runs twice or more:

- ``asgi``: the gateway app driven in-process, with real queue_svc and message_svc started
  in-process on free ports (``down_client``: nothing behind the gateway);
- ``up-<store>``: real HTTP over a socket to ``zaqar-grpc up`` — every service its own OS
  process — on the named store, shared by the session (tests use their own queue names, and
  their own projects where they list; pools are global, so tests name theirs with a prefix of
  their own and delete them). ``down_client`` runs on SQLite only: the gateway refuses its
  requests before it calls any service.

Both run with pooling (the pool catalog) enabled.

``ws_url`` does the same for the WebSocket API: the gateway's WebSocket server started
in-process in front of in-process services, or the ``ws://`` address of a ``zaqar-grpc up``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.api_gateway.app import create_app
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common.config import Settings
from tests.stacks import UP_STORES, up_stack

CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PROJECT = "demo-project"
HEADERS = {
    "Client-ID": CLIENT_ID,
    "X-Project-ID": PROJECT,
    "Content-Type": "application/json",
    "Accept": "application/json",
}
PATCH_TYPE = "application/openstack-messaging-v2.0-json-patch"

GatewayFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run the ASGI lifespan protocol around a block, as uvicorn does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Builds in-process clients of a gateway app made from the given settings.

    The app's lifespan (channel opening and closing) runs around each client's life.
    """
    stack: list[Any] = []

    async def make(settings: Settings, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        app = create_app(settings)
        span = lifespan(app)
        await span.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://gateway",
            headers=HEADERS if headers is None else headers,
        )
        stack.append((client, span))
        return client

    yield make
    for client, span in reversed(stack):
        await client.aclose()
        await span.__aexit__(None, None, None)


MODES = ["asgi", *(f"up-{store}" for store in UP_STORES)]


async def live_client(
    request: pytest.FixtureRequest, mode: str
) -> AsyncIterator[httpx.AsyncClient]:
    stack = up_stack(request, mode.removeprefix("up-"))
    async with httpx.AsyncClient(base_url=stack.url, headers=HEADERS) as http:
        yield http


@pytest.fixture
async def dead_client(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> httpx.AsyncClient:
    """A gateway whose upstream ports have nothing listening (its calls' deadline is far
    beyond ``FAIL_FAST``, so a call that waited for it instead of failing at once shows)."""
    return await gateway_factory(make_settings(rpc_timeout=60.0))


# The gateway refuses these requests before it calls any service, so the stores behind it do
# not matter: ``up`` on one store stands for all.
DOWN_MODES = ["asgi", "up-sqlite"]


@pytest.fixture(params=DOWN_MODES)
async def down_client(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    gateway_factory: GatewayFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    """For requests the gateway must refuse before any call: in-process with nothing behind
    it, and over real HTTP against ``zaqar-grpc up`` (on SQLite)."""
    if request.param == "asgi":
        yield await gateway_factory(make_settings(rpc_timeout=2.0, pooling=True))
    else:
        async for http in live_client(request, request.param):
            yield http


NOTIFIER_BUILT = importlib.util.find_spec("services.notifier_svc.server") is not None


@asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Settings]:
    """queue_svc, message_svc and (once it is built) notifier_svc started in-process on the
    settings' ports."""
    from services.message_svc.server import start as start_message_svc
    from services.queue_svc.server import start as start_queue_svc

    # queue_svc first, as `up` starts them: notifier_svc's sweep calls queue_svc at once, and a
    # connection it found refused would leave the address's subchannel (which gRPC shares
    # between the channels of one process, the gateway's included) backing off, so the test's
    # first request could fail with UNAVAILABLE although queue_svc was up by then.
    running: list[Any] = []
    try:
        running.append(await start_queue_svc(settings))
        running.append(await start_message_svc(settings))
        if NOTIFIER_BUILT:
            from services.notifier_svc.server import start as start_notifier_svc

            running.append(await start_notifier_svc(settings))
        yield settings
    finally:
        for service in reversed(running):
            await service.stop()


@pytest.fixture
async def services(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    async with running_services(make_settings()) as settings:
        yield settings


@pytest.fixture(params=MODES)
async def client(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway in front of real queue_svc and message_svc (see the module docstring)."""
    if request.param == "asgi":
        make_settings = request.getfixturevalue("make_settings")
        async with running_services(make_settings(pooling=True)) as settings:
            yield await gateway_factory(settings)
    else:
        async for http in live_client(request, request.param):
            yield http


@pytest.fixture(params=MODES)
async def ws_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The gateway's WebSocket API in front of real services (see the module docstring)."""
    if request.param != "asgi":
        stack = up_stack(request, request.param.removeprefix("up-"))
        yield f"ws://{stack.settings.host}:{stack.settings.ws_port}"
        return
    make_settings = request.getfixturevalue("make_settings")
    async with running_services(make_settings(pooling=True)) as settings:
        up = Upstreams(settings)
        server = await ws_server.start(settings, up)
        try:
            yield f"ws://{settings.host}:{ws_server.bound_port(server)}"
        finally:
            server.close()
            await server.wait_closed()
            await up.close()


def new_queue() -> str:
    return "q-" + uuid.uuid4().hex[:12]


def error_body(title: str, description: str | None = None) -> dict[str, str]:
    body = {"title": title}
    if description is not None:
        body["description"] = description
    return body


async def request_without(
    client: httpx.AsyncClient, method: str, path: str, *names: str, **kwargs: Any
) -> httpx.Response:
    """Send a request with some of the client's default headers removed."""
    request = client.build_request(method, path, **kwargs)
    for name in names:
        del request.headers[name]
    return await client.send(request)
