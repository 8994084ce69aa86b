"""Family "ws": every WebSocket action with a valid body (JSON text or MessagePack binary
frames), then mutated body fields, headers and envelopes, and garbage frames.

The actions come from the gateway's own table (``websocket/actions.py``: ``ACTIONS``), so an
action added there is fuzzed too: one without an entry in :data:`VALID_BODIES` gets a body of
its required keys filled by name from the fixture.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.fuzz import routes, values
from bench.fuzz.fixture import Fixture
from bench.fuzz.http_family import ODD_DATES

# Close codes a server may answer a frame it cannot take with: protocol error, invalid
# payload (bad UTF-8), message too big.
EXPECTED_CLOSE = frozenset({1002, 1007, 1009})


def action_table() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """name -> (required body keys, one-of keys) of every action the gateway serves."""
    from services.api_gateway.websocket.actions import ACTIONS

    return {name: (a.required, a.one_of) for name, a in ACTIONS.items()}


def _by_name(fx: Fixture, key: str, rng: random.Random) -> Any:
    if key == "message_ids":
        return (fx.message_ids + fx.claimed_ids)[: rng.randint(1, 3)]
    if key == "claim_ids":
        return [fx.claim_id]
    if key == "resource_types":
        return ["messages"]
    if key == "messages":
        return [{"body": {"ws": rng.randrange(100)}, "ttl": 300}]
    if key == "pop":
        return rng.randint(1, 3)
    return fx.field(key, rng.randrange(8))


Body = Callable[[Fixture, random.Random], dict[str, Any]]
VALID_BODIES: dict[str, Body] = {
    "authenticate": lambda fx, rng: {},
    "get_home_doc": lambda fx, rng: {},
    "check_node_health": lambda fx, rng: {},
    "ping_node": lambda fx, rng: {},
    "queue_list": lambda fx, rng: {"limit": 5, "detailed": True, "with_count": True},
    "queue_create": lambda fx, rng: {"queue_name": fx.queue,
                                     "metadata": routes.queue_metadata(fx, rng).doc},
    "queue_purge": lambda fx, rng: {"queue_name": fx.queue, "resource_types": ["messages"]},
    "queue_redrive": lambda fx, rng: {"queue_name": fx.queue, "max_per_second": 5},
    "message_list": lambda fx, rng: {"queue_name": fx.queue, "limit": 5, "echo": True,
                                     "include_claimed": rng.random() < 0.5},
    "message_post": lambda fx, rng: {"queue_name": fx.queue,
                                     "messages": [{"body": {"ws": 1}, "ttl": 300}]},
    "message_delete": lambda fx, rng: {"queue_name": fx.queue,
                                       "message_id": _by_name(fx, "message_id", rng),
                                       **({"claim_id": fx.claim_id} if rng.random() < 0.5
                                          else {})},
    "message_delete_many": lambda fx, rng: {
        "queue_name": fx.queue,
        **rng.choice(({"message_ids": _by_name(fx, "message_ids", rng)}, {"pop": 2},
                      {"claim_ids": [fx.claim_id], "message_ids": fx.claimed_ids}))},
    "claim_create": lambda fx, rng: {"queue_name": fx.queue, "limit": 2, "ttl": 60,
                                     "grace": 60},
    "claim_update": lambda fx, rng: {"queue_name": fx.queue, "claim_id": fx.claim_id,
                                     "ttl": 120, "grace": 60},
    "subscription_create": lambda fx, rng: (
        {"queue_name": fx.queue, **routes.subscription(fx, rng).doc} if rng.random() < 0.6
        else {"queue_name": fx.queue, "ttl": 600}),
    "subscription_list": lambda fx, rng: {"queue_name": fx.queue, "limit": 5},
}


def valid_body(name: str, required: tuple[str, ...], one_of: tuple[str, ...], fx: Fixture,
               rng: random.Random) -> tuple[dict[str, Any], bool]:
    builder = VALID_BODIES.get(name)
    if builder is not None:
        return builder(fx, rng), True
    body = {key: _by_name(fx, key, rng) for key in required}
    if one_of and not any(key in body for key in one_of):
        body[one_of[0]] = _by_name(fx, one_of[0], rng)
    return body, name in _GENERIC_OK


# Actions whose valid body is exactly their required keys.
_GENERIC_OK = frozenset({"queue_get", "queue_delete", "queue_get_stats", "queue_redrive_get",
                         "queue_redrive_delete", "message_get",
                         "message_get_many", "claim_get", "claim_delete", "subscription_get",
                         "subscription_delete"})


@dataclass(frozen=True)
class WsCase:
    label: str
    frame: str | bytes
    # Send ``frame`` (bytes) as a text frame: bytes that are not UTF-8.
    as_text: bool = False
    # The server may close the connection instead of answering (EXPECTED_CLOSE).
    may_close: bool = False


def _pack(doc: Any) -> bytes:
    packed: bytes = msgpack.packb(_packable(doc), use_bin_type=True)
    return packed


def _packable(doc: Any) -> Any:
    """``doc`` with integers MessagePack cannot hold clipped to its range (-2**63..2**64-1) and
    lone surrogates (no UTF-8 form) replaced."""
    if isinstance(doc, str):
        return doc.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(doc, bool) or not isinstance(doc, int | dict | list):
        return doc
    if isinstance(doc, int):
        return max(-(2**63), min(2**64 - 1, doc))
    if isinstance(doc, dict):
        return {_packable(k): _packable(v) for k, v in doc.items()}
    return [_packable(v) for v in doc]


def _encode(request: dict[str, Any], binary: bool) -> str | bytes:
    if binary:
        return _pack(request)
    text = json.dumps(request, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only a \\u escape can carry it
        text = json.dumps(request)
    return text


def make_case(name: str, required: tuple[str, ...], one_of: tuple[str, ...], fx: Fixture,
              rng: random.Random, *, mutate: bool = True) -> WsCase:
    body, _known = valid_body(name, required, one_of, fx, rng)
    headers: dict[str, Any] = dict(fx.headers)
    if name == "check_node_health":
        headers["X-Roles"] = "admin"
    request: dict[str, Any] = {"action": name, "headers": headers, "body": body}
    binary = rng.random() < 0.5
    labels = []
    if mutate and rng.random() > 1 / 12:
        for _ in range(rng.choices((1, 2, 3), weights=(6, 3, 1))[0]):
            labels.append(_mutate(request, rng, fx, binary))
    kind = "msgpack" if binary else "json"
    label = f"{name} ({kind}): " + ("; ".join(labels) or "valid")
    if binary and rng.random() < 0.1:
        return WsCase(label + "; msgpack extras", _msgpack_extras(request, rng))
    return WsCase(label, _encode(request, binary))


def _mutate(request: dict[str, Any], rng: random.Random, fx: Fixture, binary: bool) -> str:
    kind = rng.randrange(10)
    if kind <= 3:
        request["body"], label = values.mutate_doc(request["body"], rng)
        return f"body: {label}"
    if kind == 4 and isinstance(request["body"], dict) and request["body"]:
        key = rng.choice(list(request["body"]))
        del request["body"][key]
        return f"body: no {key}"
    headers = request["headers"] if isinstance(request["headers"], dict) else {}
    if kind == 5:
        key = rng.choice(("Client-ID", "X-Project-ID", "X-Roles", "URL-Signature",
                          "X-Auth-Token"))
        value: Any = rng.choice((None, 1, 2**64, [], {}, True, "", values.text(rng, fx.project),
                                 "\u00e9", "a\nb"))
        headers[key] = value
        request["headers"] = headers
        return f"headers: {key}={str(value)[:30]!r}"
    if kind == 6:
        headers.pop(rng.choice(("Client-ID", "X-Project-ID")), None)
        return "headers: one missing"
    if kind == 7:
        grant: dict[str, Any] = dict(fx.signed) or {"URL-Signature": "0" * 64}
        key = rng.choice(list(grant))
        grant[key] = rng.choice(("", "0" * 64, ["GET", 1], 7, *ODD_DATES))
        headers.update(grant)
        return f"headers: signed-URL set, odd {key}"
    if kind == 8:
        request["headers"] = rng.choice((None, [], "h", 1, {"": ""}))
        return "envelope: headers not an object"
    part = rng.choice(("action", "body", "extra"))
    if part == "action":
        request["action"] = rng.choice((None, 1, [], "", "QUEUE_LIST", "queue_list ", "x" * 300,
                                        "__init__", "authenticate\u0000"))
    elif part == "body":
        request["body"] = rng.choice((None, [], "b", 1, 2**64, {"queue_name": None}))
    else:
        request[values.text(rng, "extra")] = values.scalar(rng)
    return f"envelope: odd {part}"


def _msgpack_extras(request: dict[str, Any], rng: random.Random) -> bytes:
    """MessagePack values JSON has no form for: bin, ext, non-string keys, edge integers."""
    body = request.get("body") if isinstance(request.get("body"), dict) else {}
    extra = rng.choice((b"\x00\xff", msgpack.ExtType(5, b"x"), msgpack.Timestamp(0),
                        2**64 - 1, -(2**63), 1.5, {1: "int key"}, {b"k": "bin key"}))
    doc = _packable({**request, "body": {**(body or {})}})
    doc["body"]["fz"] = extra
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def garbage(rng: random.Random) -> WsCase:
    kind = rng.randrange(12)
    if kind == 0:
        return WsCase("garbage: random binary", bytes(rng.randrange(256) for _ in range(64)))
    if kind == 1:
        return WsCase("garbage: invalid JSON text", '{"action": "queue_list", ')
    if kind == 2:
        return WsCase("garbage: empty text frame", "")
    if kind == 3:
        return WsCase("garbage: empty binary frame", b"")
    if kind == 4:
        text = rng.choice(("null", "[]", "1", '"s"', "[1e999]", '{"action": "\\ud800"}'))
        return WsCase(f"garbage: JSON {text}", text)
    if kind == 5:
        return WsCase("garbage: text frame, bad UTF-8", b'{"action": "\xff"}', as_text=True,
                      may_close=True)
    if kind == 6:
        return WsCase("garbage: frame over 1 MiB", "x" * (1024 * 1024 + 10), may_close=True)
    if kind == 7:
        depth = rng.choice((33, 34, 5000))
        return WsCase(f"garbage: {depth} nested arrays", "[" * depth + "]" * depth)
    if kind == 8:
        return WsCase("garbage: msgpack array", msgpack.packb([1, 2, 3]))
    if kind == 9:
        return WsCase("garbage: msgpack truncated",
                      msgpack.packb({"action": "queue_list", "headers": {}})[:-3])
    if kind == 10:
        return WsCase("garbage: deep msgpack", msgpack.packb(values.nested(40)))
    return WsCase("garbage: JSON with NUL key", '{"\\u0000": 1, "action": "ping_node"}')


@dataclass(frozen=True)
class WsResult:
    status: int | None
    doc: Any = None
    error: str | None = None
    close_code: int | None = None
    seconds: float = 0.0


class WsClient:
    """One connection to the WebSocket API, reopened when the server closes it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.socket: ClientConnection | None = None

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
            self.socket = None

    async def exchange(self, case: WsCase) -> WsResult:
        import asyncio

        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                if self.socket is None:
                    self.socket = await connect(self.url, max_size=None, ping_interval=None,
                                                close_timeout=1, compression=None)
                await self.socket.send(case.frame, text=True if case.as_text else None)
                while True:
                    frame = await self.socket.recv()
                    doc = _decode(frame)
                    if doc is None:
                        return WsResult(None, error=f"undecodable answer {frame[:200]!r}",
                                        seconds=time.monotonic() - started)
                    if isinstance(doc, dict) and "request" in doc:
                        break
            status = doc.get("headers", {}).get("status") if isinstance(doc, dict) else None
            if not isinstance(status, int):
                return WsResult(None, doc, error="answer without a status",
                                seconds=time.monotonic() - started)
            return WsResult(status, doc, seconds=time.monotonic() - started)
        except TimeoutError:
            await self._drop()
            return WsResult(None, error="timeout", seconds=time.monotonic() - started)
        except ConnectionClosed as exc:
            self.socket = None
            code = exc.rcvd.code if exc.rcvd is not None else None
            return WsResult(None, error=f"closed by the server ({code})", close_code=code,
                            seconds=time.monotonic() - started)
        except (OSError, InvalidHandshake) as exc:
            self.socket = None
            return WsResult(None, error=f"cannot connect ({exc})",
                            seconds=time.monotonic() - started)

    async def _drop(self) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            socket.transport.abort()


def _decode(frame: str | bytes) -> Any:
    try:
        if isinstance(frame, bytes):
            return msgpack.unpackb(frame, raw=False)
        return orjson.loads(frame)
    except Exception:
        return None
