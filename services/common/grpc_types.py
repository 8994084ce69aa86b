"""Names for the grpc.aio types that handlers and server interceptors share.

types-grpcio types ``grpc.RpcMethodHandler`` for the synchronous server: its behaviours are
plain functions of a ``grpc.ServicerContext``. Under ``grpc.aio`` the same attributes hold
coroutine functions (``unary_unary``) and async generator functions (``unary_stream``) of a
``grpc.aio.ServicerContext``; :func:`aio_unary_unary` and :func:`aio_unary_stream` read them
as such, in one place.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias, cast

import grpc

# Quoted: grpc's classes are generic only in its type stubs, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
"""The context of an aio handler (``read`` is used by the one stream-request handler,
``MessagesInternal.Exchange``)."""

MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
"""What a server interceptor receives from its continuation and returns."""

UnaryUnary: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
UnaryStream: TypeAlias = Callable[[Any, Context], AsyncIterator[Any]]
# A stream-stream behaviour that reads and writes through its context and returns None.
StreamStream: TypeAlias = Callable[[Any, Context], Awaitable[None]]


def aio_unary_unary(handler: MethodHandler) -> UnaryUnary | None:
    """The handler's unary-unary behaviour as grpc.aio serves it (None: another call kind)."""
    return cast("UnaryUnary | None", handler.unary_unary)


def aio_unary_stream(handler: MethodHandler) -> UnaryStream | None:
    """The handler's unary-stream behaviour as grpc.aio serves it (None: another call kind)."""
    return cast("UnaryStream | None", handler.unary_stream)


def aio_stream_stream(handler: MethodHandler) -> StreamStream | None:
    """The handler's stream-stream behaviour as grpc.aio serves it (None: another call kind)."""
    return cast("StreamStream | None", handler.stream_stream)


Deserializer: TypeAlias = "Callable[[bytes], Any] | None"


def rewrapped(
    handler: MethodHandler,
    unary: Callable[[UnaryUnary], UnaryUnary],
    stream: Callable[[UnaryStream], UnaryStream],
    deserializer: Callable[[Deserializer], Deserializer] = lambda given: given,
) -> MethodHandler | None:
    """``handler`` with its unary-unary behaviour replaced by ``unary(behaviour)``, or its
    unary-stream one by ``stream(behaviour)``, its request deserializer by
    ``deserializer(it)`` (kept by default) and its response serializer kept; None for a
    handler of another kind (a stream of requests)."""
    behaviour = aio_unary_unary(handler)
    if behaviour is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(behaviour),
            request_deserializer=deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    items = aio_unary_stream(handler)
    if items is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(items),
            request_deserializer=deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return None


def stream_within(
    behavior: UnaryStream,
    scope: Callable[[Any, Context], AbstractAsyncContextManager[Any]],
) -> UnaryStream:
    """A server stream's behaviour run inside ``scope(request, context)``, which is entered
    before it starts and left when the stream ends (a failure before or between items passes
    through it).

    grpc.aio serves two kinds of stream handler: an async generator that yields the items,
    and a coroutine that writes them with ``context.write`` (grpcio-health-checking's
    ``Watch``); the result is of the kind of ``behavior``."""
    if not inspect.isasyncgenfunction(behavior):
        writes = cast("Callable[[Any, Context], Awaitable[None]]", behavior)

        async def writer(request: Any, context: Context) -> None:
            async with scope(request, context):
                await writes(request, context)

        return cast("UnaryStream", writer)

    async def items(request: Any, context: Context) -> AsyncIterator[Any]:
        async with scope(request, context):
            async for item in behavior(request, context):
                yield item

    return items


class MethodWrapping(grpc.aio.ServerInterceptor):
    """A server interceptor that builds each method's handler once, by :meth:`wrap`, and
    returns it for every later call of the method (None: a method the server does not have)."""

    def __init__(self) -> None:
        self._handlers: dict[str, MethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        wrapped = None if handler is None else self.wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        """The handler every call of ``method`` gets: ``handler``, wrapped or as it is."""
        raise NotImplementedError
