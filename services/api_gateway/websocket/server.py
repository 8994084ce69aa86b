"""The WebSocket server of the gateway: one connection handler over the shared operations.

Runs in the gateway's event loop next to the HTTP server (``api_gateway/server.py``) and uses
the same upstream channels. Requests on a connection are answered in order; pushed
notifications are sent as they come (``push.py``), but never while a request is being
answered: the answer to a ``message_post`` goes out before the push of its messages. A
request that waits (``claim_create`` / ``message_list`` with ``wait`` > 0, long polling) is
answered on its own instead, when it is ready: the connection's later requests and pushes do
not wait for it (it causes no push, and its answer carries its request so clients match
them). At most :data:`MAX_WAITING` wait at once on one connection; beyond them its next frames
are read only as those are answered. Closing the connection cancels the waits still pending:
they claim nothing.

With ``auth_strategy = "keystone"`` a connection first sends ``authenticate`` with a valid
``X-Auth-Token`` in its headers; until then every other action is answered 403
``Not authentified.``, except a pre-signed request (``URL-Signature``) whose signature grants
its action's method and path: it goes ahead as over HTTP, as the project of its
``X-Project-ID``, with no roles and no token (as in Zaqar, whose sockets take signed message
actions before ``authenticate``). Afterwards the token's project and roles replace the
``X-Project-ID`` and ``X-Roles`` of every request, and when the token expires the socket is
closed with code 4003.

Each request has a request id while it is answered, as over HTTP: its headers'
``X-OpenStack-Request-ID`` when well formed, else a new one (``services/common/logs.py``). It is
in the logs and passed on to the services, but not in the response, whose ``headers`` stay
Zaqar's ``{"status": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import grpc
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from services.api_gateway import rate_limit
from services.api_gateway.auth import SIGNATURE_REFUSED, with_admin
from services.api_gateway.errors import ApiError, api_error_from_rpc, bad_request, unavailable
from services.api_gateway.limits import (
    FULL_RETRY_AFTER,
    HEADERS_BYTES_MAX,
    LINGER,
    LOG_EVERY,
    WS_ALLOWANCE,
    Receiving,
)
from services.api_gateway.middleware import read_caller
from services.api_gateway.operations import Caller
from services.api_gateway.paths import plain_segment
from services.api_gateway.rate_limit import RateLimit
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import frames
from services.api_gateway.websocket.actions import ACTIONS, Action, Call
from services.api_gateway.websocket.push import Watches
from services.common import metrics, signing
from services.common.config import Settings, check_limits
from services.common.keystone import Identity, KeystoneAuth, KeystoneUnavailable, Unauthorized
from services.common.logs import REQUEST_ID, REQUEST_ID_KEY, request_id_from

log = logging.getLogger(__name__)

PATH: Final = "/"
# A post of the largest allowed batch, plus the envelope and its echo.
MAX_FRAME: Final = 1024 * 1024
TOKEN_EXPIRED_CLOSE: Final = 4003
# Actions whose request may wait (long polling); they never cause a push.
WAITING_ACTIONS: Final = frozenset({"claim_create", "message_list"})
# Requests that may wait at once on one connection. Beyond them the connection's next frames
# are not read until one is answered (so the client's socket buffers fill and it slows down),
# as an HTTP connection holds one request at a time: without a bound, one socket could make
# the gateway hold any number of requests and their frames.
MAX_WAITING: Final = 8
# Frames the WebSocket library reads ahead of the one being answered (its default is 16).
READ_AHEAD: Final = 4
# What a frame may hold beyond its action's body: the headers HTTP allows, and the rest of the
# envelope.
ENVELOPE_MAX: Final = HEADERS_BYTES_MAX + 1024


def frame_max(action: Action) -> int:
    """The longest frame of ``action``: the body its HTTP route takes, plus the envelope."""
    return action.body_max + ENVELOPE_MAX


def error_body(err: ApiError) -> dict[str, Any]:
    """Zaqar's WebSocket error body: ``{"error": <text>}`` (python-zaqarclient reads
    ``error``), with the title the HTTP API would send."""
    return {"error": err.description or err.title, "title": err.title}


def _given_request_id(payload: Mapping[str, Any]) -> str | None:
    """The request's ``X-OpenStack-Request-ID`` header (any case), if it has one."""
    headers = payload.get("headers")
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


def _waits(payload: Mapping[str, Any], size: int) -> bool:
    """Whether the request asks to wait (answered apart from the others). One over its
    action's frame size is not: it is refused at once, in turn, and holds no waiting place."""
    action, body = payload.get("action"), payload.get("body")
    return (
        isinstance(action, str)
        and action in WAITING_ACTIONS
        and isinstance(body, dict)
        and body.get("wait") not in (None, 0)
        and size <= frame_max(ACTIONS[action])
    )


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers")
    if not isinstance(headers, dict):
        raise bad_request('The request must have a "headers" object.')
    return {str(k).lower(): str(v) for k, v in headers.items() if v is not None}


def _body(payload: Mapping[str, Any], name: str, action: Action) -> dict[str, Any]:
    body = payload.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_request('The request "body" must be an object.')
    missing = [key for key in action.required if key not in body]
    if missing:
        keys = ", ".join(f'"{key}"' for key in missing)
        raise bad_request(f"The {name} action requires {keys} in its body.")
    if action.one_of and not any(key in body for key in action.one_of):
        keys = ", ".join(f'"{key}"' for key in action.one_of)
        raise bad_request(f"The {name} action requires one of {keys} in its body.")
    return body


_FIELD: Final = re.compile(r"\{(\w+)\}")


def _route_path(template: str, body: Mapping[str, Any]) -> str | None:
    """The HTTP path an action stands for, its ``{fields}`` taken from the body; None when a
    field is not a plain segment of a canonical path (``paths.py``)."""
    values = []
    for name in _FIELD.findall(template):
        value = body.get(name)
        if not isinstance(value, str) or not plain_segment(value):
            return None
        values.append(value)
    parts = iter(values)
    return _FIELD.sub(lambda _: next(parts), template)


# What a pre-signed request's own headers may not claim: it acts with no roles and no token.
_NOT_SIGNED: Final = frozenset({"x-roles", "x-auth-token"})


def _not_authentified() -> ApiError:
    return ApiError(403, "Forbidden", "Not authentified.")


def check_signature(
    secrets: Sequence[str],
    payload: Mapping[str, Any],
    action: Action,
    body: Mapping[str, Any],
    caller: Caller,
) -> None:
    """A request carrying ``URL-Signature`` goes ahead only when its action's HTTP method and
    path are granted by a signature that verifies (as over HTTP); 404 otherwise.
    ``URL-Methods``/``URL-Paths`` may be lists or comma-separated text."""
    raw = {str(k).lower(): v for k, v in payload["headers"].items()}
    given = raw.get("url-signature")
    if given is None:
        return
    method, _, template = (action.route or "").partition(" ")
    path = _route_path(template, body) if template else None
    if path is None or not isinstance(given, str) or not signing.verify_request(
        secrets,
        method=method,
        path=path,
        project=caller.project,
        given=given,
        methods=raw.get("url-methods", ""),
        paths=raw.get("url-paths", ""),
        expires=raw.get("url-expires"),
    ):
        raise ApiError(*SIGNATURE_REFUSED)


class Connection:
    """One client socket: its push subscriptions and its request loop."""

    def __init__(
        self,
        up: Upstreams,
        socket: ServerConnection,
        keys: signing.Keys | None = None,
        auth: KeystoneAuth | None = None,
        admin_mode: bool = False,
        limit: RateLimit | None = None,
    ) -> None:
        self.up = up
        self.limit = limit
        self.socket = socket
        # The pre-signed URL secrets, read at each request (they may be replaced).
        self.keys = keys or signing.Keys()
        # Held from reading a request to sending its answer; a push waits for it, so the
        # answer to a request always goes out before any push the request caused.
        self._turn = asyncio.Lock()
        self.watches = Watches(up, self._push)
        self.auth = auth
        # No-auth only (refused with Keystone): every caller is an admin, as over HTTP.
        self.admin_mode = admin_mode and auth is None
        self.identity: Identity | None = None
        self.token = ""
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future[None] | None = None

    async def serve(self) -> None:
        waiting: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(MAX_WAITING)
        try:
            async for data in self.socket:
                frame: frames.Frame | str | bytes
                try:
                    frame = decoded = frames.decode(data)
                    size = decoded.size
                except frames.BadFrame:
                    frame = data
                    size = len(data)
                # What the request holds counts as bytes being received until its answer is
                # sent: its payload, then its answer, which carries the request back. A
                # client that keeps requests waiting, or does not read its answers, holds
                # them (_CountingConnection).
                size *= 2
                self._counted(size)
                if isinstance(frame, frames.Frame) and _waits(frame.payload, frame.size):
                    if not await self._room(room):
                        self._counted(-size)
                        break  # closed while its waits held every place
                    task = asyncio.ensure_future(self._answer_apart(frame))
                    waiting.add(task)
                    task.add_done_callback(waiting.discard)
                    task.add_done_callback(lambda _: room.release())
                    task.add_done_callback(functools.partial(self._answered, size))
                    continue
                try:
                    async with self._turn:
                        await self.socket.send(await self.answer(frame))
                        self.watches.release()
                finally:
                    self._counted(-size)
        except ConnectionClosed:
            pass
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            if self._expiry is not None:
                self._expiry.cancel()
            await self.watches.close()

    def _counted(self, size: int) -> None:
        if isinstance(self.socket, _CountingConnection):
            self.socket.answering(size)

    def _answered(self, size: int, _: object) -> None:
        self._counted(-size)

    async def _room(self, room: asyncio.Semaphore) -> bool:
        """Take a place among the connection's :data:`MAX_WAITING` waiting requests, waiting
        for one to be answered when all are taken; False when the socket closes first."""
        if not room.locked():
            await room.acquire()
            return True
        taken = asyncio.ensure_future(room.acquire())
        closed = asyncio.ensure_future(self.socket.wait_closed())
        await asyncio.wait((taken, closed), return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if taken.done() and not taken.cancelled():
            return True
        taken.cancel()
        return False

    async def _answer_apart(self, frame: frames.Frame) -> None:
        """Answer a request that waits without holding the connection's turn meanwhile; its
        answer then takes the turn like a push (it is sent whole, between other frames)."""
        answer = await self.answer(frame)
        with contextlib.suppress(ConnectionClosed):
            async with self._turn:
                await self.socket.send(answer)

    async def _push(self, frame: str | bytes) -> None:
        async with self._turn:
            await self.socket.send(frame)

    async def answer(self, data: frames.Frame | str | bytes) -> str | bytes:
        """The answer to one request, as received or already decoded."""
        try:
            frame = data if isinstance(data, frames.Frame) else frames.decode(data)
        except frames.BadFrame as exc:
            _count(metrics.OTHER, 400)
            response = frames.response(None, 400, error_body(bad_request(str(exc))))
            return frames.encode(response, isinstance(data, bytes))
        token = REQUEST_ID.set(request_id_from(_given_request_id(frame.payload)))
        try:
            status, body = await self._run(frame)
        finally:
            REQUEST_ID.reset(token)
        name = frame.payload.get("action")
        _count(name if isinstance(name, str) and name in ACTIONS else metrics.OTHER, status)
        return frames.encode(frames.response(frame.payload, status, body), frame.binary)

    async def _run(self, frame: frames.Frame) -> tuple[int, Any]:
        payload = frame.payload
        action: Action | None = None
        try:
            name = payload.get("action")
            if name is None:
                raise bad_request('The request must have an "action".')
            action = ACTIONS.get(name) if isinstance(name, str) else None
            if action is None:
                raise bad_request(f"{name} is not a valid action")
            if frame.size > frame_max(action):
                # As the HTTP route refuses a body over its limit.
                raise bad_request(
                    f"The {name} request is too large. Max size: {frame_max(action)} "
                    f"(a body of {action.body_max} bytes, headers and envelope)."
                )
            headers = _headers(payload)
            # Keystone mode, before `authenticate`: a pre-signed request goes ahead as over
            # HTTP (its X-Project-ID, no roles, no token) when its signature grants it.
            signed = (
                self.auth is not None and name != "authenticate"
                and "url-signature" in headers and self._identity() is None
            )
            if signed:
                headers = {k: v for k, v in headers.items() if k not in _NOT_SIGNED}
            elif self.auth is not None:
                if name == "authenticate":
                    return await self._authenticate(headers)
                headers = self._authorised(headers)
            elif self.admin_mode:
                headers = {**headers, "x-roles": with_admin(headers.get("x-roles", ""))}
            caller = read_caller(lambda header: headers.get(header.lower()))
            if self.auth is not None and not signed:
                caller = dataclasses.replace(caller, token=self.token)
            body = _body(payload, name, action)
            try:
                check_signature(self.keys.verifying, payload, action, body, caller)
            except ApiError:
                if signed:
                    # No token either: as any other request before `authenticate`.
                    raise _not_authentified() from None
                raise
            if self.limit is not None:
                await self.limit.take(caller.project)
            call = Call(
                self.up, caller, headers, body, frame.binary, self.watches,
                gone=self.socket.wait_closed,
            )
            outcome = await action.handler(call)
            return outcome.status, outcome.websocket_body()
        except ApiError as err:
            failure = err
        except grpc.RpcError as exc:
            failure = api_error_from_rpc(exc, action.route if action is not None else None)
        except Exception:
            log.exception("unexpected failure on WebSocket action %r", payload.get("action"))
            failure = unavailable("The request could not be completed. Please try again later.")
        return failure.status, error_body(failure)

    async def _authenticate(self, headers: Mapping[str, str]) -> tuple[int, Any]:
        assert self.auth is not None
        try:
            token = headers.get("x-auth-token")
            identity = await self.auth.validate(token)
        except Unauthorized:
            return 401, error_body(ApiError(401, "Unauthorized", "Authentication failed."))
        except KeystoneUnavailable as exc:
            log.warning("token validation failed: %s", exc)
            return 503, error_body(unavailable("The identity service cannot be reached."))
        self.identity = identity
        self.token = token or ""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, identity.expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)
        return 200, {"message": "Authentified."}

    def _authorised(self, headers: dict[str, str]) -> dict[str, str]:
        """The request's headers with the token's project and roles (and the token, which a
        ``trust+`` subscription is created with); 403 before ``authenticate``."""
        identity = self._identity()
        if identity is None:
            raise _not_authentified()
        return {
            **headers,
            "x-auth-token": self.token,
            "x-project-id": identity.project,
            "x-roles": identity.roles_header,
        }

    def _identity(self) -> Identity | None:
        """The identity of the token this socket authenticated with, until it expires."""
        if self.identity is None or self.identity.expires_at <= time.time():
            return None
        return self.identity

    def _expired(self) -> None:
        self.identity = None
        self.token = ""
        self._closing = asyncio.ensure_future(
            self.socket.close(TOKEN_EXPIRED_CLOSE, "Token expired.")
        )


_requests: dict[tuple[str, int], Any] = {}


def _count(action: str, status: int) -> None:
    """One answered request in ``zaqar_websocket_requests`` (``services/common/metrics.py``)."""
    counter = _requests.get((action, status))
    if counter is None:
        counter = _requests[action, status] = metrics.WS_REQUESTS.labels(action, str(status))
    counter.inc()


def _only_root(socket: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != PATH:
        return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
    return None




def _admit(most: int) -> Callable[[ServerConnection, Request], Response | None]:
    """The handshake check: the path, then, when ``most`` is set, room for one more open
    connection on this server. Connections in their handshake at the same moment are not
    counted yet, so a burst of them may pass the limit by as many."""

    def admit(socket: ServerConnection, request: Request) -> Response | None:
        refused = _only_root(socket, request)
        if refused is not None or not most or len(socket.server.connections) < most:
            return refused
        body = orjson.dumps({"title": "Service Unavailable", "description": (
            f"This gateway holds its {most} WebSocket connections (ws_max_connections). "
            f"Please connect again in {FULL_RETRY_AFTER} seconds, or to another replica.")})
        return Response(503, "Service Unavailable", Headers([
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Retry-After", str(FULL_RETRY_AFTER)),
        ]), body)

    return admit


class _CountingConnection(ServerConnection):
    """A connection whose requests count in ``receiving`` from their first byte until their
    answer is sent: a frame not yet whole (the library's buffer), whole messages read ahead
    and not yet taken (at most ``max_queue``), and requests taken and not yet answered (the
    waiting ones above all, and any whose answer the client does not read). One that holds
    more than ``WS_ALLOWANCE`` and receives more while the process is past its bound is closed
    with 1013 (try again later), and what it sent is dropped. A connection that sends a small
    request at a time holds little when it sends, so it passes while the process is full.
    (Before whole messages counted, 100 connections each sending 14 requests of 900 KB and
    reading no answer took a gateway from 68 to 1,335 MB; 257 MB since.)"""

    receiving: Receiving = Receiving(0)
    said_at = -float("inf")  # when a cut-off was last logged (at most every LOG_EVERY s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = 0
        self._answering = 0  # bytes of the messages taken and not yet answered
        self._lost = False

    def answering(self, size: int) -> None:
        """``size`` bytes of a message were taken to be answered (or, negative, answered)."""
        self._answering += size
        if self.receiving.most:
            self._recount()

    def _recount(self) -> int:
        """What the connection holds now (counted in ``receiving``): a frame not yet whole,
        the frames read ahead, and the requests being answered."""
        if self._lost:
            return 0
        partial = len(self.protocol.reader.buffer)
        # The library's queue of frames read ahead (at most max_queue + 1, so cheap to sum).
        queued = sum(len(frame.data) for frame in self.recv_messages.frames.queue)
        self._hold(partial + queued + self._answering)
        return self._held

    def data_received(self, data: bytes) -> None:
        receiving = self.receiving
        if not receiving.most:
            super().data_received(data)
            return
        # A connection holding no more than a small request or a few passes, so that small
        # requests pass while the process is full. One that holds more is closed before what
        # it sent now is even parsed, or once it is.
        if not self._over(receiving):
            super().data_received(data)
            self._recount()
            if not self._over(receiving):
                return
        metrics.WS_CUT_OFF.inc()
        now = time.monotonic()
        if now - _CountingConnection.said_at >= LOG_EVERY:
            _CountingConnection.said_at = now
            log.warning("WebSocket connections closed with 1013: this gateway is receiving "
                        "%d bytes of requests at once (http_max_receiving_bytes)",
                        receiving.most)
        self.protocol.fail(CloseCode.TRY_AGAIN_LATER,
                           "the gateway is receiving too much at once; try again later")
        self.send_data()  # the close frame, then our side's end
        # What it sent and was not taken is dropped now (the protocol discards what comes
        # next); its requests being answered count until their tasks end, which they do once
        # the connection is gone: after the client's end, or LINGER s, however it reads.
        self.protocol.reader.buffer.clear()
        self.recv_messages.frames.queue.clear()
        self._recount()
        self.loop.call_later(LINGER, self.transport.abort)

    def _over(self, receiving: Receiving) -> bool:
        return (self._held > WS_ALLOWANCE and receiving.held > receiving.most
                and self.protocol.state is State.OPEN)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._hold(0)
        super().connection_lost(exc)

    def _hold(self, held: int) -> None:
        self.receiving.held += held - self._held
        self._held = held


def _counting(receiving: Receiving) -> type[ServerConnection]:
    return type("CountingConnection", (_CountingConnection,), {"receiving": receiving})


async def start(
    settings: Settings,
    up: Upstreams,
    auth: KeystoneAuth | None = None,
    limit: RateLimit | None = None,
    keys: signing.Keys | None = None,
    receiving: Receiving | None = None,
) -> Server:
    """Listen on ``settings.host:settings.ws_port`` (0 = any free port). ``auth``: the token
    validator in keystone mode (one is made when not given); ``limit``: the requests-per-project
    limit shared with the HTTP app (by default the settings' own, if any); ``keys``: the
    pre-signed URL secrets shared with the HTTP app (by default the settings' own);
    ``receiving``: the count of bytes being received shared with the HTTP server (by default
    one of its own, bounded by the settings)."""
    if keys is None:
        keys = signing.Keys.from_settings(settings)
    check_limits(settings, "gateway")
    most = settings.ws_max_connections
    if limit is None:
        limit = rate_limit.from_settings(settings)
    if auth is None and settings.auth_strategy == "keystone":
        auth = KeystoneAuth(settings)

    async def handler(socket: ServerConnection) -> None:
        metrics.WS_CONNECTIONS.inc()
        try:
            await Connection(up, socket, keys, auth, settings.admin_mode, limit).serve()
        finally:
            metrics.WS_CONNECTIONS.dec()

    return await serve(
        handler,
        settings.host,
        settings.ws_port,
        process_request=_admit(most),
        create_connection=_counting(receiving or Receiving(settings.http_max_receiving_bytes)),
        max_size=MAX_FRAME,
        max_queue=READ_AHEAD,
        # No permessage-deflate: a chunk of a few KiB on the wire could otherwise carry
        # megabytes of frames (14 frames of 900 KB in one 14 KB read), all inflated before any
        # bound can look at them; and each connection would keep a zlib context (tens of KiB).
        # The extension is optional: a client that offers it is answered without it.
        compression=None,
        server_header=None,
    )


def bound_port(server: Server) -> int:
    for sock in server.sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("the WebSocket server is not listening")
