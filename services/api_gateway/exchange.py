"""The gateway's one long-lived ``MessagesInternal.Exchange`` stream to message_svc.

A unary gRPC call in Python costs ~250-450 µs of CPU on each side (call set-up, metadata,
the completion queue's hand-offs between gRPC's poller thread and the event loop); a message
on a stream already open costs about a third of that, and answers sooner. So the gateway
sends its calls to message_svc as :class:`~zaqar_grpc.v2.messages_pb2.ExchangeRequest`\\ s on
one stream (``coalesce.py`` decides which calls go together), each with an id, and a reader
task hands each answer to the caller waiting for that id.

- **Deadlines.** Each request carries its caller's timeout (``timeout_ms``, which message_svc
  enforces too); when it passes, the caller fails with DEADLINE_EXCEEDED, as a unary call does.
  A caller that gives up (cancelled) leaves its request to run to its end; the answer is
  dropped.
- **Failures.** When the stream fails (message_svc restarted, the connection broke), every
  request waiting on it fails with the stream's status (UNAVAILABLE, ...), as the unary calls
  in flight would; the next call opens a new stream. A request whose write fails was never
  sent: it fails with :class:`NotSent`, which its caller may send again without doing it twice.
- **Draining.** A message_svc process that begins to stop says so on the stream
  (``draining``): a new stream takes the new requests at once and the old one is closed, and
  ends once its requests are answered, so the process need not wait out its grace. The new
  stream waits for a replica ready to take it (``wait_for_ready``: the channel's other
  connections may be waiting out a reconnect's back-off), rather than failing at once, and
  each request's write waits no longer than its timeout. Closed before anything was written
  on it, such a stream is cancelled (ending its side would wait for a replica, too).
- **Stalls.** A message_svc replica that hangs (stopped, deadlocked, cut off by the network)
  keeps its connection open and answers nothing, and gRPC's keepalive takes 10 to 40 s to
  find the connection dead. So when a request's deadline passes and the stream has answered
  nothing since that request was written, at least :data:`STALL_AFTER` seconds ago, or the
  request could not even be written within its deadline (the replica reads nothing, and the
  stream's flow-control window is full), new requests go on a new stream, which the channel
  balances over the replicas as it does any new call, and the silent one is closed: the
  requests still on it keep their own deadlines, and get their answers if the replica wakes
  in time. A request's write never outlasts its deadline (a write cut short cancels the
  stream, which fails the requests on it).
- **Rotation.** A stream is replaced by a new one for new requests after
  :data:`ROTATE_AFTER` seconds; the old one is closed (its side ended) and ends once its
  requests are answered. So the connection message_svc ends after ``max_connection_age``
  is let go, and a new stream is balanced over the replicas the channel knows, as unary
  calls are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc
from zaqar_grpc.v2 import messages_pb2

from services.common import metrics

log = logging.getLogger(__name__)

EXCHANGE: Final = "/zaqar.v2.MessagesInternal/Exchange"
# Seconds after which new requests go on a new stream.
ROTATE_AFTER: Final = 60.0
# Seconds a stream must have been silent, with a request's deadline passed, to be left for a
# new one (a short deadline passing does not say that message_svc hangs).
STALL_AFTER: Final = 1.0
# Seconds closing waits for the streams' answers (the HTTP server has answered its requests
# by then: only a stream waiting for a replica that never comes should be left).
CLOSE_WAIT: Final = 10.0

_Results = Sequence[messages_pb2.BatchResult]


def deadline_exceeded() -> grpc.aio.AioRpcError:
    """The error a unary call raises when its deadline passes."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(),
        details="Deadline Exceeded",
    )


class NotSent(grpc.aio.AioRpcError):
    """The stream ended before a request was written, so message_svc never saw it; the code
    and details are the stream's (UNIMPLEMENTED from a message_svc without ``Exchange``).

    gRPC reports a write that races the stream's end as INTERNAL, and then gives INTERNAL as
    the call's status too, so the code may not say why the stream ended."""

    @classmethod
    async def of(cls, call: Any) -> NotSent:
        """The error for a write to ``call`` that failed; it does not wait for the call."""
        code = await call.code() if call.done() else grpc.StatusCode.OK
        if code == grpc.StatusCode.OK:
            # Our side was closed (rotation), the stream ending or ended well: as _ended
            ended = _ended()
            return cls(ended.code(), ended.initial_metadata(), ended.trailing_metadata(),
                       ended.details())
        return cls(code, await call.initial_metadata(), await call.trailing_metadata(),
                   await call.details())


def _ended() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
        details="message_svc ended the stream before answering",
    )


def _copy(exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    # One exception object per caller: a raised exception collects its raiser's traceback.
    return grpc.aio.AioRpcError(
        exc.code(), exc.initial_metadata(), exc.trailing_metadata(), exc.details(),
        exc.debug_error_string(),
    )


class _Stream:
    """One open ``Exchange`` call, its requests waiting for answers and its reader."""

    def __init__(self, call: Any, opened: float,
                 on_draining: Callable[[_Stream], None] | None = None,
                 waits_for_ready: bool = False) -> None:
        """``on_draining``: called when message_svc says it is stopping;
        ``waits_for_ready``: the call was opened with ``wait_for_ready`` (a write waits until
        a replica takes the stream)."""
        self.call = call
        self.opened = opened
        self.waiting: dict[int, asyncio.Future[_Results]] = {}
        self.writing = asyncio.Lock()
        self.failed: grpc.aio.AioRpcError | None = None
        self.draining = False
        self.stalled = False  # answered nothing while a request's deadline passed
        self.answered = opened  # loop time of the last message read from message_svc
        self.written = False  # a request was written (the stream reached a replica)
        self.waits_for_ready = waits_for_ready
        self._on_draining = on_draining
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        failure: grpc.aio.AioRpcError = _ended()
        loop = asyncio.get_running_loop()
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    break
                self.answered = loop.time()
                if response.draining:
                    self.draining = True
                    if self._on_draining is not None:
                        self._on_draining(self)
                    continue
                future = self.waiting.pop(response.id, None)
                if future is not None and not future.done():
                    future.set_result(response.results)
        except grpc.aio.AioRpcError as exc:
            failure = exc
        except asyncio.CancelledError:
            failure = _ended()
            raise
        finally:
            self.failed = failure
            waiting, self.waiting = self.waiting, {}
            for future in waiting.values():
                if not future.done():
                    future.set_exception(_copy(failure))

    async def close(self) -> None:
        """End our side (message_svc then answers what it has and ends the stream).

        A stream opened with ``wait_for_ready`` that has had no request written is cancelled
        instead: ending its side would wait for a replica to take it first, which may never
        come, and nothing was sent on it."""
        try:
            async with self.writing:
                if self.waits_for_ready and not self.written:
                    self.call.cancel()
                    return
                await self.call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass


class Exchange:
    """Requests to message_svc over one ``MessagesInternal.Exchange`` stream at a time
    (module docstring)."""

    def __init__(self, stub: Any) -> None:
        """``stub``: a ``MessagesInternal`` stub (its ``Exchange`` opens a stream)."""
        self._open = stub.Exchange
        self._stream: _Stream | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._calls = metrics.MethodCalls(
            EXCHANGE, metrics.GRPC_CLIENT_HANDLED, metrics.GRPC_CLIENT_SECONDS
        )

    def _current(self, now: float) -> _Stream:
        stream = self._stream
        if (stream is not None and stream.failed is None and not stream.draining
                and not stream.stalled and now - stream.opened < ROTATE_AFTER):
            return stream
        if stream is not None:
            self._retire(stream)
        stream = self._stream = _Stream(self._open(), now, self._draining)
        return stream

    def _check_stalled(self, stream: _Stream, written: float, now: float) -> None:
        """A request written on ``stream`` at ``written`` is past its deadline: if nothing has
        come from message_svc since, for :data:`STALL_AFTER` seconds at least, new requests
        go on a new stream and this one is closed."""
        if stream.answered > written or now - written < STALL_AFTER:
            return
        self._stalled(stream, "silent",
                      f"it has answered nothing for {now - stream.answered:.1f} s")

    def _stalled(self, stream: _Stream, kind: str, why: str) -> None:
        """``stream`` seems to reach a replica that hangs (``kind``: silent or unwritten;
        ``why`` says it in words): new requests go on a new stream, and this one is closed."""
        if stream.stalled or stream.failed is not None:
            return
        stream.stalled = True
        metrics.EXCHANGE_STREAMS_LEFT.labels(kind).inc()
        log.warning(
            "message_svc's Exchange stream seems to hang: %s while a request's deadline "
            "passed. New requests go on a new stream (the channel's next replica), and this "
            "one is closed once its requests are answered or expire", why)
        if self._stream is stream:
            self._stream = None
            self._retire(stream)

    def _draining(self, stream: _Stream) -> None:
        """message_svc is stopping: new requests go on a new stream, which waits for a ready
        replica, and this one is closed."""
        if self._stream is stream:
            self._stream = _Stream(self._open(wait_for_ready=True),
                                   asyncio.get_running_loop().time(), self._draining,
                                   waits_for_ready=True)
            self._retire(stream)

    def _retire(self, stream: _Stream) -> None:
        task = asyncio.ensure_future(self._close(stream))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close(self, stream: _Stream) -> None:
        await stream.close()
        await asyncio.gather(stream.reader, return_exceptions=True)

    async def call(
        self,
        items: Sequence[messages_pb2.BatchItem],
        timeout: float | None,  # noqa: ASYNC109 - a gRPC call's timeout, carried on
        request_ids: Sequence[str],
    ) -> _Results:
        """The results of ``items``, one per item in their order.

        Raises:
            NotSent: the stream had ended before the items were written.
            grpc.aio.AioRpcError: the stream failed (every item failed alike), or the
                deadline passed (DEADLINE_EXCEEDED).
        """
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        stream = self._current(loop.time())
        request_id = next(self._ids)
        request = messages_pb2.ExchangeRequest(id=request_id, items=items)
        if timeout is not None:
            request.timeout_ms = max(1, round(timeout * 1000))
        if any(request_ids):
            request.request_ids.extend(request_ids)
        future: asyncio.Future[_Results] = loop.create_future()
        stream.waiting[request_id] = future
        deadline = timer = None
        if timeout is not None:
            deadline = _Deadline(future, asyncio.current_task())
            timer = loop.call_later(timeout, deadline.passed)
        code = "OK"
        written = None
        try:
            try:
                # The write waits no longer than the deadline: for a replica to take a stream
                # opened with wait_for_ready, or for a replica that does not read to take
                # what is written before it (the stream's flow-control window is full)
                await _send(stream, request, future)
            except asyncio.CancelledError:
                if deadline is not None and deadline.cut():
                    raise TimeoutError from None
                raise
            if deadline is not None:
                deadline.sent = True
            written = loop.time()
            return await future
        except TimeoutError:
            # Its write waited past its deadline: as a unary call would
            code = "DEADLINE_EXCEEDED"
            if future.done() and not future.cancelled():
                future.exception()  # its timer's, for the same deadline
            if not stream.waits_for_ready:
                self._stalled(stream, "unwritten",
                              "its requests could not be written for the deadline")
            raise deadline_exceeded() from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                if stream.failed is None:
                    stream.failed = exc  # a write failed: the next call opens a new stream
            elif written is not None:
                self._check_stalled(stream, written, loop.time())
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if timer is not None:
                timer.cancel()
            stream.waiting.pop(request_id, None)
            self._calls.done(code, time.perf_counter() - start)

    async def close(self) -> None:
        """Close the stream, letting its requests be answered first, for at most
        :data:`CLOSE_WAIT` seconds (a stream waiting for a replica may never get one); the
        channel's close then ends what is left."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._retire(stream)
        if self._retired:
            _, left = await asyncio.wait(self._retired, timeout=CLOSE_WAIT)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)


async def _send(stream: _Stream, request: messages_pb2.ExchangeRequest,
                future: asyncio.Future[_Results]) -> None:
    """Write ``request`` on ``stream``; its answer settles ``future``.

    Raises:
        NotSent: the stream had ended (message_svc stopping, or not serving Exchange) before
            the write: the request was never sent.
    """
    async with stream.writing:
        try:
            await stream.call.write(request)
            stream.written = True
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            if future.done() and not future.cancelled():
                future.exception()  # the reader failed it too; NotSent says more
            raise await NotSent.of(stream.call) from None


class _Deadline:
    """What a request's deadline does when it passes: fails the caller waiting for its answer
    (DEADLINE_EXCEEDED), or cancels the caller still waiting to write it (``call`` turns
    that into DEADLINE_EXCEEDED). One timer per request, as ``asyncio.timeout`` would add a
    second."""

    __slots__ = ("_cancelled", "_future", "_task", "sent")

    def __init__(self, future: asyncio.Future[_Results], task: asyncio.Task[Any] | None) -> None:
        self._future = future
        self._task = task
        self._cancelled = False
        self.sent = False  # the request is written: its caller waits for the answer

    def passed(self) -> None:
        if not self.sent and self._task is not None:
            self._cancelled = True
            self._task.cancel()
        elif not self._future.done():
            self._future.set_exception(deadline_exceeded())

    def cut(self) -> bool:
        """Whether the write was cut short by the deadline alone (not also cancelled by
        its caller), its cancellation taken back."""
        return self._cancelled and self._task is not None and self._task.uncancel() == 0
