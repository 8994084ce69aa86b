"""Long-polling claims and listings: :class:`MessageService` operations retried through the
:class:`~services.message_svc.waiters.WaitRoom` (docs/architecture.md, "Long polling")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from zaqar_grpc.v2 import notifier_pb2, notifier_pb2_grpc

from services.common import limits
from services.common.errors import InvalidArgument
from services.message_svc import validation
from services.message_svc.service import MessageService, Page
from services.message_svc.storage.base import Claim
from services.message_svc.streaming import Streams
from services.message_svc.waiters import WAIT_MAX, Attempt, WaitRoom, Watch

WAIT_ERROR = f"Wait must be at least 0 and may not be greater than {WAIT_MAX}."


def wait_seconds(value: int) -> int:
    """A request's ``wait_seconds``: 0..20, else INVALID_ARGUMENT."""
    if not 0 <= value <= WAIT_MAX:
        raise InvalidArgument(WAIT_ERROR)
    return value


class Polling:
    def __init__(self, service: MessageService, room: WaitRoom) -> None:
        self._service = service
        self.room = room
        self.streams = Streams(self)

    @property
    def service(self) -> MessageService:
        return self._service

    def end(self) -> None:
        """This process is stopping: long polls are answered at once, as at their deadline,
        and streaming pulls end (:class:`~services.common.errors.Stopping`)."""
        self.room.end()
        self.streams.end()

    async def _next_free_at(self, project: str, queue: str) -> float | None:
        """When the store says something of the queue frees up next. Looked up *before* each
        try: a look-up after a try that found nothing would miss a message freed in between
        (it is no longer in the future), and its waiter would sleep until its deadline."""
        service = self._service
        if service.pooled:
            store = await service.stores.get((await service.metadata.get(project, queue)).pool_uri)
        else:
            store = service.store
        return await store.next_free_at(project, queue)

    async def claim(
        self,
        project: str,
        queue: str,
        *,
        wait: int,
        limit: int | None,
        ttl: int | None,
        grace: int | None,
    ) -> Claim | None:
        # Everything the claim will check, checked before the first look-up: a bad value is
        # a 400 even while the store or queue_svc cannot be reached.
        size = limits.page_limit(limit)
        validation.claim_ttl(ttl)
        validation.claim_grace(grace)

        async def attempt() -> Attempt[Claim]:
            free_at = await self._next_free_at(project, queue)
            claim = await self._service.claim(project, queue, limit=size, ttl=ttl, grace=grace)
            if claim is not None:
                return Attempt(claim, full=len(claim.messages) >= size)
            return Attempt(None, next_free_at=free_at)

        async def undo(claim: Claim) -> None:
            await self._service.release_claim(project, queue, claim.id)

        return await self.room.wait(project, queue, wait, attempt, exclusive=True, undo=undo)

    async def list_messages(
        self,
        project: str,
        queue: str,
        client_id: str,
        *,
        wait: int,
        limit: int | None,
        marker: str,
        echo: bool,
        include_claimed: bool,
        include_delayed: bool,
    ) -> Page:
        limits.page_limit(limit)  # checked before the first look-up, as a claim's

        async def attempt() -> Attempt[Page]:
            free_at = await self._next_free_at(project, queue)
            page = await self._service.list_messages(
                project, queue, client_id, limit=limit, marker=marker, echo=echo,
                include_claimed=include_claimed, include_delayed=include_delayed,
            )
            if page.messages:
                return Attempt(page)
            return Attempt(None, next_free_at=free_at)

        page = await self.room.wait(project, queue, wait, attempt, exclusive=False)
        return page if page is not None else Page([], "")


def notifier_watch(stub: notifier_pb2_grpc.NotifierInternalAsyncStub) -> Watch:
    """The hint stream of a queue from notifier_svc: one item once the watcher is registered,
    then one per message handed over (posts on any replica)."""

    async def watch(project: str, queue: str) -> AsyncIterator[None]:
        call = stub.Watch(notifier_pb2.WatchRequest(project=project, queue=queue))
        try:
            await call.initial_metadata()
            if call.done():
                code = await call.code()
                raise RuntimeError(f"Watch refused: {code.name if code else 'unknown'}")
            yield None
            async for _ in call:
                yield None
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"Watch failed: {exc.code().name}") from None
        finally:
            call.cancel()

    return watch
