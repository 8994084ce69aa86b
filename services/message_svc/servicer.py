"""gRPC adapter of message_svc: ``zaqar.v2.Messages`` and ``zaqar.v2.MessagesInternal``
(whose ``Batch`` runs ``Messages`` calls through the same methods, ``batch.py``).

Requests are unpacked into :class:`~services.message_svc.service.MessageService` calls and
results packed into protobufs; nothing else. Errors propagate as ``ServiceError`` to the
server's error interceptor.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from zaqar_grpc.v2 import common_pb2, messages_pb2, messages_pb2_grpc

from services.common.errors import Unavailable
from services.common.grpc_types import Context
from services.message_svc.batch import BatchRunner, ExchangeRunner
from services.message_svc.polling import Polling, wait_seconds
from services.message_svc.redrive import Redrives
from services.message_svc.service import MessageService, Posted
from services.message_svc.storage.base import Claim, StoredMessage
from services.message_svc.storage.redrives import RedriveJob
from services.message_svc.streaming import max_outstanding

MESSAGES_SERVICE = "zaqar.v2.Messages"
INTERNAL_SERVICE = "zaqar.v2.MessagesInternal"

_EMPTY = empty_pb2.Empty()


class Packer:
    """Store dataclasses -> protobufs, ages relative to ``now``."""

    def __init__(self, checksum: bool, now: Callable[[], float] = time.time) -> None:
        self.checksum = checksum
        self.now = now

    def message(self, m: StoredMessage, now: float) -> common_pb2.Message:
        return common_pb2.Message(
            id=m.id,
            body=m.body,
            ttl=m.ttl,
            age=max(0, int(now - m.created)),
            claim_id=m.claim_id or "",
            claim_count=m.claim_count,
            created=int(m.created),
            checksum="MD5:" + hashlib.md5(m.body).hexdigest() if self.checksum else "",
            group_id=m.group_id or "",
        )

    def messages(self, items: Iterable[StoredMessage]) -> list[common_pb2.Message]:
        now = self.now()
        return [self.message(m, now) for m in items]

    def claim(self, claim: Claim | None) -> messages_pb2.Claim:
        if claim is None:
            return messages_pb2.Claim()
        now = self.now()
        return messages_pb2.Claim(
            id=claim.id,
            ttl=claim.ttl,
            age=max(0, int(now - claim.created)),
            messages=[self.message(m, now) for m in claim.messages],
        )

    def summary(self, m: StoredMessage | None, now: float) -> common_pb2.MessageSummary | None:
        if m is None:
            return None
        return common_pb2.MessageSummary(
            id=m.id, age=max(0, int(now - m.created)), created=int(m.created)
        )


def redrive_message(job: RedriveJob) -> messages_pb2.Redrive:
    return messages_pb2.Redrive(
        id=job.id, queue=job.queue, destination=job.destination,
        max_per_second=job.max_per_second, status=job.status, moved=job.moved,
        remaining=job.remaining, started=int(job.started), updated=int(job.updated),
        error=job.error,
    )


def _opt(message: Message, field: str) -> int | None:
    """An ``optional int32`` field: ``None`` when unset (0 is a value)."""
    return int(getattr(message, field)) if message.HasField(field) else None


class MessagesServicer(messages_pb2_grpc.MessagesServicer):
    def __init__(
        self, service: MessageService, packer: Packer, polling: Polling | None = None,
        redrives: Redrives | None = None,
    ) -> None:
        self._service = service
        self._pack = packer
        self._polling = polling
        self._redrives = redrives

    def hint(self, project: str, queue: str) -> None:
        """Messages were posted to the queue here: its long-polling waiters look."""
        self._hint(project, queue)

    def _hint(self, project: str, queue: str) -> None:
        if self._polling is not None:
            self._polling.room.hint(project, queue)

    def _acked(self, project: str, queue: str) -> None:
        if self._polling is not None:
            self._polling.streams.acked(project, queue)

    async def PostMessages(
        self, request: messages_pb2.PostMessagesRequest, context: Context
    ) -> messages_pb2.PostMessagesResponse:
        posted = [
            Posted(m.body, m.ttl if m.HasField("ttl") else None,
                   m.delay if m.HasField("delay") else None,
                   m.group_id if m.HasField("group_id") else None,
                   m.dedup_id if m.HasField("dedup_id") else None)
            for m in request.messages
        ]
        ids = await self._service.post(request.project, request.queue, request.client_id, posted)
        self._hint(request.project, request.queue)
        return messages_pb2.PostMessagesResponse(ids=ids)

    async def ListMessages(
        self, request: messages_pb2.ListMessagesRequest, context: Context
    ) -> messages_pb2.ListMessagesResponse:
        wait = wait_seconds(request.wait_seconds)
        if wait and self._polling is not None:
            page = await self._polling.list_messages(
                request.project, request.queue, request.client_id, wait=wait,
                limit=_opt(request, "limit"), marker=request.marker, echo=request.echo,
                include_claimed=request.include_claimed, include_delayed=request.include_delayed,
            )
        else:
            page = await self._service.list_messages(
                request.project, request.queue, request.client_id,
                limit=_opt(request, "limit"), marker=request.marker, echo=request.echo,
                include_claimed=request.include_claimed,
                include_delayed=request.include_delayed,
            )
        return messages_pb2.ListMessagesResponse(
            messages=self._pack.messages(page.messages), next_marker=page.next_marker
        )

    async def GetMessage(
        self, request: messages_pb2.GetMessageRequest, context: Context
    ) -> common_pb2.Message:
        message = await self._service.get(request.project, request.queue, request.message_id)
        return self._pack.message(message, self._pack.now())

    async def GetMessages(
        self, request: messages_pb2.GetMessagesRequest, context: Context
    ) -> messages_pb2.GetMessagesResponse:
        found = await self._service.get_many(request.project, request.queue, request.message_ids)
        return messages_pb2.GetMessagesResponse(messages=self._pack.messages(found))

    async def DeleteMessage(
        self, request: messages_pb2.DeleteMessageRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete(
            request.project, request.queue, request.message_id, request.claim_id
        )
        self._acked(request.project, request.queue)
        return _EMPTY

    async def DeleteMessages(
        self, request: messages_pb2.DeleteMessagesRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_many(
            request.project, request.queue, request.message_ids, request.claim_ids
        )
        self._acked(request.project, request.queue)
        return _EMPTY

    async def PopMessages(
        self, request: messages_pb2.PopMessagesRequest, context: Context
    ) -> messages_pb2.PopMessagesResponse:
        popped = await self._service.pop(request.project, request.queue, request.limit)
        return messages_pb2.PopMessagesResponse(messages=self._pack.messages(popped))

    async def CreateClaim(
        self, request: messages_pb2.CreateClaimRequest, context: Context
    ) -> messages_pb2.Claim:
        wait = wait_seconds(request.wait_seconds)
        if wait and self._polling is not None:
            claim = await self._polling.claim(
                request.project, request.queue, wait=wait, limit=_opt(request, "limit"),
                ttl=_opt(request, "ttl"), grace=_opt(request, "grace"),
            )
        else:
            claim = await self._service.claim(
                request.project, request.queue, limit=_opt(request, "limit"),
                ttl=_opt(request, "ttl"), grace=_opt(request, "grace"),
            )
        return self._pack.claim(claim)

    async def GetClaim(
        self, request: messages_pb2.GetClaimRequest, context: Context
    ) -> messages_pb2.Claim:
        claim = await self._service.get_claim(request.project, request.queue, request.claim_id)
        return self._pack.claim(claim)

    async def UpdateClaim(
        self, request: messages_pb2.UpdateClaimRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.renew_claim(
            request.project, request.queue, request.claim_id,
            ttl=_opt(request, "ttl"), grace=_opt(request, "grace"),
        )
        return _EMPTY

    async def DeleteClaim(
        self, request: messages_pb2.DeleteClaimRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.release_claim(request.project, request.queue, request.claim_id)
        self._hint(request.project, request.queue)
        self._acked(request.project, request.queue)
        return _EMPTY

    async def StreamingPull(
        self, request: messages_pb2.StreamingPullRequest, context: Context
    ) -> AsyncIterator[messages_pb2.StreamingPullResponse]:
        outstanding = max_outstanding(_opt(request, "max_outstanding"))
        if self._polling is None:
            raise Unavailable("Streaming pull is not served by this server.")
        claims = self._polling.streams.pull(
            request.project, request.queue, max_outstanding=outstanding,
            ttl=_opt(request, "ttl"), grace=_opt(request, "grace"),
        )
        async for claim in claims:
            packed = self._pack.claim(claim)
            yield messages_pb2.StreamingPullResponse(
                claim_id=packed.id, claim_ttl=packed.ttl, messages=packed.messages
            )

    def _redrive(self) -> Redrives:
        if self._redrives is None:
            raise Unavailable("Dead-letter redrive is not served by this server.")
        return self._redrives

    async def StartRedrive(
        self, request: messages_pb2.StartRedriveRequest, context: Context
    ) -> messages_pb2.Redrive:
        job = await self._redrive().start(
            request.project, request.queue,
            request.destination if request.HasField("destination") else None,
            _opt(request, "max_per_second"),
        )
        return redrive_message(job)

    async def GetRedrive(
        self, request: common_pb2.QueueRef, context: Context
    ) -> messages_pb2.Redrive:
        return redrive_message(await self._redrive().get(request.project, request.queue))

    async def CancelRedrive(
        self, request: common_pb2.QueueRef, context: Context
    ) -> messages_pb2.Redrive:
        return redrive_message(await self._redrive().cancel(request.project, request.queue))

    async def GetStats(
        self, request: common_pb2.QueueRef, context: Context
    ) -> common_pb2.QueueStats:
        stats = await self._service.stats(request.project, request.queue)
        now = self._pack.now()
        return common_pb2.QueueStats(
            claimed=stats.claimed, free=stats.free, total=stats.total,
            oldest=self._pack.summary(stats.oldest, now),
            newest=self._pack.summary(stats.newest, now),
        )


class MessagesInternalServicer(messages_pb2_grpc.MessagesInternalServicer):
    def __init__(self, service: MessageService, messages: MessagesServicer) -> None:
        self._service = service
        self._messages = messages
        self._batch = BatchRunner(messages)
        self._exchange = ExchangeRunner(self._batch)

    async def DeleteQueueMessages(
        self, request: common_pb2.QueueRef, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_queue_messages(
            request.project, request.queue,
            request.pool_uri if request.HasField("pool_uri") else None,
        )
        return _EMPTY

    async def InvalidateQueue(
        self, request: common_pb2.QueueRef, context: Context
    ) -> empty_pb2.Empty:
        await self._service.queue_changed(
            request.project, request.queue,
            request.pool_uri if request.HasField("pool_uri") else None,
        )
        return _EMPTY

    async def Batch(
        self, request: messages_pb2.BatchRequest, context: Context
    ) -> messages_pb2.BatchResponse:
        return await self._batch.run(request, context)

    def drain(self) -> None:
        """This process is stopping: the ``Exchange`` streams' callers are told to move."""
        self._exchange.drain()

    async def Exchange(  # type: ignore[override]
        self, request_iterator: Any, context: Context
    ) -> None:
        # Reads and writes through the context (ExchangeRunner), not the iterator.
        await self._exchange.serve(context)

    async def OpenBodies(
        self, request: messages_pb2.OpenBodiesRequest, context: Context
    ) -> messages_pb2.OpenBodiesResponse:
        bodies = await self._service.open_bodies(request.project, request.queue, request.bodies)
        return messages_pb2.OpenBodiesResponse(bodies=bodies)

    async def PostOnce(
        self, request: messages_pb2.PostOnceRequest, context: Context
    ) -> messages_pb2.PostOnceResponse:
        mid, stored = await self._service.post_once(
            request.project, request.queue, request.client_id, request.key, request.body,
            request.ttl,
        )
        if stored:
            self._messages.hint(request.project, request.queue)
        return messages_pb2.PostOnceResponse(id=mid, replayed=not stored)


def registrar(
    service: MessageService, packer: Packer, polling: Polling | None = None,
    redrives: Redrives | None = None, stopping: list[Callable[[], None]] | None = None,
) -> Callable[[grpc.aio.Server], None]:
    """``stopping``: what the process calls when it begins to stop; the ``Exchange``
    streams' drain (their callers are told to move) is added to it."""

    def register(server: grpc.aio.Server) -> None:
        messages = MessagesServicer(service, packer, polling, redrives)
        messages_pb2_grpc.add_MessagesServicer_to_server(messages, server)
        internal = MessagesInternalServicer(service, messages)
        messages_pb2_grpc.add_MessagesInternalServicer_to_server(internal, server)
        if stopping is not None:
            stopping.append(internal.drain)

    return register
