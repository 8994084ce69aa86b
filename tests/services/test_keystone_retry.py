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
from tests.waiting import until

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class FailingProxy:
    """Answers 500 to the first ``failures`` requests ``method`` ``/v3/auth/tokens``; while
    ``hold`` is set, holds each such request (counted in ``held``) until ``released``."""

    url: str
    method: str
    failures: int
    seen: list[int] = field(default_factory=list)  # the status of each such request
    hold: bool = False
    held: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def failing_proxy(keystone: Keystone, method: str, failures: int
                        ) -> AsyncIterator[FailingProxy]:
    upstream = keystone.url.removesuffix("/v3")
    session = aiohttp.ClientSession()
    proxy = FailingProxy("", method, failures)

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        matching = request.method == method and request.path == "/v3/auth/tokens"
        if matching and proxy.hold:
            proxy.held += 1
            await proxy.released.wait()
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


async def test_a_keystone_that_does_not_answer_fails_other_validations_at_once(
    keystone: Keystone, make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = [await asyncio.to_thread(keystone.token, who) for who in ("user-a", "user-b")]
    async with failing_proxy(keystone, "GET", failures=0) as proxy:
        client = KeystoneAuth(make_settings(**{
            **keystone_overrides(keystone), "keystone_url": proxy.url, "keystone_timeout": 1.0,
        }))
        try:
            await client.service_token()  # while Keystone answers
            # Given a Keystone that stops answering validations
            proxy.hold = True
            caplog.set_level(logging.WARNING, logger="services.common.keystone")
            # When a validation waits out the timeout
            with pytest.raises(KeystoneUnavailable):
                await client.validate(tokens[0])
            assert "until it does, one request at a time waits for it" in caplog.text
            # Then the next one waits for Keystone in its turn
            waiting = asyncio.ensure_future(client.validate(tokens[0]))
            await until(lambda: proxy.held == 2, what="the second validation reaches Keystone")
            # And one made meanwhile fails at once, before it ends, as it will
            with pytest.raises(KeystoneUnavailable, match="did not answer within 1 s"):
                await client.validate(tokens[1])
            assert not waiting.done() and proxy.held == 2
            with pytest.raises(KeystoneUnavailable):
                await waiting
            # And once Keystone answers again, the next validation finds it
            proxy.hold = False
            proxy.released.set()
            identity = await client.validate(tokens[1])
            assert identity.project == keystone.users["user-b"].project_id
            assert "answers again" in caplog.text
        finally:
            await client.aclose()
