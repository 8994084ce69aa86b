"""Topic operations: list, create, get, update (JSON patch), delete, stats, purge, post
(queue_svc's ``zaqar.v2.Topics``). Topic subscriptions are ``subscriptions.py``'s, given
``topic=True``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from zaqar_grpc.v2 import topics_pb2

from services.api_gateway import translate, translate_topics
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams


async def list_topics(
    up: Upstreams,
    caller: Caller,
    *,
    limit: int | None,
    marker: str | None,
    detailed: bool,
    name: str | None,
    with_count: bool,
    filters: Mapping[str, Any],
    next_link: NextLink,
) -> Outcome:
    request = translate_topics.list_topics_request(
        caller.project, limit=limit, marker=marker, detailed=detailed, name=name,
        with_count=with_count, filters=filters,
    )
    response = await up.topics.ListTopics(request, timeout=up.timeout)
    link = next_link(response.next_marker) if response.next_marker else None
    return Outcome(200, translate_topics.topic_list_doc(response, detailed, link))


async def create_topic(up: Upstreams, caller: Caller, topic: str, metadata: Any) -> Outcome:
    """201 when created, 204 when it existed; ``metadata`` is the optional JSON object."""
    request = translate_topics.create_topic_request(caller.project, topic, metadata)
    response = await up.topics.CreateTopic(request, timeout=up.timeout)
    return Outcome(
        201 if response.created else 204,
        location=translate_topics.topic_href(topic),
        ws_body=f"Topic {topic} created.",
    )


async def get_topic(up: Upstreams, caller: Caller, topic: str) -> Outcome:
    """The metadata with defaults; 404 when the topic does not exist."""
    request = topics_pb2.TopicRequest(project=caller.project, topic=topic)
    response = await up.topics.GetTopic(request, timeout=up.timeout)
    return Outcome(200, orjson.Fragment(response.metadata or b"{}"))


async def update_topic(up: Upstreams, caller: Caller, topic: str, patch: Any) -> Outcome:
    request = translate_topics.update_topic_request(caller.project, topic, patch)
    response = await up.topics.UpdateTopic(request, timeout=up.timeout)
    return Outcome(200, orjson.Fragment(response.metadata or b"{}"))


async def delete_topic(up: Upstreams, caller: Caller, topic: str) -> Outcome:
    request = topics_pb2.TopicRequest(project=caller.project, topic=topic)
    await up.topics.DeleteTopic(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Topic {topic} removed.")


async def topic_stats(up: Upstreams, caller: Caller, topic: str) -> Outcome:
    request = topics_pb2.TopicRequest(project=caller.project, topic=topic)
    stats = await up.topics.GetTopicStats(request, timeout=up.timeout)
    return Outcome(200, translate.stats_doc(stats, topic))


async def purge_topic(up: Upstreams, caller: Caller, topic: str, doc: Any) -> Outcome:
    """``doc``: ``{"resource_types": [...]}`` (absent or empty: messages and subscriptions)."""
    request = translate_topics.purge_topic_request(caller.project, topic, doc)
    await up.topics.PurgeTopic(request, timeout=up.timeout)
    return Outcome(204)


async def post_topic_messages(up: Upstreams, caller: Caller, topic: str, doc: Any) -> Outcome:
    """``doc``: as a queue post. 201 once every delivery is stored; the resources name the
    messages' ids (a topic keeps no messages to read back)."""
    request = translate_topics.post_topic_messages_request(
        caller.project, topic, caller.client_id, doc
    )
    response = await up.topics.PostTopicMessages(request, timeout=up.timeout)
    ids = list(response.ids)
    return Outcome(
        201,
        {"resources": [translate_topics.message_href(topic, mid) for mid in ids]},
        location=translate_topics.messages_location(topic, ids),
        ws_body={"message_ids": ids},
    )
