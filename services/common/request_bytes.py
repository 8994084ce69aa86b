"""The bytes of requests a gRPC service process holds, bounded.

A unary call holds its request from the moment gRPC hands it over until the call ends; a
caller that sends many large requests while the store is slow (or one that sends many at
once) makes a process hold all of them. Measured before this bound: 400 concurrent
``PostMessages`` of 8 MB each, sent straight to message_svc's port, took it to 2.1 GB of RSS.

:class:`ReceivingInterceptor`, on every server (``grpc_server.create_server``), counts the
wire size of each request of a unary-unary or unary-stream call from when it is read until the
call (or the stream) ends, in one count per process, :class:`Receiving`. Its rule:

- a request of at most :data:`ALLOWANCE` bytes (64 KiB) is always taken, so that the small
  calls (long polls, deletes, listings) go on while the process is full;
- a larger one is taken if the process then holds at most ``grpc_max_receiving_bytes``, or if
  no other request larger than the allowance is held (one request of any size the server
  accepts always gets through, even under a bound set lower than it);
- otherwise the call is refused at once with UNAVAILABLE, reason ``RECEIVING_FULL`` (503
  through the gateway), before its method runs: nothing is done for it, and the caller may
  send it again (to another replica, or a moment later).

Streams of requests (``MessagesInternal.Exchange``, the gateway's coalesced calls) are not
counted here: each gateway bounds what it has in flight on them (``coalesce.py``).

The wire size is read in the request's deserializer, which gRPC calls in the call's own task
just before the method; it reaches the method's wrapper through a context variable, so a call
that ends before its method runs counts nothing.

The same deserializer refuses a request that is not a valid message of its type (random bytes,
a message cut short, a field of the wrong wire type): the call ends INVALID_ARGUMENT, "The
request is not a valid zaqar.v2.PostMessagesRequest message.", before it is counted and before
its method runs. Left to gRPC, such a request was answered UNKNOWN with protobuf's own error
and logged as an unexpected exception with its traceback. A stream of requests gets the same
answer: its handler's deserializer is wrapped as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from services.common.errors import InvalidArgument, ReceivingFull, to_status
from services.common.grpc_types import (
    Context,
    MethodHandler,
    MethodWrapping,
    StreamStream,
    UnaryStream,
    UnaryUnary,
    aio_stream_stream,
    rewrapped,
    stream_within,
)
from services.common.metrics import GRPC_RECEIVING_BYTES, GRPC_RECEIVING_REFUSED

ALLOWANCE: Final = 64 * 1024

# The wire size of the request the current call's deserializer was given.
_SIZE: ContextVar[int] = ContextVar("request_wire_size", default=0)


class Receiving:
    """One process's count of the request bytes its calls hold, and its bound (0: none)."""

    __slots__ = ("held", "large", "most")

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0
        self.large = 0  # requests held over ALLOWANCE

    def take(self, size: int, service: str) -> None:
        """Count a request of ``size`` bytes, or refuse it.

        Raises:
            ReceivingFull: the rule of the module's docstring refuses it.
        """
        large = size > ALLOWANCE
        if large and self.most and self.large and self.held + size > self.most:
            GRPC_RECEIVING_REFUSED.inc()
            raise ReceivingFull(description=(
                f"{service} is serving {self.held} bytes of requests, near its bound "
                f"(grpc_max_receiving_bytes, {self.most}); this request of {size} bytes was "
                "not taken. Please try again in a few seconds."
            ))
        self.held += size
        self.large += large
        GRPC_RECEIVING_BYTES.inc(size)

    def give_back(self, size: int) -> None:
        self.held -= size
        self.large -= size > ALLOWANCE
        GRPC_RECEIVING_BYTES.dec(size)


class _Malformed:
    """What the deserializer gives for a request that is not a valid message of its type."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def refuse(self) -> InvalidArgument:
        return InvalidArgument(f"The request is not a valid {self.type_name} message.")


def _sized(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    type_name = _type_name(deserializer)

    def deserialize(data: bytes) -> Any:
        _SIZE.set(len(data))
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except DecodeError:
            return _Malformed(type_name)

    return deserialize


def _type_name(deserializer: Callable[[bytes], Any] | None) -> str:
    """``zaqar.v2.PostMessagesRequest`` for a generated class's ``FromString``."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


class _Held:
    """Entered as a call's method starts, left when it ends (a server stream's too, through
    ``stream_within``): a malformed request refused, the request counted or refused."""

    __slots__ = ("_receiving", "_request", "_service", "_size")

    def __init__(self, receiving: Receiving, service: str, request: Any) -> None:
        self._receiving, self._service, self._request = receiving, service, request
        self._size = 0

    async def __aenter__(self) -> None:
        if isinstance(self._request, _Malformed):
            raise self._request.refuse()
        size = _SIZE.get()
        self._receiving.take(size, self._service)
        self._size = size

    async def __aexit__(self, *exc: object) -> None:
        self._receiving.give_back(self._size)


def _counted_unary(behavior: UnaryUnary, receiving: Receiving, service: str) -> UnaryUnary:
    async def counted(request: Any, context: Context) -> Any:
        async with _Held(receiving, service, request):
            return await behavior(request, context)

    return counted


def _counted_stream(behavior: UnaryStream, receiving: Receiving, service: str) -> UnaryStream:
    return stream_within(behavior, lambda request, context: _Held(receiving, service, request))


def _guarded_streams(behavior: StreamStream, type_name: str) -> StreamStream:
    """A stream of requests whose reader met one that is not a valid message ends
    INVALID_ARGUMENT (gRPC's reader raises protobuf's error inside the method)."""

    async def guarded(requests: Any, context: Context) -> None:
        try:
            await behavior(requests, context)
        except DecodeError:
            await context.abort_with_status(rpc_status.to_status(to_status(
                _Malformed(type_name).refuse())))

    return guarded


class ReceivingInterceptor(MethodWrapping):
    """Counts and bounds the requests of unary-request calls, and refuses malformed ones (the
    module's docstring)."""

    def __init__(self, receiving: Receiving, service: str) -> None:
        """``service``: the process's name in refusals ("message_svc")."""
        super().__init__()
        self._receiving = receiving
        self._service = service

    def wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        receiving, service = self._receiving, self._service
        counted = rewrapped(
            handler, lambda unary: _counted_unary(unary, receiving, service),
            lambda stream: _counted_stream(stream, receiving, service), deserializer=_sized,
        )
        if counted is not None:
            return counted
        streams = aio_stream_stream(handler)
        if streams is not None and not inspect.isasyncgenfunction(streams):
            return grpc.stream_stream_rpc_method_handler(
                _guarded_streams(streams, _type_name(handler.request_deserializer)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # a stream of requests (the module's docstring): not counted
