"""Input limits checked before anything is parsed or routed, so hostile input costs little.

=====================================  =========  ==========================================
Input                                  Limit      Answer when over it
=====================================  =========  ==========================================
request headers, names + values        32 KiB     400 "Request header fields too large"
number of request header fields        100        400 "Request header fields too large"
query string (raw, percent-encoded)    8 KiB      400 "Query string too long"
JSON nesting of a body                 32         400 "Invalid request body"
=====================================  =========  ==========================================

Body sizes are limited per operation (``inputs.py``), and a WebSocket action's frame to its
HTTP route's body limit plus the envelope (``websocket/server.py:frame_max``); ``ids`` and
``claim_ids`` lists of a message request hold at most 20 ids (``operations/messages.py``). The
HTTP server refuses a request line over its own limit (~64 KiB) with a plain 400 before the app
sees it.

The HTTP protocol (``http_protocol.py``) bounds what comes before the app: the request head
(431 past 128 KiB), the time to send a whole request (408 past ``http_request_timeout``) and
the open connections (503 past ``http_max_connections``) and the bytes of requests being
received at once (503 past ``http_max_receiving_bytes``).

The nesting check runs on the raw bytes before parsing: quoted strings are skipped with one
linear regular expression (an unterminated string ends at the end of the data, so there is
no backtracking over it), and the depth is the running sum of ``[``/``{`` (+1) and ``]``/``}``
(-1), computed without recursion.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

import falcon.asgi

from services.api_gateway.errors import bad_body, bad_request

HEADERS_BYTES_MAX: Final = 32 * 1024
HEADERS_COUNT_MAX: Final = 100
QUERY_STRING_MAX: Final = 8 * 1024
JSON_DEPTH_MAX: Final = 32

_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKETS: Final = b"[]{}"
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in _BRACKETS)
# "[" and "{" -> 1, "]" and "}" -> -1 (0xff read as a signed byte).
_STEP: Final = bytes.maketrans(_BRACKETS, b"\x01\xff\x01\xff")

HEADERS_TOO_LARGE: Final = "Request header fields too large"


# Seconds a client refused for want of room (connections, bytes being received) is asked to
# wait before it tries again, on both ports.
FULL_RETRY_AFTER: Final = 5
# Seconds between two log lines about connections refused or cut off (each port says what it
# refused since its last line).
LOG_EVERY: Final = 10.0


# Seconds a refused or cut-off connection is kept, half closed, for its answer (503, or close
# code 1013) to reach the client before what the client still sends could reset it.
LINGER: Final = 1.0
# What one WebSocket connection may hold and still receive while the process is past its
# bound: a small request or a few (websocket/server.py).
WS_ALLOWANCE: Final = 64 * 1024


class Receiving:
    """The bytes of requests a gateway process holds, over both its ports
    (``http_max_receiving_bytes``): HTTP requests not yet received whole
    (``http_protocol.py``), and WebSocket requests from their first byte until their answer is
    sent (``websocket/server.py``). ``most`` 0: no limit."""

    __slots__ = ("held", "most")

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0


# The key in a request's ASGI scope that holds the status the HTTP protocol answered it with,
# having cut it off while it was received (http_protocol.py: 408 or 503); the app, which sees
# only that the client went away, counts and logs that status (middleware.py).
CUT_OFF: Final = "zaqar.cut_off"


def check_request(req: falcon.asgi.Request) -> None:
    """400 when the request's headers or query string are over their limits."""
    headers: list[tuple[bytes, bytes]] = req.scope.get("headers", [])
    if len(headers) > HEADERS_COUNT_MAX:
        raise bad_request(
            f"A request may carry at most {HEADERS_COUNT_MAX} header fields.", HEADERS_TOO_LARGE
        )
    if sum(len(name) + len(value) for name, value in headers) > HEADERS_BYTES_MAX:
        raise bad_request(
            f"The request's header fields may not exceed {HEADERS_BYTES_MAX} bytes in all.",
            HEADERS_TOO_LARGE,
        )
    if len(req.scope.get("query_string", b"")) > QUERY_STRING_MAX:
        raise bad_request(
            f"The query string may not be longer than {QUERY_STRING_MAX} bytes.",
            "Query string too long",
        )


def json_depth(data: bytes) -> int:
    """How deeply the JSON text ``data`` nests arrays and objects (0 for a scalar).

    Exact for well-formed JSON; for malformed text an estimate, which the parser then refuses.
    """
    steps = _STRING.sub(b"", data).translate(_STEP, _NOT_BRACKETS)
    return max(accumulate(array("b", steps)), default=0)


def check_json_depth(data: bytes) -> None:
    """400 when ``data`` nests deeper than :data:`JSON_DEPTH_MAX`."""
    # Fast path: a text cannot nest deeper than it has openings.
    if data.count(b"[") + data.count(b"{") > JSON_DEPTH_MAX and json_depth(data) > JSON_DEPTH_MAX:
        raise bad_body(f"The JSON document nests too deeply. Max depth: {JSON_DEPTH_MAX}.")


def check_id_count(ids: list[str] | None, name: str, limit: int) -> None:
    """400 when the list parameter ``name`` holds more than ``limit`` ids."""
    if ids is not None and len(ids) > limit:
        raise bad_request(f"{name} parameter should not have more than {limit} values.")
