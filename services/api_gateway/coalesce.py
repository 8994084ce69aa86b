"""Coalescing the gateway's calls to message_svc into ``MessagesInternal.Batch``.

A unary gRPC call costs ~140 µs of CPU on each side in Python, more than the store work of a
post or a claim; under load, the gateway sends the requests it holds together in one call.

:class:`CoalescingMessages` stands in for the ``zaqar.v2.Messages`` stub (same methods, same
awaitables, same ``grpc.RpcError`` failures):

- a call goes out at once, alone and as its own unary ``Messages`` call (exactly as without
  coalescing), while fewer than a limit of requests to message_svc are in flight (alone or in
  batches);
- otherwise it waits, and the waiting calls go in one ``Batch`` (at most ``max_items`` items)
  as soon as a call returns and leaves fewer than the limit in flight, or at once when
  ``max_items`` are waiting.

The limit (:class:`Window`) starts at ``in_flight`` (1: wait whenever anything is in flight)
and adapts. When waiting gathers nothing — three times in a row the waiting calls go one at a
time, as two clients do when they fall into lockstep, each waiting for the other's call — it
rises by one; after every batch it comes down by one; and after a second in which nothing
waited it drops back to ``in_flight``, to find out whether waiting pays again.

So at low load nothing waits (or, after such a probe, a few calls a second), and under load a
request waits at most for calls that were already in flight, and never longer than
:data:`MAX_WAIT`: a call in flight that is slow (a store that takes seconds to answer or to
fail) does not hold back the calls behind it. When the first of the waiting calls has waited
that long (``message_batch_wait``), they all go at once, in a call of their own, beside the
slow one.

Each item keeps its deadline: a waiting item fails with DEADLINE_EXCEEDED when its deadline
passes, a batch's deadline is the earliest of its items', and an item whose caller gave up
(cancelled) before it was sent is dropped. An item already sent runs to its end in
message_svc (its answer is dropped). Results and failures are those of the single call: a
failed item raises a ``grpc.aio.AioRpcError`` carrying the item's status code, message and
``grpc-status-details-bin`` (ErrorInfo), which the gateway's one status table maps as it maps
a failed single call; a failed ``Batch`` call fails each of its items alike.

With an :class:`~services.api_gateway.exchange.Exchange` (``message_stream``, the default),
both kinds of call go as requests on its stream instead of unary ``Messages`` and ``Batch``
calls, with the same results and failures; a call with options of its own, and every call
while tracing is on, still goes as a unary call. A message_svc that does not serve
``Exchange`` (an older version) gets unary calls for a minute, then the stream is tried again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.rpc import status_pb2
from zaqar_grpc.v2 import messages_pb2

from services.api_gateway.exchange import Exchange, NotSent, deadline_exceeded
from services.common import metrics, tracing
from services.common.config import ConfigurationError
from services.common.errors import status_code
from services.common.logs import BATCH_REQUEST_IDS_KEY, REQUEST_ID

log = logging.getLogger(__name__)

# The most items message_svc takes in one Batch (services/message_svc/batch.py:MAX_ITEMS).
MAX_ITEMS: Final = 256
# The most request bytes one Batch carries, well under what message_svc receives (16 MiB); a
# larger request goes alone.
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024

_DETAILS_KEY: Final = "grpc-status-details-bin"
# The longest such value sent: a larger batch goes without (its items' logs show no id).
MAX_REQUEST_IDS_BYTES: Final = 4096

# Messages method -> BatchItem field of its request.
ITEM_FIELDS: Final = {
    "PostMessages": "post_messages",
    "ListMessages": "list_messages",
    "GetMessage": "get_message",
    "GetMessages": "get_messages",
    "DeleteMessage": "delete_message",
    "DeleteMessages": "delete_messages",
    "PopMessages": "pop_messages",
    "CreateClaim": "create_claim",
    "GetClaim": "get_claim",
    "UpdateClaim": "update_claim",
    "DeleteClaim": "delete_claim",
    "GetStats": "get_stats",
}

# What an item without a proper result fails with (message_svc answered a malformed batch).
_NO_RESULT: Final = status_pb2.Status(
    code=grpc.StatusCode.UNAVAILABLE.value[0], message="message_svc gave no result for the call"
)

_CLOSING: Final = status_pb2.Status(
    code=grpc.StatusCode.UNAVAILABLE.value[0], message="The gateway is shutting down"
)

# Seconds before a gateway whose message_svc answered Batch with UNIMPLEMENTED (an older
# version, during a rolling upgrade) tries Batch again; meanwhile every call goes alone.
_RETRY_BATCH_AFTER: Final = 60.0
# The longest a call waits for the calls in flight by default (module docstring): far above a
# batch's round trip under load (1-5 ms on two cores), far below a store's timeouts (seconds).
MAX_WAIT: Final = 0.025
# Bounds of message_batch_wait, in seconds.
MAX_WAIT_RANGE: Final = (0.001, 60.0)
# A waiting caller's future and what to settle it with: an answer, or the exception to raise.
_Outcome = tuple[asyncio.Future[Any], Any]


@dataclass(slots=True)
class _Waiting:
    method: str
    request: Any
    deadline: float | None
    future: asyncio.Future[Any]
    size: int
    timer: asyncio.TimerHandle | None = None
    request_id: str | None = None


@dataclass(slots=True)
class CallStats:
    """What went to message_svc: requests (and how many of them waited for a window), and
    the calls that carried them."""

    requests: int = 0
    waited: int = 0
    alone: int = 0
    batches: int = 0
    batched: int = 0
    largest: int = 0
    # Times the waiting calls went after their longest wait, not when a call in flight returned.
    overdue: int = 0

    def line(self) -> str:
        calls = self.alone + self.batches
        mean = self.batched / self.batches if self.batches else 0.0
        per_call = self.requests / calls if calls else 0.0
        return (
            f"{self.requests} requests to message_svc in {calls} calls "
            f"({per_call:.2f} per call; {self.waited} waited): {self.alone} alone, "
            f"{self.batches} batches of {mean:.2f} items on average (largest {self.largest}); "
            f"{self.overdue} times the waiting calls went without waiting any longer"
        )


def rpc_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    """The error a single call failing with ``status`` raises (code, message, details)."""
    trailing = grpc.aio.Metadata((_DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(
        status_code(status.code), grpc.aio.Metadata(), trailing, details=status.message
    )


def _copy(exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    # One exception object per caller: a raised exception collects its raiser's traceback.
    return grpc.aio.AioRpcError(
        exc.code(), exc.initial_metadata(), exc.trailing_metadata(), exc.details(),
        exc.debug_error_string(),
    )


class Window:
    """How many requests may be in flight before further calls wait (module docstring)."""

    # Single-call flushes in a row after which the limit rises.
    LONELY_RUN: Final = 3
    # Seconds without a waiting call after which a raised limit drops back to find out
    # whether waiting pays again.
    PROBE_AFTER: Final = 1.0
    CEILING: Final = 64

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.limit = floor
        self._lonely = 0
        self._since = 0.0

    def go_now(self, in_flight: int, now: float) -> bool:
        """Whether a call arriving at ``now`` goes at once (else it waits)."""
        if self.limit > self.floor and now - self._since > self.PROBE_AFTER:
            self.limit = self.floor
        if in_flight < self.limit:
            return True
        self._since = now
        return False

    def flushed(self, calls: int) -> None:
        """Waiting calls went: ``calls`` of them in one call."""
        if calls > 1:
            self._lonely = 0
            self.limit = max(self.floor, self.limit - 1)
            return
        self._lonely += 1
        if self._lonely >= self.LONELY_RUN:
            self._lonely = 0
            self.limit = min(self.CEILING, self.limit + 1)


@dataclass(slots=True)
class _State:
    in_flight: int = 0
    waiting: list[_Waiting] = field(default_factory=list)
    # Sends what waits once the first of it has waited its longest; None while nothing waits.
    overdue: asyncio.TimerHandle | None = None
    sending: set[asyncio.Task[None]] = field(default_factory=set)
    batch_retry_at: float = 0.0
    exchange_retry_at: float = 0.0


def check_batch_settings(max_items: int, in_flight: int, max_wait: float = MAX_WAIT) -> None:
    """Raises ConfigurationError when ``message_batch_max`` / ``message_batch_in_flight`` /
    ``message_batch_wait`` are out of range."""
    low, high = MAX_WAIT_RANGE
    if not low <= max_wait <= high:
        raise ConfigurationError(
            f"message_batch_wait must be between {low} and {high} seconds, not {max_wait}"
        )
    if not 2 <= max_items <= MAX_ITEMS:
        raise ConfigurationError(
            f"message_batch_max must be between 2 and {MAX_ITEMS}, not {max_items}"
        )
    if in_flight < 1:
        raise ConfigurationError(f"message_batch_in_flight must be ≥ 1, not {in_flight}")


class CoalescingMessages:
    """The ``zaqar.v2.Messages`` stub of the gateway, coalescing concurrent calls (module
    docstring). Each method takes ``(request, timeout=None, **options)`` like the stub's; a
    call with options (``metadata=...``) always goes alone."""

    def __init__(
        self, messages: Any, internal: Any, *, max_items: int = 32, in_flight: int = 1,
        exchange: Exchange | None = None, max_wait: float = MAX_WAIT,
    ) -> None:
        """``messages``, ``internal``: the ``Messages`` and ``MessagesInternal`` stubs of one
        channel. ``max_items``: the most items of one Batch (2..256); ``in_flight``: requests
        in flight from which further calls wait, at least (≥ 1; :class:`Window`);
        ``max_wait``: the longest a call waits for them, in seconds (module docstring).
        ``exchange``: the stream the calls go on (module docstring); None: unary calls."""
        check_batch_settings(max_items, in_flight, max_wait)
        self._max_wait = max_wait
        self._messages = messages
        self._batch_call = internal.Batch
        self._exchange = exchange
        self._max_items = max_items
        self.window = Window(in_flight)
        self._state = _State()
        self.stats = CallStats()
        for method in ITEM_FIELDS:
            setattr(self, method, functools.partial(self._call, method))

    def __getattr__(self, name: str) -> Any:
        # Anything not coalesced (there is nothing else today) goes to the stub itself.
        return getattr(self._messages, name)

    async def _call(
        self,
        method: str,
        request: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the stub's signature
        **options: Any,
    ) -> Any:
        state = self._state
        self.stats.requests += 1
        loop = asyncio.get_running_loop()
        # A call with options of its own (metadata, ...) cannot share a Batch: it goes alone.
        if options or self.window.go_now(state.in_flight, loop.time()) or not self._batching():
            self.stats.alone += 1
            state.in_flight += 1
            try:
                if options or not self._streaming():
                    response = await getattr(self._messages, method)(
                        request, timeout=timeout, **options
                    )
                else:
                    response = await self._single(method, request, timeout, REQUEST_ID.get())
            finally:
                state.in_flight -= 1
                sent = self._window_closed()
            if sent:
                # The call just started for what waited writes its request before this
                # caller goes on to answer its own (see _send's release).
                await asyncio.sleep(0)
            return response
        self.stats.waited += 1
        waiting = _Waiting(method, request, None, loop.create_future(), request.ByteSize(),
                           request_id=REQUEST_ID.get())
        if timeout is not None:
            waiting.deadline = loop.time() + timeout
            waiting.timer = loop.call_at(waiting.deadline, self._expire, waiting)
        state.waiting.append(waiting)
        if state.overdue is None:
            state.overdue = loop.call_later(self._max_wait, self._overdue)
        if len(state.waiting) >= self._max_items:
            self._send_waiting()
        return await waiting.future

    def _batching(self) -> bool:
        retry_at = self._state.batch_retry_at
        return not retry_at or asyncio.get_running_loop().time() >= retry_at

    def _streaming(self) -> bool:
        """Whether calls go on the stream now."""
        if self._exchange is None or tracing.ENABLED:
            return False
        retry_at = self._state.exchange_retry_at
        return not retry_at or asyncio.get_running_loop().time() >= retry_at

    async def _exchanged(
        self, requests: list[tuple[str, Any]], timeout: float | None,  # noqa: ASYNC109
        request_ids: list[str],
    ) -> Any:
        """The results of ``requests`` ((method, request) pairs) on the stream; None when
        message_svc does not serve it (then unary calls go for a while), or when the stream
        ended before they were sent (then they go as unary calls this once).

        Raises:
            grpc.aio.AioRpcError: the stream failed, or the deadline passed.
        """
        assert self._exchange is not None
        items = [messages_pb2.BatchItem(**{ITEM_FIELDS[method]: request})
                 for method, request in requests]
        try:
            return await self._exchange.call(items, timeout, request_ids)
        except NotSent as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                # The stream ended before they were written (message_svc stopping, or a write
                # that raced the end, which gRPC reports as INTERNAL): they go once as unary
                # calls, on the channel's other connections or replicas.
                return None
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        if not self._state.exchange_retry_at:
            log.warning("message_svc does not serve MessagesInternal.Exchange (an older "
                        "version?): unary calls for %.0f s", _RETRY_BATCH_AFTER)
        self._state.exchange_retry_at = asyncio.get_running_loop().time() + _RETRY_BATCH_AFTER
        return None

    async def _single(
        self,
        method: str,
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - the call's timeout, carried on
        request_id: str | None,
    ) -> Any:
        """One call on the stream (unary when message_svc does not serve it)."""
        results = await self._exchanged([(method, request)], timeout, [request_id or ""])
        if results is None:
            return await getattr(self._messages, method)(request, timeout=timeout)
        return _outcome(results[0] if len(results) == 1 else None)

    def _expire(self, waiting: _Waiting) -> None:
        if not waiting.future.done():
            waiting.future.set_exception(deadline_exceeded())

    def _overdue(self) -> None:
        """The first of the waiting calls has waited its longest: all of them go now."""
        state = self._state
        state.overdue = None
        if state.waiting:
            self.stats.overdue += 1
        while state.waiting:
            self._send_waiting()

    def _window_closed(self) -> bool:
        """A call returned: send what waits, as long as fewer requests than the limit are in
        flight. Whether a call was started."""
        state = self._state
        started = False
        while state.waiting and state.in_flight < self.window.limit:
            started = self._send_waiting() or started
        return started

    def _send_waiting(self) -> bool:
        """Start one call with the oldest waiting items (up to ``max_items`` and
        :data:`MAX_BATCH_BYTES`); False when all of them had given up."""
        state = self._state
        count, size = 0, 0
        for waiting in state.waiting[: self._max_items]:
            size += waiting.size
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        taken, state.waiting = state.waiting[:count], state.waiting[count:]
        if not state.waiting and state.overdue is not None:
            state.overdue.cancel()
            state.overdue = None
        live = []
        for waiting in taken:
            if waiting.timer is not None:
                waiting.timer.cancel()
            if not waiting.future.done():
                live.append(waiting)
        if not live:
            return False
        self.window.flushed(len(live))
        state.in_flight += len(live)
        task = asyncio.ensure_future(self._send(live))
        state.sending.add(task)
        task.add_done_callback(state.sending.discard)
        return True

    async def _send(self, items: list[_Waiting]) -> None:
        # This task was started by whichever request's call closed the window: each call
        # carries the ids of its own items' requests (_send_alone, _send_batch).
        REQUEST_ID.set(None)
        outcomes: list[_Outcome] = []
        try:
            if len(items) == 1:
                self.stats.alone += 1
                outcomes = await self._send_alone(items[0])
            else:
                self.stats.batches += 1
                self.stats.batched += len(items)
                self.stats.largest = max(self.stats.largest, len(items))
                metrics.BATCH_SIZE.observe(len(items))
                outcomes = await self._send_batch(items)
        finally:
            # The answer is in: what waits goes now, before the answered requests' own tasks
            # run (their HTTP answers are written while message_svc serves the next batch,
            # not before it is sent).
            self._state.in_flight -= len(items)
            self._window_closed()
        for future, outcome in outcomes:
            _settle(future, outcome)

    async def _send_alone(self, item: _Waiting) -> list[_Outcome]:
        """The item as its own call; its outcome, to settle."""
        REQUEST_ID.set(item.request_id)
        try:
            timeout = self._timeout([item])
            if self._streaming():
                response = await self._single(item.method, item.request, timeout,
                                              item.request_id)
            else:
                response = await getattr(self._messages, item.method)(
                    item.request, timeout=timeout
                )
        except asyncio.CancelledError:
            item.future.cancel()
            raise
        except Exception as exc:
            return [(item.future, exc)]
        return [(item.future, response)]

    async def _send_batch(self, items: list[_Waiting]) -> list[_Outcome]:
        """The items in one call; their outcomes, to settle (none left when message_svc
        does not serve batches: each item then went alone and is settled)."""
        try:
            results = None
            if self._streaming():
                results = await self._exchanged(
                    [(item.method, item.request) for item in items], self._timeout(items),
                    [item.request_id or "" for item in items],
                )
            if results is None:
                request = messages_pb2.BatchRequest()
                for item in items:
                    getattr(request.items.add(), ITEM_FIELDS[item.method]).CopyFrom(item.request)
                results = (await self._batch_call(
                    request, timeout=self._timeout(items), metadata=_request_ids(items)
                )).results
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                await self._without_batch(items)
                return []
            return [(item.future, _copy(exc)) for item in items]
        except Exception as exc:
            return [(item.future, exc) for item in items]
        if len(results) != len(items):
            log.error("message_svc answered a batch of %d with %d results",
                      len(items), len(results))
            return [(item.future, rpc_error(_NO_RESULT)) for item in items]
        outcomes: list[_Outcome] = []
        for item, result in zip(items, results, strict=True):
            try:
                outcomes.append((item.future, _outcome(result)))
            except grpc.aio.AioRpcError as exc:
                outcomes.append((item.future, exc))
        return outcomes

    async def _without_batch(self, items: list[_Waiting]) -> None:
        """Each item as its own call, settled as soon as it is answered."""
        loop = asyncio.get_running_loop()
        if not self._state.batch_retry_at:
            log.warning("message_svc does not serve MessagesInternal.Batch (an older "
                        "version?): calls go one by one for %.0f s", _RETRY_BATCH_AFTER)
        self._state.batch_retry_at = loop.time() + _RETRY_BATCH_AFTER

        async def alone(item: _Waiting) -> None:
            for future, outcome in await self._send_alone(item):
                _settle(future, outcome)

        await asyncio.gather(*(alone(item) for item in items))

    def _timeout(self, items: list[_Waiting]) -> float | None:
        deadlines = [item.deadline for item in items if item.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - asyncio.get_running_loop().time())

    async def close(self) -> None:
        """Fail what still waits (the channel is closing) and wait for the calls sent."""
        state = self._state
        waiting, state.waiting = state.waiting, []
        if state.overdue is not None:
            state.overdue.cancel()
            state.overdue = None
        for item in waiting:
            if item.timer is not None:
                item.timer.cancel()
            _settle(item.future, rpc_error(_CLOSING))
        if state.sending:
            await asyncio.gather(*state.sending, return_exceptions=True)
        if self._exchange is not None:
            await self._exchange.close()
        if self.stats.requests:
            log.info("%s", self.stats.line())


def _request_ids(items: list[_Waiting]) -> tuple[tuple[str, str], ...] | None:
    """The metadata that gives message_svc the request id of each item of a Batch
    (:data:`BATCH_REQUEST_IDS_KEY`), unless none has one or they would make the call's
    metadata too large (gRPC takes 8 KiB of it by default)."""
    ids = [item.request_id or "" for item in items]
    if not any(ids) or len(ids) * 41 > MAX_REQUEST_IDS_BYTES:
        return None
    return ((BATCH_REQUEST_IDS_KEY, ",".join(ids)),)


def _outcome(result: messages_pb2.BatchResult | None) -> Any:
    """The response an item's result holds; raises the error it holds, as the call would."""
    kind = None if result is None else result.WhichOneof("result")
    if kind is None or result is None:
        raise rpc_error(_NO_RESULT)
    if kind == "error":
        raise rpc_error(result.error)
    return getattr(result, kind)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return  # its caller gave up waiting, or its deadline passed
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

