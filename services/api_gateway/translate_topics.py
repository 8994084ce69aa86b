"""Topic documents <-> ``zaqar.v2.Topics`` messages.

A topic request has the shape of the queue request it mirrors (contract §2: "as queues"), so
each one is read by the queue translation (``translate.py``: same checks, same 400s) and its
fields are moved into the topic message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from zaqar_grpc.v2 import topics_pb2

from services.api_gateway import translate


def list_topics_request(
    project: str,
    *,
    limit: int | None,
    marker: str | None,
    detailed: bool,
    name: str | None,
    with_count: bool,
    filters: Mapping[str, Any],
) -> topics_pb2.ListTopicsRequest:
    queues = translate.list_queues_request(
        project, limit=limit, marker=marker, detailed=detailed, name=name,
        with_count=with_count, filters=filters,
    )
    request = topics_pb2.ListTopicsRequest(
        project=project, marker=queues.marker, detailed=detailed, name=queues.name,
        with_count=with_count, metadata_filters=dict(queues.metadata_filters),
    )
    if queues.HasField("limit"):
        request.limit = queues.limit
    return request


def create_topic_request(project: str, topic: str, doc: Any) -> topics_pb2.CreateTopicRequest:
    queue = translate.create_queue_request(project, topic, doc)
    return topics_pb2.CreateTopicRequest(project=project, topic=topic, metadata=queue.metadata)


def update_topic_request(project: str, topic: str, doc: Any) -> topics_pb2.UpdateTopicRequest:
    queue = translate.update_queue_request(project, topic, doc)
    return topics_pb2.UpdateTopicRequest(project=project, topic=topic, operations=queue.operations)


def purge_topic_request(project: str, topic: str, doc: Any) -> topics_pb2.PurgeTopicRequest:
    queue = translate.purge_queue_request(project, topic, doc)
    return topics_pb2.PurgeTopicRequest(
        project=project, topic=topic, resource_types=queue.resource_types
    )


def post_topic_messages_request(
    project: str, topic: str, client_id: str, doc: Any
) -> topics_pb2.PostTopicMessagesRequest:
    queue = translate.post_messages_request(project, topic, client_id, doc)
    return topics_pb2.PostTopicMessagesRequest(
        project=project, topic=topic, client_id=client_id, messages=queue.messages
    )


def topic_href(topic: str) -> str:
    return "/v2/topics/" + topic


def message_href(topic: str, message_id: str) -> str:
    return f"/v2/topics/{topic}/messages/{message_id}"


def messages_location(topic: str, ids: Iterable[str]) -> str:
    return f"/v2/topics/{topic}/messages?ids=" + ",".join(ids)


def topic_doc(topic: topics_pb2.Topic, detailed: bool) -> dict[str, Any]:
    if detailed:
        return {
            "name": topic.name,
            "metadata": orjson.Fragment(topic.metadata or b"{}"),
            "href": topic_href(topic.name),
        }
    return {"name": topic.name, "href": topic_href(topic.name)}


def topic_list_doc(
    response: topics_pb2.ListTopicsResponse, detailed: bool, next_href: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "topics": [topic_doc(t, detailed) for t in response.topics],
        "links": [{"rel": "next", "href": next_href}] if next_href else [],
    }
    if response.HasField("count"):
        doc["count"] = response.count
    return doc
