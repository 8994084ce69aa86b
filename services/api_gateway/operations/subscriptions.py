"""Subscription operations: create, list, get, update, delete, confirm (notifier_svc).

Each takes the name of the queue subscribed to, or with ``topic=True`` of the topic (the
request then names it as its ``topic``: a queue's and a topic's subscriptions are apart).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from zaqar_grpc.v2 import notifier_pb2

from services.api_gateway import translate
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams


class _Sourced(Protocol):
    queue: str
    topic: str


R = TypeVar("R", bound=_Sourced)


def _of(request: R, topic: bool) -> R:
    """``request`` naming its queue as a topic when ``topic``."""
    if topic:
        request.topic, request.queue = request.queue, ""
    return request


async def create_subscription(
    up: Upstreams, caller: Caller, queue: str, doc: Any, *, topic: bool = False
) -> Outcome:
    """201 ``{"subscription_id"}``, also when an unconfirmed subscriber subscribes again."""
    request = _of(translate.create_subscription_request(caller.project, queue, doc), topic)
    # The caller's token goes along: a trust+ subscriber's trust is created as the caller.
    response = await up.subscriptions.CreateSubscription(
        request, timeout=up.timeout, metadata=caller.as_caller()
    )
    return Outcome(
        201,
        {"subscription_id": response.subscription_id},
        ws_body={
            "subscription_id": response.subscription_id,
            "message": f"Subscription {queue} created.",
        },
    )


async def list_subscriptions(
    up: Upstreams,
    caller: Caller,
    queue: str,
    *,
    limit: int | None,
    marker: str | None,
    next_link: NextLink,
    topic: bool = False,
) -> Outcome:
    request = _of(notifier_pb2.ListSubscriptionsRequest(
        project=caller.project, queue=queue, marker=marker or ""
    ), topic)
    if limit is not None:
        request.limit = translate.int32(limit)
    response = await up.subscriptions.ListSubscriptions(request, timeout=up.timeout)
    docs = [translate.subscription_doc(s) for s in response.subscriptions]
    link = next_link(response.next_marker) if docs and response.next_marker else None
    return Outcome(200, {"subscriptions": docs, "links": translate.page_links(link)})


def _ref(
    caller: Caller, queue: str, subscription_id: str, topic: bool
) -> notifier_pb2.SubscriptionRef:
    return _of(notifier_pb2.SubscriptionRef(
        project=caller.project, queue=queue, subscription_id=subscription_id
    ), topic)


async def get_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, *, topic: bool = False
) -> Outcome:
    request = _ref(caller, queue, subscription_id, topic)
    subscription = await up.subscriptions.GetSubscription(request, timeout=up.timeout)
    return Outcome(200, translate.subscription_doc(subscription))


async def update_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, doc: Any, *,
    topic: bool = False,
) -> Outcome:
    """``doc``: any of ``subscriber``, ``ttl``, ``options``."""
    request = _of(
        translate.update_subscription_request(caller.project, queue, subscription_id, doc), topic
    )
    await up.subscriptions.UpdateSubscription(
        request, timeout=up.timeout, metadata=caller.as_caller()
    )
    return Outcome(204)


async def delete_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, *, topic: bool = False
) -> Outcome:
    request = _ref(caller, queue, subscription_id, topic)
    await up.subscriptions.DeleteSubscription(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Subscription {subscription_id} removed.")


async def confirm_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, doc: Any, *,
    topic: bool = False,
) -> Outcome:
    """``doc``: ``{"confirmed": bool}``."""
    request = _of(
        translate.confirm_subscription_request(caller.project, queue, subscription_id, doc),
        topic,
    )
    await up.subscriptions.ConfirmSubscription(request, timeout=up.timeout)
    return Outcome(204)
