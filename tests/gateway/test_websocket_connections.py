"""``ws_max_connections``: a gateway process holds at most that many WebSocket connections;
one more is refused at the handshake with a 503 that says why and when to come back, and room
made by a closed connection is used again. Nothing behind the gateway is needed for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server
from websockets.exceptions import InvalidStatus

from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common.config import Settings


@asynccontextmanager
async def socket_server(settings: Settings) -> AsyncIterator[tuple[Server, str]]:
    """The gateway's WebSocket server on ``settings`` (nothing behind it), and its URL."""
    up = Upstreams(settings)
    server = await ws_server.start(settings, up)
    try:
        yield server, f"ws://{settings.host}:{ws_server.bound_port(server)}"
    finally:
        server.close()
        await server.wait_closed()
        await up.close()


async def test_one_connection_beyond_the_limit_is_refused_until_one_closes(
    make_settings: Callable[..., Settings],
) -> None:
    async with socket_server(make_settings(ws_max_connections=2)) as (_, url):
        async with connect(url) as first, connect(url):
            # When a third client connects while two are open
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            # Then its handshake is answered 503, with when to come back and why
            response = refused.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == str(ws_server.FULL_RETRY_AFTER)
            assert response.headers["Content-Type"] == "application/json"
            assert orjson.loads(response.body) == {
                "title": "Service Unavailable",
                "description": "This gateway holds its 2 WebSocket connections "
                               "(ws_max_connections). Please connect again in 5 seconds, or "
                               "to another replica.",
            }
            # And once one of the two has closed, a new client is let in
            await first.close()
            async with connect(url) as third:
                await third.ping()
        # A path other than the root is still 404, limit or not
        with pytest.raises(InvalidStatus) as elsewhere:
            async with connect(url + "/v2"):
                pass
        assert elsewhere.value.response.status_code == 404


async def test_without_a_limit_many_connections_are_held(
    make_settings: Callable[..., Settings],
) -> None:
    async with socket_server(make_settings()) as (server, url):
        sockets = [await connect(url) for _ in range(20)]
        assert len(server.connections) == 20
        for socket in sockets:
            await socket.close()
