"""WebSocket framing: text frames carry JSON, binary frames MessagePack; answers match.

A request is ``{"action", "headers": {...}, "body": {...}}``; a response is
``{"request": {"action", "body", "headers", "api": "v2"}, "body": <object|string>,
"headers": {"status": <int>}}`` (Zaqar's ``zaqar/api`` request and response envelopes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack
import orjson

from services.api_gateway.limits import JSON_DEPTH_MAX, json_depth

API: Final = "v2"


# A frame wraps the HTTP body one level deeper (``{"body": {...}}``).
FRAME_DEPTH_MAX: Final = JSON_DEPTH_MAX + 1


def _too_deep(text: str) -> bool:
    """Whether a text frame nests deeper than :data:`FRAME_DEPTH_MAX`, checked before parsing
    (orjson parses deeper documents than it can serialise again)."""
    if text.count("[") + text.count("{") <= FRAME_DEPTH_MAX:
        return False
    return json_depth(text.encode("utf-8", "surrogatepass")) > FRAME_DEPTH_MAX


class BadFrame(Exception):
    """A frame that is not a JSON / MessagePack object; the text says why."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded request and the framing its answer uses."""

    payload: dict[str, Any]
    binary: bool
    size: int = 0
    """The frame's length in bytes as received (a text frame's in UTF-8, as it was sent)."""


def decode(data: str | bytes) -> Frame:
    """Text -> JSON, binary -> MessagePack; the result must be an object."""
    binary = isinstance(data, bytes)
    if isinstance(data, str) and _too_deep(data):
        raise BadFrame(
            f"The JSON document nests too deeply. Max depth: {FRAME_DEPTH_MAX}"
            " (the request envelope included)."
        )
    try:
        payload = msgpack.unpackb(data, raw=False) if binary else orjson.loads(data)
    except Exception as exc:  # every decoder failure means the same thing to the client
        kind = "binary (MessagePack)" if binary else "text (JSON)"
        raise BadFrame(f"Can't decode {kind} request. {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict):
        raise BadFrame("Unexpected body type. Expected dict or dict like.")
    if binary:
        # Bodies and metadata are stored as JSON: MessagePack's extras cannot travel.
        try:
            orjson.dumps(payload)
        except TypeError:
            raise BadFrame(
                "The request holds values JSON cannot represent (binary data, extension"
                " types or keys that are not strings)."
            ) from None
    # (isascii() reads a flag of the string: only a frame with other characters is encoded)
    size = (len(data) if isinstance(data, bytes) or data.isascii()
            else len(data.encode("utf-8", "surrogatepass")))
    return Frame(payload, binary, size)


def echo(payload: dict[str, Any] | None) -> dict[str, Any]:
    """The ``request`` part of a response: what was asked, as Zaqar echoes it."""
    payload = payload or {}
    return {
        "action": payload.get("action"),
        "body": payload.get("body", {}),
        "headers": payload.get("headers"),
        "api": API,
    }


def encode(response: dict[str, Any], binary: bool) -> str | bytes:
    """A response (or pushed notification) in the given framing.

    Documents may hold ``orjson.Fragment`` (stored JSON embedded as is); MessagePack gets them
    through one JSON round trip.
    """
    if binary:
        packed: bytes = msgpack.packb(_plain(response), use_bin_type=True)
        return packed
    return orjson.dumps(response, option=orjson.OPT_NON_STR_KEYS).decode()


def response(payload: dict[str, Any] | None, status: int, body: Any) -> dict[str, Any]:
    return {"request": echo(payload), "body": body, "headers": {"status": status}}


def _plain(value: Any) -> Any:
    """Replace the fragments of a document by the values they hold."""
    if isinstance(value, orjson.Fragment):
        return orjson.loads(orjson.dumps(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
