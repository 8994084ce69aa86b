"""Queue operations: list, create, get, update (JSON patch), delete, stats, purge, share."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from zaqar_grpc.v2 import common_pb2, queues_pb2

from services.api_gateway import translate
from services.api_gateway.errors import bad_body, bad_request
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams
from services.common import signing


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


SHARE_DEFAULT_TTL = timedelta(days=1)
SHARE_KEYS = frozenset({"paths", "methods", "expires"})
SHARE_PATHS = frozenset({"messages", "subscriptions", "claims"})
SHARE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


def _set_text(items: Any) -> str:
    """A set of names as Python prints it, in a stable order."""
    return "{" + ", ".join(repr(item) for item in sorted(items)) + "}"


def share_queue(caller: Caller, queue: str, doc: Any, secret: str) -> Outcome:
    """A pre-signed URL of the queue's ``paths`` (default ``["messages"]``) for ``methods``
    (default ``["GET"]``) until ``expires`` (default a day from now): Zaqar's checks, in
    Zaqar's order, with Zaqar's messages; no call is made."""
    if doc is None:
        raise bad_body("Request body can not be empty")
    if not isinstance(doc, dict):
        raise bad_body("Request body could not be parsed.")
    unknown = set(doc) - SHARE_KEYS
    if unknown:
        raise bad_request(f"Unknown keys: {_set_text(unknown)}")
    base = translate.queue_href(queue)
    paths = doc.get("paths")
    if not paths:
        paths = ["messages"]
    elif not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise bad_request(f"Invalid paths: {paths!r}")
    elif set(paths) - SHARE_PATHS:
        raise bad_request(f"Invalid paths: {_set_text(set(paths) - SHARE_PATHS)}")
    if not secret:
        raise bad_request(signing.NO_SECRET)
    methods = doc.get("methods") or ["GET"]
    if not isinstance(methods, list):
        raise bad_request("`methods` should be a list")
    if not all(isinstance(m, str) for m in methods) or set(methods) - SHARE_METHODS:
        invalid = [m for m in methods if not isinstance(m, str) or m not in SHARE_METHODS]
        raise bad_request(f"Invalid methods: {invalid!r}")
    expires = doc.get("expires")
    try:
        if expires is None:
            expires_text = signing.format_expires(datetime.now(UTC) + SHARE_DEFAULT_TTL)
        else:
            expires_text = signing.normalise_expires(expires)
    except signing.SignedUrlError as exc:
        raise bad_request(str(exc)) from None
    full_paths = sorted(f"{base}/{path}" for path in paths)
    sorted_methods = sorted(methods)
    return Outcome(
        200,
        {
            "paths": full_paths,
            "methods": sorted_methods,
            "project": caller.project,
            "expires": expires_text,
            "signature": signing.signature(
                secret, full_paths, sorted_methods, caller.project, expires_text
            ),
        },
    )
