"""python-zaqarclient's own WebSocket transport, unmodified, drives queues, messages and claims.

The transport is chosen by the ``ws://`` scheme of the URL (entry point ``ws.v2``): ``Client(
url="ws://…")`` gets it through the same ``transport.get_transport_for`` call used here. It
opens one connection, authenticates on it and stamps every request with its Client-ID and the
project. It sends no query parameters (it logs a warning and drops them), so the Client's
high-level calls, which put the queue name there, cannot work over it (and each opens a
connection it never closes); every field travels in the request body instead, as the
transport's own documentation shows (``Request(endpoint, "queue_create", content=...)``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from zaqarclient import transport
from zaqarclient.queues.v2 import core
from zaqarclient.transport import errors as zaqar_errors
from zaqarclient.transport import request as zaqar_request
from zaqarclient.transport import ws as zaqar_ws

from tests.gateway.conftest import new_queue


def options(project: str) -> dict[str, Any]:
    # The WebSocket transport reads os_auth_token (sent with "authenticate") even without auth.
    auth = {"client_uuid": str(uuid.uuid4()), "os_project_id": project, "os_auth_token": ""}
    return {"auth_opts": {"backend": "noauth", "options": auth}}


def drive(url: str, project: str) -> None:
    conf = options(project)
    trans = transport.get_transport_for(url, version=2, options=conf)
    assert isinstance(trans, zaqar_ws.WebsocketTransport)

    def send(action: str, **body: Any) -> Any:
        resp = trans.send(zaqar_request.Request(url, action, content=json.dumps(body)))
        return resp.status_code, resp.deserialized_content

    try:
        queue = new_queue()
        # A queue is created and listed (core.queue_list sends no parameters at all)
        assert send("queue_create", queue_name=queue) == (201, f"Queue {queue} created.")
        prepared = zaqar_request.prepare_request(conf["auth_opts"], endpoint=url, api=2)
        listed = core.queue_list(trans, prepared)
        assert [q["name"] for q in listed["queues"]] == [queue]
        # Messages are posted and listed back
        messages = [{"body": {"n": n}, "ttl": 300} for n in range(3)]
        status, posted = send("message_post", queue_name=queue, messages=messages)
        assert status == 201 and len(posted["message_ids"]) == 3
        _, page = send("message_list", queue_name=queue, echo=True)
        assert [m["body"] for m in page["messages"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        # A claim takes the first; deleted with its claim, it is gone
        status, claimed = send("claim_create", queue_name=queue, limit=1, ttl=60, grace=60)
        assert status == 201
        first = claimed["messages"][0]["id"]
        assert first == posted["message_ids"][0]
        deleted = send(
            "message_delete", queue_name=queue, message_id=first, claim_id=claimed["claim_id"]
        )
        assert deleted == (204, {})
        # The transport turns the 404 into its own error, with the server's text
        with pytest.raises(zaqar_errors.ResourceNotFound) as missing:
            send("message_get", queue_name=queue, message_id=first)
        assert "does not exist" in str(missing.value)
        # A malformed request is MalformedRequest, naming the missing key
        with pytest.raises(zaqar_errors.MalformedRequest) as malformed:
            send("message_post", queue_name=queue)
        assert '"messages"' in str(malformed.value)
        assert send("queue_get_stats", queue_name=queue)[1]["messages"]["total"] == 2
        assert send("queue_delete", queue_name=queue) == (204, f"Queue {queue} removed.")
    finally:
        trans.cleanup()


async def test_zaqarclient_websocket_transport(ws_url: str) -> None:
    # The client is synchronous: it runs in a thread while the gateway serves in this loop.
    await asyncio.to_thread(drive, ws_url, "zc-" + uuid.uuid4().hex[:12])


def subscribe_post_and_receive(url: str, project: str) -> list[Any]:
    """A socket subscribes itself with the transport; messages posted by another connection
    arrive on it as notification frames, read with the transport's own ``recv``."""
    listener = transport.get_transport_for(url, version=2, options=options(project))
    poster = transport.get_transport_for(url, version=2, options=options(project))
    assert isinstance(listener, zaqar_ws.WebsocketTransport)

    def send(trans: Any, action: str, **body: Any) -> Any:
        resp = trans.send(zaqar_request.Request(url, action, content=json.dumps(body)))
        return resp.status_code, resp.deserialized_content

    try:
        queue = new_queue()
        assert send(listener, "subscription_create", queue_name=queue, ttl=60)[0] == 201
        listener._ws.settimeout(10)  # a missing push fails the test instead of hanging it
        status, _ = send(poster, "message_post", queue_name=queue,
                         messages=[{"body": {"n": n}, "ttl": 120} for n in range(2)])
        assert status == 201
        return [listener.recv(), listener.recv()]
    finally:
        listener.cleanup()
        poster.cleanup()


async def test_zaqarclient_websocket_transport_gets_pushes(ws_url: str) -> None:
    frames = await asyncio.to_thread(subscribe_post_and_receive, ws_url,
                                     "zc-" + uuid.uuid4().hex[:12])
    assert [f["body"] for f in frames] == [{"n": 0}, {"n": 1}]
    assert all(f["Message_Type"] == "Notification" for f in frames)
    assert all(f["ttl"] == 120 for f in frames)
