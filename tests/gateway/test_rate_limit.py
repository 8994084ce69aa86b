"""Requests per project (``project_rate_limit``, an extension) over HTTP and WebSocket, in
front of real services: one budget per project for both transports, 429 with Retry-After, and
a refused request reaches no service.

The rate is one request per 1000 s, so that nothing refills while a test runs (the refill
itself is tested on an injected clock in ``tests/unit/test_rate_limit.py``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from services.api_gateway.app import create_app
from services.api_gateway.rate_limit import from_settings
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.common.config import Settings
from tests.gateway.conftest import CLIENT_ID, GatewayFactory, lifespan, running_services

RETRY_AFTER = "1000"
TOO_MANY = {
    "title": "Too Many Requests",
    "description": "This project makes requests faster than the 0.001 per second allowed. "
                   f"Please retry in {RETRY_AFTER} s.",
}


def project() -> str:
    return "rl-" + uuid.uuid4().hex[:12]


async def ws_ask(socket: Any, action: str, body: dict[str, Any], project_id: str) -> Any:
    await socket.send(orjson.dumps({
        "action": action, "headers": {"Client-ID": CLIENT_ID, "X-Project-ID": project_id},
        "body": body,
    }).decode())
    return orjson.loads(await socket.recv())


async def test_one_budget_per_project_over_both_transports(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    settings = make_settings(project_rate_limit=0.001, project_rate_burst=3)
    async with running_services(settings) as s:
        # One limit for the app and the socket server, as the gateway process has.
        limit = from_settings(s)
        assert limit is not None
        up = Upstreams(s)
        app = create_app(s, up, limit=limit)
        sockets = await ws_server.start(s, up, limit=limit)
        unlimited = await gateway_factory(dataclasses.replace(
            s, project_rate_limit=0.0, project_rate_burst=0
        ))
        try:
            async with lifespan(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                headers={"Client-ID": CLIENT_ID},
            ) as http, connect(f"ws://{s.host}:{ws_server.bound_port(sockets)}") as socket:
                a, b, c = project(), project(), project()

                def post(project_id: str, body: object) -> Any:
                    return http.post("/v2/queues/q/messages", json={"messages": [{"body": body}]},
                                     headers={"X-Project-ID": project_id})

                # A's three: two over HTTP, one over the socket.
                assert (await post(a, 1)).status_code == 201
                assert (await post(a, 2)).status_code == 201
                answer = await ws_ask(socket, "message_list", {"queue_name": "q", "echo": True}, a)
                assert answer["headers"]["status"] == 200, answer
                # Then none, on either transport.
                resp = await post(a, 3)
                assert resp.status_code == 429
                assert resp.headers["Retry-After"] == RETRY_AFTER
                assert resp.json() == TOO_MANY
                answer = await ws_ask(socket, "message_post",
                                      {"queue_name": "q", "messages": [{"body": 4}]}, a)
                assert answer["headers"]["status"] == 429
                assert answer["body"] == {"error": TOO_MANY["description"],
                                          "title": TOO_MANY["title"]}
                # B has its own budget.
                assert (await post(b, 1)).status_code == 201
                # A request refused before its project is known takes nothing of it.
                for _ in range(5):
                    resp = await http.post(
                        "/v2/queues/q/messages", json={"messages": [{"body": 0}]},
                        headers={"X-Project-ID": c, "Client-ID": "not-a-uuid"},
                    )
                    assert resp.status_code == 400
                for n in range(3):
                    assert (await post(c, n)).status_code == 201
                assert (await post(c, 3)).status_code == 429
                # Probes have no project and are never limited.
                for _ in range(5):
                    assert (await http.get("/healthz")).status_code == 200
            # The refused posts reached no service: A's queue holds 1 and 2 only.
            resp = await unlimited.get("/v2/queues/q/messages", params={"echo": "true"},
                                       headers={"X-Project-ID": a})
            assert [m["body"] for m in resp.json()["messages"]] == [1, 2]
        finally:
            sockets.close()
            await sockets.wait_closed()
            await up.close()


async def test_off_by_default(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    async with running_services(make_settings()) as s:
        assert from_settings(s) is None
        http = await gateway_factory(s)
        a = project()
        for n in range(30):
            resp = await http.get("/v2/queues", headers={"X-Project-ID": a})
            assert resp.status_code == 200, (n, resp.text)
