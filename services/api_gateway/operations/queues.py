"""Queue operations: list, create, get, update (JSON patch), delete, stats, purge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from zaqar.v2 import common_pb2, queues_pb2

from services.api_gateway import translate
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams


async def list_queues(
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
    request = translate.list_queues_request(
        caller.project,
        limit=limit,
        marker=marker,
        detailed=detailed,
        name=name,
        with_count=with_count,
        filters=filters,
    )
    response = await up.queues.ListQueues(request, timeout=up.timeout)
    link = next_link(response.next_marker) if response.next_marker else None
    return Outcome(200, translate.queue_list_doc(response, detailed, link))


async def create_queue(up: Upstreams, caller: Caller, queue: str, metadata: Any) -> Outcome:
    """201 when created, 204 when it existed; ``metadata`` is the optional JSON object."""
    request = translate.create_queue_request(caller.project, queue, metadata)
    response = await up.queues.CreateQueue(request, timeout=up.timeout)
    return Outcome(
        201 if response.created else 204,
        location=translate.queue_href(queue),
        ws_body=f"Queue {queue} created.",
    )


async def get_queue(up: Upstreams, caller: Caller, queue: str) -> Outcome:
    request = queues_pb2.GetQueueRequest(project=caller.project, queue=queue)
    response = await up.queues.GetQueue(request, timeout=up.timeout)
    return Outcome(200, orjson.Fragment(response.metadata or b"{}"))


async def update_queue(up: Upstreams, caller: Caller, queue: str, patch: Any) -> Outcome:
    request = translate.update_queue_request(caller.project, queue, patch)
    response = await up.queues.UpdateQueue(request, timeout=up.timeout)
    return Outcome(200, orjson.Fragment(response.metadata or b"{}"))


async def delete_queue(up: Upstreams, caller: Caller, queue: str) -> Outcome:
    request = queues_pb2.DeleteQueueRequest(project=caller.project, queue=queue)
    await up.queues.DeleteQueue(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Queue {queue} removed.")


async def queue_stats(up: Upstreams, caller: Caller, queue: str) -> Outcome:
    request = common_pb2.QueueRef(project=caller.project, queue=queue)
    stats = await up.messages.GetStats(request, timeout=up.timeout)
    return Outcome(200, translate.stats_doc(stats, queue))


async def purge_queue(up: Upstreams, caller: Caller, queue: str, doc: Any) -> Outcome:
    """``doc``: ``{"resource_types": [...]}`` (absent or empty: messages and subscriptions)."""
    request = translate.purge_queue_request(caller.project, queue, doc)
    await up.queues.PurgeQueue(request, timeout=up.timeout)
    return Outcome(204)
