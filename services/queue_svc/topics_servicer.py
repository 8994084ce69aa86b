"""``zaqar.v2.Topics`` over gRPC: unpacks requests, packs replies, nothing else."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import empty_pb2
from zaqar_grpc.v2 import common_pb2, topics_pb2, topics_pb2_grpc

from services.common.grpc_types import Context
from services.queue_svc.metadata import dump
from services.queue_svc.topic_rules import Posted
from services.queue_svc.topics import TopicService

SERVICE_NAME = "zaqar.v2.Topics"


class TopicsServicer(topics_pb2_grpc.TopicsServicer):
    def __init__(self, service: TopicService) -> None:
        self._service = service

    async def CreateTopic(
        self, request: topics_pb2.CreateTopicRequest, context: Context
    ) -> topics_pb2.CreateTopicResponse:
        created = await self._service.create(request.project, request.topic, request.metadata)
        return topics_pb2.CreateTopicResponse(created=created)

    async def GetTopic(
        self, request: topics_pb2.TopicRequest, context: Context
    ) -> topics_pb2.Topic:
        metadata = await self._service.get(request.project, request.topic)
        return topics_pb2.Topic(name=request.topic, metadata=dump(metadata))

    async def UpdateTopic(
        self, request: topics_pb2.UpdateTopicRequest, context: Context
    ) -> topics_pb2.Topic:
        metadata = await self._service.update(
            request.project, request.topic,
            [(op.op, op.path, op.value) for op in request.operations],
        )
        return topics_pb2.Topic(name=request.topic, metadata=dump(metadata))

    async def DeleteTopic(
        self, request: topics_pb2.TopicRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete(request.project, request.topic)
        return empty_pb2.Empty()

    async def ListTopics(
        self, request: topics_pb2.ListTopicsRequest, context: Context
    ) -> topics_pb2.ListTopicsResponse:
        page = await self._service.list(
            request.project,
            limit=request.limit if request.HasField("limit") else None,
            marker=request.marker,
            detailed=request.detailed,
            name=request.name,
            with_count=request.with_count,
            metadata_filters=request.metadata_filters,
        )
        reply = topics_pb2.ListTopicsResponse(
            topics=[
                topics_pb2.Topic(
                    name=record.name,
                    metadata=dump(record.metadata) if request.detailed else b"",
                )
                for record in page.queues
            ],
            next_marker=page.queues[-1].name if page.queues else "",
        )
        if page.count is not None:
            reply.count = page.count
        return reply

    async def GetTopicStats(
        self, request: topics_pb2.TopicRequest, context: Context
    ) -> common_pb2.QueueStats:
        return await self._service.stats(request.project, request.topic)

    async def PurgeTopic(
        self, request: topics_pb2.PurgeTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.purge(request.project, request.topic, request.resource_types)
        return empty_pb2.Empty()

    async def PostTopicMessages(
        self, request: topics_pb2.PostTopicMessagesRequest, context: Context
    ) -> topics_pb2.PostTopicMessagesResponse:
        posted = [
            Posted(
                body=m.body,
                ttl=m.ttl if m.HasField("ttl") else None,
                delay=m.delay if m.HasField("delay") else None,
                fifo_ids=m.HasField("group_id") or m.HasField("dedup_id"),
            )
            for m in request.messages
        ]
        ids = await self._service.post(request.project, request.topic, posted)
        return topics_pb2.PostTopicMessagesResponse(ids=ids)


def registrar(service: TopicService) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        topics_pb2_grpc.add_TopicsServicer_to_server(TopicsServicer(service), server)

    return register
