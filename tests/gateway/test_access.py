"""Deny by default, tested as a rule over the app's own router (``middleware.py``, ``paths.py``).

The table of routes is read from the gateway app with ``falcon.inspect``, so a route added to
the app is covered here without editing this file. Every route, with every method the router
knows for it, is sent over a real socket to the gateway on uvicorn (which decodes the path
as it would in production):

- in keystone mode and without a token, in its canonical form and in each spelling that could
  reach it another way (doubled and tripled slashes, ``/./``, ``/x/../``, ``%2F``, a
  percent-encoded letter, a trailing slash, an upper-case ``V2``), with forged ``X-Roles`` and
  ``X-Project-ID``: not one answer is 2xx;
- in no-auth mode with valid Zaqar headers and ``X-Roles: admin``: every spelling that is not
  canonical is refused with 400 before routing, and the others (trailing slash, ``V2``) find
  no route;
- in no-auth mode without ``Client-ID``: every route off the public allow-list is 400.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import falcon.inspect
import orjson
import pytest

from services.api_gateway.middleware import PUBLIC_ROUTES
from services.api_gateway.paths import non_canonical, plain_segment
from services.api_gateway.server import build_server
from services.api_gateway.upstream import Upstreams
from services.common.config import Settings
from services.common.keystone import keystone_for
from tests.gateway.conftest import CLIENT_ID, running_services

# A value for each URI template field (names a route may use).
FIELDS = {
    "queue_name": "fz-queue",
    "message_id": "5b2a8f1e9c3d4e5f6a7b8c9d",
    "claim_id": "5b2a8f1e9c3d4e5f6a7b8c9e",
    "subscription_id": "5b2a8f1e9c3d4e5f6a7b8c9f",
    "pool_name": "fzpool",
    "flavor_name": "fzflavor",
}
FORGED = {
    "Client-ID": CLIENT_ID,
    "X-Project-ID": "forged-project",
    "X-Roles": "admin",
    "Content-Type": "application/json",
}


@dataclass(frozen=True)
class Route:
    template: str
    methods: tuple[str, ...]

    @property
    def path(self) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: FIELDS[m.group(1)], self.template)


# Every method HTTP clients send: those a route does not answer reach it too (405 there).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def app_routes(settings: Settings) -> list[Route]:
    """Every route of the gateway app, read from its router, with the methods to try on it:
    every method in :data:`METHODS` (the route's own, Falcon's OPTIONS responder, and those
    it answers 405)."""
    from services.api_gateway.app import create_app

    routes = falcon.inspect.inspect_routes(create_app(settings))
    found = [Route(r.path, METHODS) for r in routes]
    # The fields above must cover the router's templates, or this test would skip routes.
    for route in found:
        assert all(name in FIELDS for name in re.findall(r"\{(\w+)\}", route.template)), route
    return found


def non_canonical_variants(path: str) -> Iterator[str]:
    """Spellings of ``path`` that must be refused before routing."""
    rest = path[1:]
    yield "/" + path
    yield "//" + path
    if path.startswith("/v2/"):
        yield "/v2//" + path[4:]
        yield "/v2/./" + path[4:]
        yield "/v2/x/../" + path[4:]
        yield "/v2%2F" + path[4:]
        yield "/%76" + path[2:]  # %76 = "v"
    yield "/%2F" + rest
    yield "/./" + rest
    yield "/x/../" + rest


def other_variants(path: str) -> Iterator[str]:
    """Canonical spellings that are not the route's own."""
    if not path.endswith("/"):
        yield path + "/"
    if path.startswith("/v2"):
        yield "/V2" + path[3:]


async def send(port: int, method: str, target: str, headers: dict[str, str]) -> int:
    """The status of one HTTP/1.1 request whose request target is sent byte for byte."""
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # to the end: the server closes
    finally:
        writer.close()
    return int(status_line.split()[1])


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[int]:
    """The gateway's HTTP server (the one ``serve gateway`` runs) on a free port."""
    auth = keystone_for(settings)
    up = Upstreams(settings, auth=auth)
    server = build_server(settings, up=up, auth=auth)
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the gateway did not start"
            await asyncio.sleep(0.01)
        yield settings.http_port
    finally:
        server.should_exit = True
        await serving
        await up.close()
        if auth is not None:
            await auth.aclose()


def test_the_route_table_is_not_empty(make_settings: Callable[..., Settings]) -> None:
    from services.api_gateway.app import create_app

    routes = app_routes(make_settings(pooling=True))
    assert {"/", "/v2/health", "/v2/pools/{pool_name}"} <= {r.template for r in routes}
    own = {m.method for r in falcon.inspect.inspect_routes(create_app(make_settings()))
           for m in r.methods if not m.internal}
    assert own <= set(METHODS)


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/v2/queues", True),
        ("/", True),
        ("/v2/", True),
        ("/v2/queues/a.b", True),
        ("/v2/queues/.hidden", True),
        ("//v2/health", False),
        ("/v2//queues", False),
        ("/v2/./queues", False),
        ("/v2/x/../queues", False),
        ("/v2/queues/..", False),
        ("/v2/queues/.", False),
        ("v2/queues", False),
    ],
)
def test_non_canonical_paths(path: str, canonical: bool) -> None:
    assert (non_canonical(path) is None) is canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"/%2Fv2/health", False),
        (b"/v2%2fqueues", False),
        (b"/v2/queue%73", False),
        (b"/v2/queues/a%2Eb", False),
        (b"/v2/queues/a%7Eb", False),
        (b"/v2/queues/a%5Cb", False),
        (b"/v2/queues/abc%0A", True),  # left to the queue name rule: 400 there
        (b"/v2/queues/a%20b", True),
        (b"/v2/queues?x=%2F%61", True),  # the query string is not the path
    ],
)
def test_percent_encoding(raw: bytes, canonical: bool) -> None:
    from urllib.parse import unquote

    path = unquote(raw.split(b"?")[0].decode())
    assert (non_canonical(path, raw) is None) is canonical


def test_plain_segments() -> None:
    assert plain_segment("orders")
    for value in ("", ".", "..", "a/b", "/"):
        assert not plain_segment(value)


async def test_keystone_mode_without_a_token_nothing_is_2xx(
    keystone_settings: Callable[..., Settings],
) -> None:
    settings = keystone_settings(pooling=True)
    routes = app_routes(settings)
    failures: list[str] = []
    sent = 0
    async with running_services(settings), served(settings) as port:
        for route in routes:
            targets = [*non_canonical_variants(route.path), *other_variants(route.path)]
            if route.template not in PUBLIC_ROUTES:
                targets.append(route.path)
            for method in route.methods:
                for target in targets:
                    status = await send(port, method, target, FORGED)
                    sent += 1
                    if 200 <= status < 300:
                        failures.append(f"{method} {target} -> {status}")
                    # Without a token, a private route's own path is Keystone's 401.
                    if target == route.path:
                        assert status == 401, f"{method} {target} -> {status}"
    assert not failures, failures
    assert sent > 500


async def test_no_auth_mode_refuses_every_other_spelling(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(pooling=True)
    routes = app_routes(settings)
    async with running_services(settings), served(settings) as port:
        for route in routes:
            for method in route.methods:
                for target in non_canonical_variants(route.path):
                    status = await send(port, method, target, FORGED)
                    assert status == 400, f"{method} {target} -> {status}"
                for target in other_variants(route.path):
                    status = await send(port, method, target, FORGED)
                    assert status in (400, 404, 405), f"{method} {target} -> {status}"


async def test_no_auth_mode_every_private_route_needs_the_headers(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(pooling=True)
    routes = app_routes(settings)
    headers = {"X-Project-ID": "p", "X-Roles": "admin", "Content-Type": "application/json"}
    async with running_services(settings), served(settings) as port:
        for route in routes:
            for method in route.methods:
                status = await send(port, method, route.path, headers)
                if route.template in PUBLIC_ROUTES:
                    assert status in (200, 300, 405), f"{method} {route.path} -> {status}"
                else:
                    assert status == 400, f"{method} {route.path} -> {status}"


async def test_the_refusal_names_the_problem(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(pooling=True)
    async with running_services(settings), served(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET //v2/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"x-openstack-request-id: req-" in head
    assert orjson.loads(body) == {
        "title": "Invalid API request",
        "description": "The request path is not in canonical form: it has repeated slashes.",
    }
