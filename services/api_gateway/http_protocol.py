"""uvicorn's httptools protocol with a bound on the request head (request line and headers),
answering only HTTP/1.0 and HTTP/1.1.

The httptools parser buffers a request's head until it is complete, however long it is; this
protocol counts the bytes received while a head is being read and, once past
:data:`HEAD_BYTES_MAX` with the head still incomplete, answers 431 and closes the connection
(the parser holds at most one more read's worth, ~256 KiB). Heads
under the bound reach the app, whose own, smaller limits (``limits.py``) answer 400 with a
Zaqar error body. Body bytes are not counted.

A request that the parser refuses (uvicorn answers it 400 and closes the connection) behind
well-formed requests pipelined ahead of it waits until they are answered: their answers go
out first, then the 400.

A request line of another version that the parser accepts (``HTTP/2.0`` sent as text, or no
version at all, which it reads as HTTP/0.9) is answered 505 and the connection closed, before
the app sees it (an ASGI ``http`` scope cannot carry those versions). Versions the parser
refuses get uvicorn's own 400.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_BYTES_MAX: Final = 128 * 1024

_BODY: Final = orjson.dumps(
    {
        "title": "Request header fields too large",
        "description": f"The request line and header fields may not exceed {HEAD_BYTES_MAX} bytes.",
    }
)
SUPPORTED_VERSIONS: Final = frozenset({"1.0", "1.1"})
_VERSION_BODY: Final = orjson.dumps(
    {
        "title": "HTTP version not supported",
        "description": "This server speaks HTTP/1.1 and HTTP/1.0.",
    }
)
VERSION_NOT_SUPPORTED: Final = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_VERSION_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _VERSION_BODY
)
HEAD_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False
        self._refused = False
        self._deferred_400: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this chunk (a chunk may also hold the start of the body):
        # the parser holds at most one chunk past the bound.
        if not self._in_body and self._head_bytes > HEAD_BYTES_MAX:
            if not self.transport.is_closing():
                self.logger.warning("Request head over %d bytes refused.", HEAD_BYTES_MAX)
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()

    def _answering(self) -> bool:
        """Whether a request received whole is still being answered (the parser's error is
        then in a request pipelined behind it, not in that one's body)."""
        cycle = self.cycle
        return cycle is not None and not cycle.more_body and not cycle.response_complete

    def send_400_response(self, msg: str) -> None:
        if self._answering():
            # Requests pipelined ahead of the bad one are answered first.
            self._deferred_400 = msg
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        if self._deferred_400 is not None and not self._answering():
            msg, self._deferred_400 = self._deferred_400, None
            self.server_state.total_requests += 1
            super().send_400_response(msg)
            return
        super().on_response_complete()
        if self._deferred_400 is not None:
            self.flow.pause_reading()

    def on_headers_complete(self) -> None:
        self._in_body = True
        if self.parser.get_http_version() not in SUPPORTED_VERSIONS:
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(VERSION_NOT_SUPPORTED)
                self.transport.close()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        if not self._refused:
            super().on_message_complete()
