"""Subscription operations: create, list, get, update, delete, confirm (notifier_svc)."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import notifier_pb2

from services.api_gateway import translate
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams


async def create_subscription(up: Upstreams, caller: Caller, queue: str, doc: Any) -> Outcome:
    """201 ``{"subscription_id"}``, also when an unconfirmed subscriber subscribes again."""
    request = translate.create_subscription_request(caller.project, queue, doc)
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
) -> Outcome:
    request = notifier_pb2.ListSubscriptionsRequest(
        project=caller.project, queue=queue, marker=marker or ""
    )
    if limit is not None:
        request.limit = translate.int32(limit)
    response = await up.subscriptions.ListSubscriptions(request, timeout=up.timeout)
    docs = [translate.subscription_doc(s) for s in response.subscriptions]
    link = next_link(response.next_marker) if docs and response.next_marker else None
    return Outcome(200, {"subscriptions": docs, "links": translate.page_links(link)})


def _ref(caller: Caller, queue: str, subscription_id: str) -> notifier_pb2.SubscriptionRef:
    return notifier_pb2.SubscriptionRef(
        project=caller.project, queue=queue, subscription_id=subscription_id
    )


async def get_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str
) -> Outcome:
    request = _ref(caller, queue, subscription_id)
    subscription = await up.subscriptions.GetSubscription(request, timeout=up.timeout)
    return Outcome(200, translate.subscription_doc(subscription))


async def update_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, doc: Any
) -> Outcome:
    """``doc``: any of ``subscriber``, ``ttl``, ``options``."""
    request = translate.update_subscription_request(caller.project, queue, subscription_id, doc)
    await up.subscriptions.UpdateSubscription(
        request, timeout=up.timeout, metadata=caller.as_caller()
    )
    return Outcome(204)


async def delete_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str
) -> Outcome:
    request = _ref(caller, queue, subscription_id)
    await up.subscriptions.DeleteSubscription(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Subscription {subscription_id} removed.")


async def confirm_subscription(
    up: Upstreams, caller: Caller, queue: str, subscription_id: str, doc: Any
) -> Outcome:
    """``doc``: ``{"confirmed": bool}``."""
    request = translate.confirm_subscription_request(caller.project, queue, subscription_id, doc)
    await up.subscriptions.ConfirmSubscription(request, timeout=up.timeout)
    return Outcome(204)
