"""Long polling over WebSocket: a request that waits is answered on its own, so it holds up
neither the connection's later requests nor its pushes; closing the socket cancels it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

from services.api_gateway.websocket import server as ws_server
from tests.gateway._ws import Ws, decode, headers_for, new_project

pytestmark = pytest.mark.parametrize("ws_url", ["asgi"], indirect=True)


async def send(ws: Ws, action: str, body: dict[str, Any]) -> None:
    await ws.socket.send(ws.encode(
        {"action": action, "headers": headers_for(ws.project), "body": body}
    ))


async def answers(ws: Ws, count: int) -> dict[str, dict[str, Any]]:
    """The next ``count`` answers, by the action of the request each answers."""
    got: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(got) < count:
            frame = decode(await ws.socket.recv())
            got[frame["request"]["action"]] = frame
    return got


async def test_a_waiting_claim_does_not_hold_up_the_socket(ws_url: str) -> None:
    async with connect(ws_url) as socket:
        ws = Ws(socket, new_project())
        assert (await ws.call("queue_create", {"queue_name": "lp"}))[0] == 201

        # A claim that waits is pending ...
        await send(ws, "claim_create", {"queue_name": "lp", "wait": 5, "limit": 1})
        # ... and a later request on the same socket is answered first, at once
        await send(ws, "queue_list", {})
        listed = await answers(ws, 1)
        assert listed["queue_list"]["headers"]["status"] == 200

        # A post (on the same socket) makes the waiting claim answer 201 with the message;
        # the post's own answer comes first
        await send(ws, "message_post", {"queue_name": "lp", "messages": [{"body": "hi"}]})
        first = decode(await asyncio.wait_for(socket.recv(), 10))
        assert first["request"]["action"] == "message_post"
        assert first["headers"]["status"] == 201
        claimed = (await answers(ws, 1))["claim_create"]
        assert claimed["headers"]["status"] == 201
        assert [m["body"] for m in claimed["body"]["messages"]] == ["hi"]
        assert claimed["request"]["body"]["wait"] == 5


async def test_closing_the_socket_cancels_its_waits(ws_url: str) -> None:
    project = new_project()
    async with connect(ws_url) as socket:
        ws = Ws(socket, project)
        assert (await ws.call("queue_create", {"queue_name": "lp"}))[0] == 201
        await send(ws, "claim_create", {"queue_name": "lp", "wait": 5, "limit": 1})
        # The wait is pending in the services once a later request is answered
        assert (await ws.call("queue_list", {}))[0] == 200

    async with connect(ws_url) as socket:
        ws = Ws(socket, project)
        assert (await ws.call("message_post", {
            "queue_name": "lp", "messages": [{"body": "kept"}],
        }))[0] == 201
        # The closed socket's wait claimed nothing: another consumer gets the message
        status, body = await ws.call("claim_create", {"queue_name": "lp", "wait": 5})
        assert status == 201
        assert [m["body"] for m in body["messages"]] == ["kept"]


@pytest.mark.parametrize("action", [["claim_create"], {"claim_create": 1}, 7, None])
async def test_an_action_of_another_type_is_refused_not_a_dropped_socket(
    ws_url: str, action: Any
) -> None:
    async with connect(ws_url) as socket:
        ws = Ws(socket, new_project())
        # A frame whose action is not a string, with a body that asks to wait
        await socket.send(ws.encode({"action": action, "headers": headers_for(ws.project),
                                     "body": {"queue_name": "lp", "wait": 5}}))
        answer = decode(await asyncio.wait_for(socket.recv(), 10))
        # Then it is refused with 400, and the socket goes on serving
        assert answer["headers"]["status"] == 400, answer
        assert (await ws.call("queue_list", {}))[0] == 200


async def test_a_connection_holds_a_bounded_number_of_waiting_requests(ws_url: str) -> None:
    """Beyond MAX_WAITING waiting requests, a connection's next frames are read only as one
    of them is answered: its gateway holds no more of its requests than that."""
    async with connect(ws_url) as socket, connect(ws_url) as other_socket:
        ws = Ws(socket, new_project())
        other = Ws(other_socket, ws.project)
        assert (await ws.call("queue_create", {"queue_name": "lp"}))[0] == 201
        # Every place taken by a claim that waits on the empty queue, then one more, then a
        # request that does not wait
        for _ in range(ws_server.MAX_WAITING + 1):
            await send(ws, "claim_create", {"queue_name": "lp", "wait": 20, "limit": 1})
        await send(ws, "queue_list", {})
        # One message, posted on another connection, answers one of the waiting claims; only
        # then is a place free, the extra claim read, and the listing read and answered
        assert (await other.call("message_post", {
            "queue_name": "lp", "messages": [{"body": "one"}]
        }))[0] == 201
        async with asyncio.timeout(30):
            first = decode(await socket.recv())
            second = decode(await socket.recv())
        assert (first["request"]["action"], first["headers"]["status"]) == ("claim_create", 201)
        assert [m["body"] for m in first["body"]["messages"]] == ["one"]
        assert (second["request"]["action"], second["headers"]["status"]) == ("queue_list", 200)
