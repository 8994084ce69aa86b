"""A small client of the gateway's WebSocket API for the tests (the ``websockets`` library)."""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection

from tests.gateway.conftest import CLIENT_ID


def headers_for(project: str) -> dict[str, str]:
    return {"Client-ID": CLIENT_ID, "X-Project-ID": project}


def new_project() -> str:
    return "ws-" + uuid.uuid4().hex[:12]


def decode(frame: str | bytes) -> dict[str, Any]:
    doc = msgpack.unpackb(frame, raw=False) if isinstance(frame, bytes) else orjson.loads(frame)
    assert isinstance(doc, dict)
    return doc


class Ws:
    """Requests on one connection, each answered in the request's framing."""

    def __init__(self, socket: ClientConnection, project: str, binary: bool = False) -> None:
        self.socket = socket
        self.project = project
        self.binary = binary

    def encode(self, request: dict[str, Any]) -> str | bytes:
        if self.binary:
            packed: bytes = msgpack.packb(request, use_bin_type=True)
            return packed
        return orjson.dumps(request).decode()

    async def send_raw(self, data: str | bytes) -> dict[str, Any]:
        await self.socket.send(data)
        frame = await self.socket.recv()
        # The answer uses the request's framing.
        assert isinstance(frame, bytes) == isinstance(data, bytes)
        return decode(frame)

    async def ask(
        self, action: str, body: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        """The whole response of one request."""
        request: dict[str, Any] = {"action": action, "headers": headers_for(self.project)}
        request["headers"].update({k.replace("_", "-"): v for k, v in headers.items()})
        if body is not None:
            request["body"] = body
        response = await self.send_raw(self.encode(request))
        assert response["request"] == {
            "action": action,
            "body": {} if body is None else body,
            "headers": request["headers"],
            "api": "v2",
        }
        return response

    async def call(
        self, action: str, body: dict[str, Any] | None = None, **headers: str
    ) -> tuple[int, Any]:
        """(status, body) of one request."""
        response = await self.ask(action, body, **headers)
        return response["headers"]["status"], response["body"]
