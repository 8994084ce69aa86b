"""Webhook receivers for notification tests: an aiohttp server on a free loopback port that
records every request it gets (``receiver`` / ``receiver_factory`` fixtures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.servers import free_port


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint: records every request; fails the first ``fail`` of them with 500;
    with ``hang`` never answers (until it stops)."""

    port: int
    hits: list[Hit] = field(default_factory=list)
    fail: int = 0
    hang: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(time.monotonic(), request.path, dict(request.headers),
                             await request.read()))
        self.arrived.set()
        if self.hang:  # until the receiver stops (its clean-up cancels this)
            await asyncio.Event().wait()
        if len(self.hits) <= self.fail:
            return web.Response(status=500)
        return web.Response(status=204)

    async def wait_for(self, count: int, within: float = 10) -> list[Hit]:
        deadline = time.monotonic() + within
        while len(self.hits) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.hits)} of {count} requests arrived: {self.hits}")
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass
        return self.hits


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    runners: list[web.AppRunner] = []

    async def start(port: int | None = None, **kwargs: Any) -> Receiver:
        receiver = Receiver(port or free_port(), **kwargs)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", receiver.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
        runners.append(runner)
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def receiver(receiver_factory: Callable[..., Awaitable[Receiver]]) -> Receiver:
    return await receiver_factory()
