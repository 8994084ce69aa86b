"""``zaqar.v2.Queues`` over gRPC: unpacks requests, packs replies, nothing else.

Domain errors are raised as :class:`services.common.errors.ServiceError` by the service and
turned into statuses by the server's error interceptor.
"""

from __future__ import annotations

from google.protobuf import empty_pb2
from zaqar_grpc.v2 import common_pb2, queues_pb2, queues_pb2_grpc

from services.common.grpc_types import Context
from services.queue_svc.metadata import dump
from services.queue_svc.service import QueueService, QueueView

SERVICE_NAME = "zaqar.v2.Queues"


def _pack(request: queues_pb2.GetQueueRequest, view: QueueView) -> queues_pb2.Queue:
    queue = queues_pb2.Queue(name=request.queue, metadata=dump(view.metadata), exists=view.exists)
    if request.with_placement:
        queue.pool, queue.pool_uri = view.pool, view.pool_uri
    return queue


class QueuesServicer(queues_pb2_grpc.QueuesServicer):
    def __init__(self, service: QueueService) -> None:
        self._service = service

    async def CreateQueue(
        self, request: queues_pb2.CreateQueueRequest, context: Context
    ) -> queues_pb2.CreateQueueResponse:
        created = await self._service.create(request.project, request.queue, request.metadata)
        return queues_pb2.CreateQueueResponse(created=created)

    async def GetQueue(
        self, request: queues_pb2.GetQueueRequest, context: Context
    ) -> queues_pb2.Queue:
        view = await self._service.get(request.project, request.queue)
        return _pack(request, view)

    async def EnsureQueue(
        self, request: queues_pb2.GetQueueRequest, context: Context
    ) -> queues_pb2.Queue:
        view = await self._service.ensure(request.project, request.queue, request.place_on)
        return _pack(request, view)

    async def UpdateQueue(
        self, request: queues_pb2.UpdateQueueRequest, context: Context
    ) -> queues_pb2.Queue:
        metadata = await self._service.update(
            request.project,
            request.queue,
            [(op.op, op.path, op.value) for op in request.operations],
        )
        return queues_pb2.Queue(name=request.queue, metadata=dump(metadata), exists=True)

    async def DeleteQueue(
        self, request: queues_pb2.DeleteQueueRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete(request.project, request.queue)
        return empty_pb2.Empty()

    async def ListQueues(
        self, request: queues_pb2.ListQueuesRequest, context: Context
    ) -> queues_pb2.ListQueuesResponse:
        page = await self._service.list(
            request.project,
            limit=request.limit if request.HasField("limit") else None,
            marker=request.marker,
            detailed=request.detailed,
            name=request.name,
            with_count=request.with_count,
            metadata_filters=request.metadata_filters,
        )
        reply = queues_pb2.ListQueuesResponse(
            queues=[
                queues_pb2.Queue(
                    name=record.name,
                    metadata=dump(record.metadata) if request.detailed else b"",
                    exists=True,
                )
                for record in page.queues
            ],
            next_marker=page.queues[-1].name if page.queues else "",
        )
        if page.count is not None:
            reply.count = page.count
        return reply

    async def GetQueueStats(
        self, request: queues_pb2.GetQueueStatsRequest, context: Context
    ) -> common_pb2.QueueStats:
        return await self._service.stats(request.project, request.queue)

    async def PurgeQueue(
        self, request: queues_pb2.PurgeQueueRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.purge(request.project, request.queue, request.resource_types)
        return empty_pb2.Empty()
