"""Zaqar v2 documents <-> protobuf messages: the translation core of the gateway.

Transport-neutral: functions take already parsed JSON documents and typed parameters and
return protobuf requests, or take protobuf responses and return plain documents ready for
``orjson.dumps``. The operations (``operations/``) use them for HTTP and WebSocket alike.
Shape errors raise :class:`~services.api_gateway.errors.ApiError` (400); the domain rules
(ranges, names, limits) are the services' business.

Message bodies and queue metadata arrive from the services as JSON bytes and are embedded with
``orjson.Fragment``: never parsed again on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson
from zaqar_grpc.v2 import common_pb2, messages_pb2, notifier_pb2, queues_pb2

from services.api_gateway.errors import bad_body, bad_request

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
# The integers JSON carries between the gateway and the services: what orjson encodes and
# decodes as integers, and what every store compares as one.
JSON_INT_MIN: Final = -(2**63)
JSON_INT_MAX: Final = 2**64 - 1
_NOT_SUPPORTED: Final = "Document type not supported."


def int32(value: int) -> int:
    """Clamp to the int32 range of the proto fields; the services then reject the range."""
    return min(max(value, _INT32_MIN), _INT32_MAX)


def json_param(name: str, value: Any) -> bytes:
    """A query parameter's value (a string, or an int where the route casts one) as JSON.

    Raises :class:`ApiError` 400 for an integer outside 64 bits (``JSON_INT_MIN`` to
    ``JSON_INT_MAX``): query strings hold integers of any size, JSON between services does not.
    """
    if isinstance(value, int) and not JSON_INT_MIN <= value <= JSON_INT_MAX:
        raise bad_request(
            f'The "{name}" parameter is invalid. An integer value must fit in 64 bits.',
            title="Invalid parameter",
        )
    return orjson.dumps(value)


def _int_field(doc: Mapping[str, Any], name: str) -> int | None:
    """An optional integer field of a JSON object, clamped to int32."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_body(f'The value of the "{name}" field must be a int.')
    return int32(value)


def _object(doc: Any) -> dict[str, Any]:
    """An optional JSON object body; absent means ``{}``."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise bad_body(_NOT_SUPPORTED)
    return doc


# Requests --------------------------------------------------------------------------------------


def list_queues_request(
    project: str,
    *,
    limit: int | None,
    marker: str | None,
    detailed: bool,
    name: str | None,
    with_count: bool,
    filters: Mapping[str, Any],
) -> queues_pb2.ListQueuesRequest:
    request = queues_pb2.ListQueuesRequest(
        project=project,
        marker=marker or "",
        detailed=detailed,
        name=name or "",
        with_count=with_count,
        metadata_filters={key: json_param(key, value) for key, value in filters.items()},
    )
    if limit is not None:
        request.limit = int32(limit)
    return request


def create_queue_request(project: str, queue: str, doc: Any) -> queues_pb2.CreateQueueRequest:
    metadata = _object(doc)
    return queues_pb2.CreateQueueRequest(
        project=project, queue=queue, metadata=orjson.dumps(metadata) if metadata else b""
    )


def update_queue_request(project: str, queue: str, doc: Any) -> queues_pb2.UpdateQueueRequest:
    """A JSON-patch list; op and path are checked by queue_svc."""
    if not isinstance(doc, list):
        raise bad_request("Request body must be a JSON array of operation objects.")
    operations = []
    for change in doc:
        if not isinstance(change, dict):
            raise bad_request("Operations must be JSON objects.")
        op, path = change.get("op"), change.get("path")
        operations.append(
            queues_pb2.PatchOperation(
                op=op if isinstance(op, str) else "",
                path=path if isinstance(path, str) else "",
                value=orjson.dumps(change["value"]) if "value" in change else b"",
            )
        )
    return queues_pb2.UpdateQueueRequest(project=project, queue=queue, operations=operations)


def purge_queue_request(project: str, queue: str, doc: Any) -> queues_pb2.PurgeQueueRequest:
    types = _object(doc).get("resource_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise bad_body('The value of the "resource_types" field must be a list of strings.')
    return queues_pb2.PurgeQueueRequest(project=project, queue=queue, resource_types=types)


def post_messages_request(
    project: str, queue: str, client_id: str, doc: Any
) -> messages_pb2.PostMessagesRequest:
    """``{"messages": [{"body": any, "ttl"?: int, "delay"?: int, "group_id"?: str,
    "dedup_id"?: str}, ...]}``; message_svc checks the ids' lengths and that the queue is
    FIFO (``_fifo``). Other keys are ignored, as Zaqar does."""
    if not isinstance(doc, dict) or "messages" not in doc:
        raise bad_request("No messages were found in the request body.")
    items = doc["messages"]
    if not isinstance(items, list):
        raise bad_body(_NOT_SUPPORTED)
    messages = []
    for item in items:
        if not isinstance(item, dict):
            raise bad_body(_NOT_SUPPORTED)
        if "body" not in item:
            raise bad_body('Missing "body" field.')
        messages.append(
            messages_pb2.NewMessage(
                body=orjson.dumps(item["body"]),
                ttl=_int_field(item, "ttl"),
                delay=_int_field(item, "delay"),
                group_id=_str_field(item, "group_id"),
                dedup_id=_str_field(item, "dedup_id"),
            )
        )
    return messages_pb2.PostMessagesRequest(
        project=project, queue=queue, client_id=client_id, messages=messages
    )


def create_claim_request(
    project: str, queue: str, limit: int | None, doc: Any
) -> messages_pb2.CreateClaimRequest:
    """Body ``{"ttl"?: int, "grace"?: int}``; an absent body means the defaults."""
    body = _object(doc)
    request = messages_pb2.CreateClaimRequest(
        project=project, queue=queue, ttl=_int_field(body, "ttl"), grace=_int_field(body, "grace")
    )
    if limit is not None:
        request.limit = int32(limit)
    return request


def update_claim_request(
    project: str, queue: str, claim_id: str, doc: Any
) -> messages_pb2.UpdateClaimRequest:
    body = _object(doc)
    return messages_pb2.UpdateClaimRequest(
        project=project,
        queue=queue,
        claim_id=claim_id,
        ttl=_int_field(body, "ttl"),
        grace=_int_field(body, "grace"),
    )


def _str_field(doc: Mapping[str, Any], name: str) -> str | None:
    """An optional string field of a JSON object."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_body(f'The value of the "{name}" field must be a str.')
    return value


def _json_field(doc: Mapping[str, Any], name: str) -> bytes:
    """A field passed on as JSON bytes (the service checks its type); absent means empty."""
    return orjson.dumps(doc[name]) if name in doc else b""


def create_subscription_request(
    project: str, queue: str, doc: Any
) -> notifier_pb2.CreateSubscriptionRequest:
    """``{"subscriber": str, "ttl"?: int, "options"?: object}``; scheme, ttl range and options
    are checked by notifier_svc."""
    body = _object(doc)
    subscriber = _str_field(body, "subscriber")
    if subscriber is None:
        raise bad_request("Missing parameter subscriber in body.")
    return notifier_pb2.CreateSubscriptionRequest(
        project=project,
        queue=queue,
        subscriber=subscriber,
        ttl=_int_field(body, "ttl"),
        options=_json_field(body, "options"),
    )


def update_subscription_request(
    project: str, queue: str, subscription_id: str, doc: Any
) -> notifier_pb2.UpdateSubscriptionRequest:
    body = _object(doc)
    return notifier_pb2.UpdateSubscriptionRequest(
        project=project,
        queue=queue,
        subscription_id=subscription_id,
        subscriber=_str_field(body, "subscriber"),
        ttl=_int_field(body, "ttl"),
        options=_json_field(body, "options"),
    )


def confirm_subscription_request(
    project: str, queue: str, subscription_id: str, doc: Any
) -> notifier_pb2.ConfirmSubscriptionRequest:
    """``{"confirmed": true|false}``, required."""
    confirmed = _object(doc).get("confirmed")
    if not isinstance(confirmed, bool):
        raise bad_body('The request body must hold "confirmed": true or false.')
    return notifier_pb2.ConfirmSubscriptionRequest(
        project=project, queue=queue, subscription_id=subscription_id, confirmed=confirmed
    )


# Responses -------------------------------------------------------------------------------------


def queue_href(queue: str) -> str:
    return "/v2/queues/" + queue


def message_href(queue: str, message_id: str, claim_id: str = "") -> str:
    href = f"/v2/queues/{queue}/messages/{message_id}"
    return f"{href}?claim_id={claim_id}" if claim_id else href


def claim_href(queue: str, claim_id: str) -> str:
    return f"/v2/queues/{queue}/claims/{claim_id}"


def messages_location(queue: str, ids: Iterable[str]) -> str:
    return f"/v2/queues/{queue}/messages?ids=" + ",".join(ids)


def queue_doc(queue: queues_pb2.Queue, detailed: bool) -> dict[str, Any]:
    if detailed:
        return {
            "name": queue.name,
            "metadata": orjson.Fragment(queue.metadata or b"{}"),
            "href": queue_href(queue.name),
        }
    return {"name": queue.name, "href": queue_href(queue.name)}


def queue_list_doc(
    response: queues_pb2.ListQueuesResponse, detailed: bool, next_href: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "queues": [queue_doc(q, detailed) for q in response.queues],
        "links": [{"rel": "next", "href": next_href}] if next_href else [],
    }
    if response.HasField("count"):
        doc["count"] = response.count
    return doc


def message_doc(message: common_pb2.Message, queue: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": message.id,
        "href": message_href(queue, message.id, message.claim_id),
        "ttl": message.ttl,
        "age": message.age,
        "body": orjson.Fragment(message.body),
    }
    if message.checksum:
        doc["checksum"] = message.checksum
    if message.group_id:
        doc["group_id"] = message.group_id
    return doc


def message_docs(messages: Iterable[common_pb2.Message], queue: str) -> list[dict[str, Any]]:
    return [message_doc(m, queue) for m in messages]


def message_page_doc(
    messages: Iterable[common_pb2.Message], queue: str, next_href: str | None
) -> dict[str, Any]:
    docs = message_docs(messages, queue)
    links = [{"rel": "next", "href": next_href}] if docs and next_href else []
    return {"messages": docs, "links": links}


def popped_doc(message: common_pb2.Message) -> dict[str, Any]:
    """Pop's shape differs from a listed message: no href, the pop claim's id and count."""
    doc: dict[str, Any] = {
        "id": message.id,
        "age": message.age,
        "ttl": message.ttl,
        "body": orjson.Fragment(message.body),
        "claim_id": message.claim_id or None,
        "claim_count": message.claim_count,
    }
    if message.group_id:
        doc["group_id"] = message.group_id
    return doc


def claim_doc(claim: messages_pb2.Claim, queue: str) -> dict[str, Any]:
    return {
        "age": claim.age,
        "ttl": claim.ttl,
        "messages": message_docs(claim.messages, queue),
        "href": claim_href(queue, claim.id),
    }


def _iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _summary_doc(summary: common_pb2.MessageSummary, queue: str) -> dict[str, Any]:
    return {
        "age": summary.age,
        "created": _iso(summary.created),
        "href": message_href(queue, summary.id),
    }


def stats_doc(stats: common_pb2.QueueStats, queue: str) -> dict[str, Any]:
    counts: dict[str, Any] = {"claimed": stats.claimed, "free": stats.free, "total": stats.total}
    if stats.HasField("newest"):
        counts["newest"] = _summary_doc(stats.newest, queue)
    if stats.HasField("oldest"):
        counts["oldest"] = _summary_doc(stats.oldest, queue)
    return {"messages": counts}


def subscription_doc(subscription: notifier_pb2.Subscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "source": subscription.source,
        "subscriber": subscription.subscriber,
        "ttl": subscription.ttl,
        "age": subscription.age,
        "options": orjson.Fragment(subscription.options or b"{}"),
        "confirmed": subscription.confirmed,
    }


def page_links(next_href: str | None) -> list[dict[str, str]]:
    """Zaqar's ``links``: a next link on every non-empty page."""
    return [{"rel": "next", "href": next_href}] if next_href else []


def notification_doc(notification: notifier_pb2.Notification) -> dict[str, Any]:
    """A message pushed to a subscribed socket, as Zaqar's notifier sends it (a topic's
    names its topic, and carries the message's id, as its webhooks get it)."""
    message = notification.message
    if notification.topic:
        return {
            "ttl": message.ttl,
            "body": orjson.Fragment(message.body or b"null"),
            "Message_Type": "Notification",
            "topic_name": notification.topic,
            "message_id": message.id,
        }
    return {
        "ttl": message.ttl,
        "body": orjson.Fragment(message.body or b"null"),
        "Message_Type": "Notification",
        "queue_name": notification.queue,
    }
