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

A request answered before its body was received whole (the app refuses a request from its
head, say) ends its connection once answered: left open, the next request sent on it would be
read as the rest of that body and never answered. The answer says so (``connection: close``),
or a client that read it before our side's end came would send its next request on a
connection being closed and get no answer; and the rest of the body is read and dropped until
the client closes (or :data:`LINGER` s), so that it does not turn the answer into a reset.

A request line of another version that the parser accepts (``HTTP/2.0`` sent as text, or no
version at all, which it reads as HTTP/0.9) is answered 505 and the connection closed, before
the app sees it (an ASGI ``http`` scope cannot carry those versions). Versions the parser
refuses get uvicorn's own 400.

Two bounds keep clients that hold connections without using them from taking a process's
open files (one client holding 20,000 silent connections took a gateway out of service
before them): :func:`configured` makes the protocol of one server with them.

- **Requests in time** (``http_request_timeout``): a connection has that long to send a whole
  request, head and body, from when it opens or its previous answer ends. Past it, a request
  begun is answered 408 and the connection closed; one that sent nothing is closed (as
  uvicorn closes a kept-alive connection left idle). A request received whole is never timed
  out while it is answered: a long poll waits as long as it asks.
- **Connections** (``http_max_connections``): past that many open, a new connection is
  answered 503 with ``Retry-After`` at once, its side shut for writing and closed when the
  client closes or after :data:`LINGER` seconds (read and dropped meanwhile, so the answer is
  not lost to a reset).
- **Bytes being received** (``http_max_receiving_bytes``): the bytes of requests not yet
  received whole, summed over the process's connections, from their arrival until their
  request is whole. A request left not whole by bytes that take the sum past the bound is
  answered 503 with ``Retry-After`` and its connection closed; a request received whole in
  one read holds nothing, so small requests pass while the process is full. Requests sent
  slowly, each under its own size limits, then cannot make the process hold more than that
  (1,000 connections, each holding 250 KiB of a post short of its last byte, took a gateway
  from 68 to 343 MB).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.api_gateway.limits import CUT_OFF, FULL_RETRY_AFTER, LINGER, LOG_EVERY, Receiving
from services.common import metrics

log = logging.getLogger(__name__)

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


def _answer(status: bytes, title: str, description: str, *headers: bytes) -> bytes:
    body = orjson.dumps({"title": title, "description": description})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            + b"".join(h + b"\r\n" for h in headers)
            + b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body)


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, which knows whether its answer ends the connection."""

    ends_connection = False  # answered before the request's body was whole

    async def send(self, message: Any) -> None:
        if self.response_started or not self.more_body:
            await super().send(message)
            return
        # The answer's head, before the body is whole: the client is told that the connection
        # ends, and the protocol ends it once the answer is out, reading and dropping the rest
        # of the body meanwhile (uvicorn would close at once, which resets a connection with
        # bytes left unread, and the answer with it).
        self.ends_connection = True
        if self.keep_alive:
            message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
        await super().send(message)
        self.keep_alive = True  # uvicorn's close after the answer is left to the protocol


_CLOSE: Final = (b"connection", b"close")


@dataclass(slots=True)
class _Room:
    """The connections one server holds, the bytes of requests it is receiving, and what it
    closed since it last said so."""

    open: int = 0
    refused: int = 0
    timed_out: int = 0
    overfull: int = 0
    said_at: float = -math.inf


def configured(
    max_connections: int, request_timeout: float, receiving: Receiving | None = None,
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class of one server: at most ``max_connections`` open, each request whole
    within ``request_timeout`` seconds (each 0: no limit), and the bytes of requests being
    received counted in ``receiving`` (shared with the WebSocket server; none: no limit)."""
    receiving = receiving or Receiving(0)
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {
        "max_connections": max_connections,
        "request_timeout": request_timeout,
        "receiving": receiving,
        "room": _Room(),
        "overfull_answer": _answer(
            b"503 Service Unavailable", "Service Unavailable",
            f"This gateway is receiving {receiving.most} bytes of requests at once "
            f"(http_max_receiving_bytes). Please retry in {FULL_RETRY_AFTER} seconds, or at "
            "another replica.", b"retry-after: " + str(FULL_RETRY_AFTER).encode()),
        "full_answer": _answer(
            b"503 Service Unavailable", "Service Unavailable",
            f"This gateway holds its {max_connections} HTTP connections "
            f"(http_max_connections). Please retry in {FULL_RETRY_AFTER} seconds, or at "
            "another replica.", b"retry-after: " + str(FULL_RETRY_AFTER).encode()),
        "timeout_answer": _answer(
            b"408 Request Timeout", "Request Timeout",
            f"The request was not received whole within {request_timeout:g} seconds "
            "(http_request_timeout)."),
    })


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    # The bounds (configured()); as the class itself, none.
    max_connections: int = 0
    request_timeout: float = 0.0
    receiving: Receiving = Receiving(0)
    room: _Room = _Room()
    full_answer: bytes = b""
    timeout_answer: bytes = b""
    overfull_answer: bytes = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_body = False
        self._refused = False
        self._deferred_400: str | None = None
        self._admitted = False
        self._turned_away = False
        self._begun = False  # a part of a request has come, and not all of it yet
        self._timer: asyncio.TimerHandle | None = None
        # Loop time by which the awaited request must be whole; inf while none is awaited (a
        # request received whole is being answered). The timer, once set, follows it lazily:
        # a request costs two attribute writes, not a timer of its own.
        self._due = math.inf
        # Bytes received of the request(s) not yet whole, counted in self.receiving.
        self._held = 0

    # Connections and requests in time ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        room = self.room
        if self.max_connections and room.open >= self.max_connections:
            self._turn_away()
            return
        self._admitted = True
        room.open += 1
        metrics.HTTP_CONNECTIONS.inc()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release()
        if self._admitted:
            self._admitted = False
            self.room.open -= 1
            metrics.HTTP_CONNECTIONS.dec()
        super().connection_lost(exc)

    def _turn_away(self) -> None:
        self.connections.discard(self)  # not one of the server's: nothing to shut down
        self.room.refused += 1
        metrics.HTTP_REFUSED.inc()
        self._say()
        self._answer_and_close(self.full_answer)

    def _answer_and_close(self, answer: bytes) -> None:
        """Write ``answer`` and close: our side at once, the connection when the client closes
        its own or after LINGER s. What the client sends meanwhile is read and dropped, so that
        a request it is still sending does not turn the answer into a reset."""
        self._turned_away = True
        self._release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self.transport
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()
            self._timer = self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def _arm(self) -> None:
        """A request is awaited from now on."""
        if self.request_timeout:
            self._due = self.loop.time() + self.request_timeout
            if self._timer is None:
                self._timer = self.loop.call_at(self._due, self._look)

    def _look(self) -> None:
        self._timer = None
        if self._due == math.inf or self.transport.is_closing():
            return  # nothing awaited: the timer is set again when an answer ends
        if self.loop.time() < self._due:  # awaited again since the timer was set
            self._timer = self.loop.call_at(self._due, self._look)
            return
        if self._begun:
            kind = "begun"
        elif (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            kind = "idle"
        else:
            return  # a request received whole is being answered: the timer starts after it
        self.room.timed_out += 1
        metrics.HTTP_REQUEST_TIMEOUTS.labels(kind).inc()
        self._say()
        if kind == "begun":
            self._cut_off(408, self.timeout_answer)
        else:
            self.transport.close()

    def _cut_off(self, status: int, answer: bytes) -> None:
        """Answer the request being received ``status`` (unless the app has begun to answer
        it), and close the connection."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the app answered early: its answer stands
                self.transport.close()
                return
            cycle.scope[CUT_OFF] = status  # type: ignore[typeddict-unknown-key]
            # The app's cycle ends now: its next read says the client went away, and an
            # answer it would still make is dropped rather than written after ours.
            cycle.disconnected = True
            cycle.message_event.set()
        self._answer_and_close(answer)

    def _release(self) -> None:
        if self._held:
            self.receiving.held -= self._held
            self._held = 0

    def _say(self) -> None:
        """A log line for the connections refused and cut off, at most every LOG_EVERY s."""
        room = self.room
        now = time.monotonic()
        if now - room.said_at < LOG_EVERY:
            return
        room.said_at = now
        log.warning(
            "HTTP connections closed since the last such line: %d refused, this gateway "
            "holding %d (http_max_connections); %d not sending a whole request within %g s "
            "(http_request_timeout); %d cut off, this gateway receiving %d bytes of requests "
            "(http_max_receiving_bytes)",
            room.refused, self.max_connections, room.timed_out, self.request_timeout,
            room.overfull, self.receiving.most)
        room.refused = room.timed_out = room.overfull = 0

    def on_message_begin(self) -> None:
        self._begun = True
        super().on_message_begin()

    # The request head's bound, and HTTP versions ------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._turned_away:
            return  # read and dropped until it closes
        self._feed(data)
        receiving = self.receiving
        if not receiving.most:
            return
        # What a request left not whole holds; a request whole within this chunk holds
        # nothing (it was given back when it completed), so small requests always pass.
        if not self._begun or self.transport.is_closing():
            self._release()
            return
        receiving.held += len(data)
        self._held += len(data)
        if receiving.held > receiving.most:
            self.room.overfull += 1
            metrics.HTTP_OVERFULL.inc()
            self._say()
            self._cut_off(503, self.overfull_answer)

    def _feed(self, data: bytes) -> None:
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
        cycle = self.cycle
        if isinstance(cycle, _Cycle) and cycle.ends_connection and not self.transport.is_closing():
            # Answered before its body was whole (a refusal need not read it): what the client
            # sends next on this connection would be read as the rest of that body, and its
            # next request never answered. The connection ends here instead, as the answer
            # said (_Cycle).
            self.server_state.total_requests += 1
            self._answer_and_close(b"")
            return
        if self._deferred_400 is not None and not self._answering():
            msg, self._deferred_400 = self._deferred_400, None
            self.server_state.total_requests += 1
            super().send_400_response(msg)
            return
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's time starts
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
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:
            # uvicorn makes the cycle here, of its own class; ours only adds behaviour to send
            # (no state of its own beyond a class default), so the object can take it as is.
            cycle.__class__ = _Cycle

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        self._begun = False
        self._due = math.inf
        self._release()
        if not self._refused:
            super().on_message_complete()
