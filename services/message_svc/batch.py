"""``MessagesInternal.Batch``: several ``zaqar.v2.Messages`` calls in one.

The gateway sends the requests it has in flight together to save a gRPC call each (the call
machinery, not the store, is most of what a request costs here). Each item runs as its own
call would, through the same servicer method, concurrently with the others (so their Redis
scripts share a pipeline); a failure becomes that item's status — the one the error
interceptor gives the single call — and never fails the others.

``MessagesInternal.Exchange`` (:class:`ExchangeRunner`) carries the same items over one
long-lived stream: each request is run in a task of its own as soon as it is read, and its
answer written as soon as it is done. When the process begins to stop, each stream is told
(``draining``), so that its caller moves to a new one and ends its side: the stream then ends
once every request read is answered, rather than being cut when the server's grace runs out.

Metrics: each item counts in ``grpc_server_handled_total`` / ``grpc_server_handling_seconds``
as a call of its own ``zaqar.v2.Messages`` method, with its own status code, so a
dashboard of message_svc's calls by method and code reads the same whether the gateway sent
them alone, batched or on the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import grpc
from zaqar_grpc.v2 import messages_pb2

from services.common.errors import (
    InvalidArgument,
    Overloaded,
    failure_status,
    log_call,
    to_status,
)
from services.common.grpc_types import Context
from services.common.logs import BATCH_REQUEST_IDS_KEY, REQUEST_ID, well_formed
from services.common.metrics import MethodCalls, code_name, server_calls

# The most items one call may carry (the gateway's setting is checked against it).
MAX_ITEMS: Final = 256
# What each Exchange stream is told once the process begins to stop.
DRAINING: Final = messages_pb2.ExchangeResponse(draining=True)

Method = Callable[[Any, Context], Awaitable[Any]]

# BatchItem field -> (Messages method, BatchResult field of its response).
ROUTES: Final[Mapping[str, tuple[str, str]]] = {
    "post_messages": ("PostMessages", "post_messages"),
    "list_messages": ("ListMessages", "list_messages"),
    "get_message": ("GetMessage", "message"),
    "get_messages": ("GetMessages", "get_messages"),
    "delete_message": ("DeleteMessage", "empty"),
    "delete_messages": ("DeleteMessages", "empty"),
    "pop_messages": ("PopMessages", "pop_messages"),
    "create_claim": ("CreateClaim", "claim"),
    "get_claim": ("GetClaim", "claim"),
    "update_claim": ("UpdateClaim", "empty"),
    "delete_claim": ("DeleteClaim", "empty"),
    "get_stats": ("GetStats", "stats"),
}


class BatchRunner:
    """Runs the items of a batch on the ``zaqar.v2.Messages`` servicer."""

    def __init__(self, messages: Any) -> None:
        """``messages``: the ``MessagesServicer`` whose methods serve the items."""
        self._routes: dict[str, tuple[Method, str, MethodCalls]] = {
            item_field: (
                getattr(messages, method), result_field,
                server_calls(f"/zaqar.v2.Messages/{method}"),
            )
            for item_field, (method, result_field) in ROUTES.items()
        }

    async def run(
        self, request: messages_pb2.BatchRequest, context: Context
    ) -> messages_pb2.BatchResponse:
        items = request.items
        if len(items) > MAX_ITEMS:
            raise Overloaded(f"A batch takes at most {MAX_ITEMS} items, not {len(items)}.")
        response = messages_pb2.BatchResponse()
        await self.fill(items, response.results, _request_ids(context, len(items)), context)
        return response

    async def fill(
        self,
        items: Sequence[messages_pb2.BatchItem],
        results: Any,
        ids: Sequence[str | None],
        context: Context,
    ) -> None:
        """Run ``items``, adding one result per item to ``results`` (a repeated BatchResult
        field), in the items' order."""
        added = [results.add() for _ in items]
        if len(items) == 1:
            await self._one(items[0], added[0], context, ids[0])
        else:
            await asyncio.gather(
                *(self._one(item, result, context, request_id)
                  for item, result, request_id in zip(items, added, ids, strict=True))
            )

    async def _one(
        self,
        item: messages_pb2.BatchItem,
        result: messages_pb2.BatchResult,
        context: Context,
        request_id: str | None = None,
    ) -> None:
        if request_id is not None:
            # Each item of several runs in a task of its own (gather): its own request id.
            REQUEST_ID.set(request_id)
        kind = item.WhichOneof("request")
        route = None if kind is None else self._routes.get(kind)
        if kind is None or route is None:
            failure = InvalidArgument(f"Unknown batch item {kind or '(empty)'}.")
            result.error.CopyFrom(to_status(failure))
            return
        method, result_field, calls = route
        start = time.perf_counter()
        try:
            response = await method(getattr(item, kind), context)
        except Exception as exc:
            result.error.CopyFrom(failure_status(exc, f"Batch/{calls.method}"))
            code = code_name(result.error.code)
        else:
            getattr(result, result_field).CopyFrom(response)
            code = "OK"
        seconds = time.perf_counter() - start
        calls.done(code, seconds)
        log_call(f"/{calls.name}", code, seconds)


class ExchangeRunner:
    """Serves ``MessagesInternal.Exchange``: reads requests until the caller ends its side,
    runs each in a task of its own, writes each answer when it is done (one write at a
    time), and ends once every request read is answered. The items count in the server's
    call metrics under their own methods (:class:`BatchRunner`); the stream itself counts
    once, when it ends."""

    def __init__(self, batch: BatchRunner) -> None:
        self._batch = batch
        self._streams: dict[Context, asyncio.Lock] = {}  # open streams, their write locks
        self._draining = False
        self._notices: set[asyncio.Task[None]] = set()

    def drain(self) -> None:
        """This process is stopping: every stream, open or opened from now on, is told so
        (its caller sends nothing more on it and ends its side)."""
        if not self._draining:
            self._draining = True
            for context, writing in list(self._streams.items()):
                self._notify(context, writing)

    def _notify(self, context: Context, writing: asyncio.Lock) -> None:
        task = asyncio.ensure_future(self._write_notice(context, writing))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @staticmethod
    async def _write_notice(context: Context, writing: asyncio.Lock) -> None:
        async with writing:
            try:
                await context.write(DRAINING)
            except Exception:  # the stream ended meanwhile (gRPC raises several kinds)
                pass

    async def serve(self, context: Context) -> None:
        loop = asyncio.get_running_loop()
        writing = asyncio.Lock()
        running: set[asyncio.Task[None]] = set()
        self._streams[context] = writing
        if self._draining:
            self._notify(context, writing)
        try:
            while True:
                request = await context.read()
                if request is grpc.aio.EOF:
                    break
                task = loop.create_task(self._answer(request, context, writing))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            del self._streams[context]
            for task in running:
                task.cancel()

    async def _answer(
        self, request: messages_pb2.ExchangeRequest, context: Context, writing: asyncio.Lock
    ) -> None:
        response = messages_pb2.ExchangeResponse(id=request.id)
        items = request.items
        if len(items) > MAX_ITEMS:
            failure = to_status(Overloaded(
                f"A batch takes at most {MAX_ITEMS} items, not {len(items)}."
            ))
            for _ in items:
                response.results.add().error.CopyFrom(failure)
        else:
            ids = _listed_ids(request.request_ids, len(items))
            timeout = request.timeout_ms / 1000 if request.timeout_ms else None
            try:
                async with asyncio.timeout(timeout):
                    await self._batch.fill(items, response.results, ids, context)
            except TimeoutError:
                return  # the caller has given up on it: no answer
        async with writing:
            await context.write(response)


def _listed_ids(ids: Sequence[str], count: int) -> list[str | None]:
    if len(ids) != count:
        return [None] * count
    return [i if i and well_formed(i) else None for i in ids]


def _request_ids(context: Context, count: int) -> list[str | None]:
    """The request id of each of ``count`` items, from the call's
    :data:`~services.common.logs.BATCH_REQUEST_IDS_KEY` metadata; None for an item without a
    well-formed one (all of them when the metadata is absent or does not fit the items)."""
    for key, value in context.invocation_metadata() or ():
        if key == BATCH_REQUEST_IDS_KEY and isinstance(value, str):
            ids = value.split(",")
            if len(ids) == count:
                return [i if i and well_formed(i) else None for i in ids]
            break
    return [None] * count
