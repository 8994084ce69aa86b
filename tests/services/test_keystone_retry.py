"""A Keystone that fails on its side once: the requests that change nothing are made again.

The Keystone is the test run's real one; between it and the client sits a proxy (a real HTTP
server on a real socket) that answers 500 to the first requests of one kind, as a Keystone
worker that crashed or found its database locked does, and passes everything else on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from services.common.config import Settings
from services.common.keystone import KeystoneAuth, KeystoneUnavailable
from tests.keystone import Keystone, keystone_overrides

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class FailingProxy:
    """Answers 500 to the first ``failures`` requests ``method`` ``/v3/auth/tokens``."""

    url: str
    method: str
    failures: int
    seen: list[int] = field(default_factory=list)  # the status of each such request


@asynccontextmanager
async def failing_proxy(keystone: Keystone, method: str, failures: int
                        ) -> AsyncIterator[FailingProxy]:
    upstream = keystone.url.removesuffix("/v3")
    session = aiohttp.ClientSession()
    proxy = FailingProxy("", method, failures)

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        matching = request.method == method and request.path == "/v3/auth/tokens"
        if matching and proxy.seen.count(500) < failures:
            proxy.seen.append(500)
            return web.Response(status=500, text="Internal Server Error")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with session.request(request.method, upstream + request.path_qs,
                                   headers=headers, data=body) as answer:
            payload = await answer.read()
            if matching:
                proxy.seen.append(answer.status)
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, body=payload, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}/v3"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()


@pytest.fixture
def client_of(make_settings: Callable[..., Settings], keystone: Keystone
              ) -> Callable[[str], KeystoneAuth]:
    def make(url: str) -> KeystoneAuth:
        return KeystoneAuth(make_settings(**{**keystone_overrides(keystone), "keystone_url": url}))

    return make


async def test_the_service_token_is_asked_again_after_a_500(
    keystone: Keystone, client_of: Callable[[str], KeystoneAuth],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with failing_proxy(keystone, "POST", failures=1) as proxy:
        client = client_of(proxy.url)
        try:
            with caplog.at_level(logging.WARNING, logger="services.common.keystone"):
                token = await client.service_token()
        finally:
            await client.aclose()
    assert token
    assert proxy.seen == [500, 201]
    assert "Keystone answered 500 to POST /auth/tokens; once more in 0.2 s" in caplog.text


async def test_a_validation_is_asked_again_after_a_500(
    keystone: Keystone, client_of: Callable[[str], KeystoneAuth],
) -> None:
    user_token = await asyncio.to_thread(keystone.token, "user-a")
    async with failing_proxy(keystone, "GET", failures=1) as proxy:
        client = client_of(proxy.url)
        try:
            identity = await client.validate(user_token)
        finally:
            await client.aclose()
    assert identity.project == keystone.users["user-a"].project_id
    assert proxy.seen == [500, 200]


async def test_a_keystone_that_fails_twice_is_unavailable(
    keystone: Keystone, client_of: Callable[[str], KeystoneAuth],
) -> None:
    async with failing_proxy(keystone, "POST", failures=2) as proxy:
        client = client_of(proxy.url)
        try:
            with pytest.raises(KeystoneUnavailable, match=r"service token refused \(500\)"):
                await client.service_token()
        finally:
            await client.aclose()
    assert proxy.seen == [500, 500]
