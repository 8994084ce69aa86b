"""The WebSocket actions of Zaqar v2 (contract §7), each a thin call of an operation.

Every action names the body keys it requires and the HTTP route it mirrors; the route selects
the same per-route error overrides as HTTP (``errors.ROUTE_OVERRIDES``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.api_gateway.inputs import MESSAGES_BODY_MAX, QUEUE_BODY_MAX, SMALL_BODY_MAX
from services.api_gateway.operations import (
    Caller,
    Outcome,
    claims,
    home,
    messages,
    queues,
    redrive,
    topics,
)
from services.api_gateway.operations import subscriptions as subs
from services.api_gateway.operations.waiting import Gone
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import params as p
from services.api_gateway.websocket.push import Watches
from services.common.limits import SUBSCRIPTION_TTL_DEFAULT


@dataclass(frozen=True, slots=True)
class Call:
    """One request on a connection: who asks, its headers and body, the connection's state."""

    up: Upstreams
    caller: Caller
    headers: Mapping[str, Any]
    body: Mapping[str, Any]
    binary: bool
    watches: Watches
    # Returns when the connection closes (cancels a request that waits: long polling).
    gone: Gone | None = None

    @property
    def queue(self) -> str:
        return p.text(self.body, "queue_name")

    @property
    def topic(self) -> str:
        return p.text(self.body, "topic_name")


Handler = Callable[[Call], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Action:
    handler: Handler
    required: tuple[str, ...] = ()
    route: str | None = None
    # At least one of these keys (message_delete_many: ids, claim ids or pop).
    one_of: tuple[str, ...] = ()
    # The largest body the HTTP route of the action takes (``inputs.py``); a frame may be
    # that much larger than its envelope (``server.frame_max``).
    body_max: int = SMALL_BODY_MAX


Q = "/v2/queues/{queue_name}"
T = "/v2/topics/{topic_name}"


# Node -------------------------------------------------------------------------------------


async def _authenticate(c: Call) -> Outcome:
    # No-auth mode: the project comes from X-Project-ID; nothing to check.
    return Outcome(200, {"message": "Authentified."})


async def _home(c: Call) -> Outcome:
    return home.home_doc()


async def _health(c: Call) -> Outcome:
    roles = c.headers.get("x-roles")
    return await home.health(c.up, roles if isinstance(roles, str) else None)


async def _ping(c: Call) -> Outcome:
    return await home.ping(c.up)


# Queues -----------------------------------------------------------------------------------

_QUEUE_LIST_FIELDS: Final = ("limit", "detailed", "name", "with_count")


async def _queue_list(c: Call) -> Outcome:
    return await queues.list_queues(
        c.up,
        c.caller,
        limit=p.opt_int(c.body, "limit"),
        marker=p.opt_text(c.body, "marker"),
        detailed=p.flag(c.body, "detailed"),
        name=p.opt_text(c.body, "name"),
        with_count=p.flag(c.body, "with_count"),
        filters={},
        next_link=p.next_link("/v2/queues", c.body, _QUEUE_LIST_FIELDS),
    )


async def _queue_create(c: Call) -> Outcome:
    return await queues.create_queue(c.up, c.caller, c.queue, c.body.get("metadata"))


async def _queue_get(c: Call) -> Outcome:
    return await queues.get_queue(c.up, c.caller, c.queue)


async def _queue_delete(c: Call) -> Outcome:
    return await queues.delete_queue(c.up, c.caller, c.queue)


async def _queue_stats(c: Call) -> Outcome:
    return await queues.queue_stats(c.up, c.caller, c.queue)


async def _queue_purge(c: Call) -> Outcome:
    return await queues.purge_queue(c.up, c.caller, c.queue, dict(c.body))


async def _queue_redrive(c: Call) -> Outcome:
    doc = {k: c.body[k] for k in ("destination", "max_per_second") if k in c.body}
    return await redrive.start_redrive(c.up, c.caller, c.queue, doc)


async def _queue_redrive_get(c: Call) -> Outcome:
    return await redrive.get_redrive(c.up, c.caller, c.queue)


async def _queue_redrive_delete(c: Call) -> Outcome:
    return await redrive.cancel_redrive(c.up, c.caller, c.queue)


# Messages ---------------------------------------------------------------------------------

_MESSAGE_LIST_FIELDS: Final = ("limit", "echo", "include_claimed", "include_delayed")


async def _message_list(c: Call) -> Outcome:
    return await messages.list_messages(
        c.up,
        c.caller,
        c.queue,
        limit=p.opt_int(c.body, "limit"),
        marker=p.opt_text(c.body, "marker"),
        echo=p.flag(c.body, "echo"),
        include_claimed=p.flag(c.body, "include_claimed"),
        include_delayed=p.flag(c.body, "include_delayed"),
        next_link=p.next_link(f"/v2/queues/{c.queue}/messages", c.body, _MESSAGE_LIST_FIELDS),
        wait=p.opt_int(c.body, "wait"),
        gone=c.gone,
    )


async def _message_get(c: Call) -> Outcome:
    return await messages.get_message(c.up, c.caller, c.queue, p.text(c.body, "message_id"))


async def _message_get_many(c: Call) -> Outcome:
    ids = p.opt_texts(c.body, "message_ids") or []
    return await messages.get_messages(c.up, c.caller, c.queue, ids)


async def _message_post(c: Call) -> Outcome:
    return await messages.post_messages(c.up, c.caller, c.queue, dict(c.body))


async def _message_delete(c: Call) -> Outcome:
    return await messages.delete_message(
        c.up, c.caller, c.queue, p.text(c.body, "message_id"), p.opt_text(c.body, "claim_id")
    )


async def _message_delete_many(c: Call) -> Outcome:
    return await messages.delete_messages(
        c.up,
        c.caller,
        c.queue,
        ids=p.opt_texts(c.body, "message_ids"),
        pop=p.opt_int(c.body, "pop"),
        claim_ids=p.opt_texts(c.body, "claim_ids"),
    )


# Claims -----------------------------------------------------------------------------------


async def _claim_create(c: Call) -> Outcome:
    limit = p.opt_int(c.body, "limit")
    return await claims.create_claim(
        c.up, c.caller, c.queue, limit, dict(c.body), wait=p.opt_int(c.body, "wait"), gone=c.gone
    )


async def _claim_get(c: Call) -> Outcome:
    return await claims.get_claim(c.up, c.caller, c.queue, p.text(c.body, "claim_id"))


async def _claim_update(c: Call) -> Outcome:
    claim_id = p.text(c.body, "claim_id")
    return await claims.update_claim(c.up, c.caller, c.queue, claim_id, dict(c.body))


async def _claim_delete(c: Call) -> Outcome:
    return await claims.delete_claim(c.up, c.caller, c.queue, p.text(c.body, "claim_id"))


# Subscriptions ----------------------------------------------------------------------------


async def _subscription_create(c: Call) -> Outcome:
    if c.body.get("subscriber"):
        return await subs.create_subscription(c.up, c.caller, c.queue, dict(c.body))
    # No subscriber: the socket itself subscribes, for as long as it is open (or the ttl).
    ttl = p.opt_int(c.body, "ttl")
    ttl = SUBSCRIPTION_TTL_DEFAULT if ttl is None else ttl
    subscription_id = await c.watches.subscribe(c.caller, c.queue, ttl, c.binary)
    body = {"subscription_id": subscription_id, "message": f"Subscription {c.queue} created."}
    return Outcome(201, body)


async def _subscription_list(c: Call) -> Outcome:
    return await subs.list_subscriptions(
        c.up,
        c.caller,
        c.queue,
        limit=p.opt_int(c.body, "limit"),
        marker=p.opt_text(c.body, "marker"),
        next_link=p.next_link(f"/v2/queues/{c.queue}/subscriptions", c.body, ("limit",)),
    )


async def _subscription_get(c: Call) -> Outcome:
    subscription_id = p.text(c.body, "subscription_id")
    return await subs.get_subscription(c.up, c.caller, c.queue, subscription_id)


async def _subscription_delete(c: Call) -> Outcome:
    subscription_id = p.text(c.body, "subscription_id")
    if c.watches.cancel(subscription_id):
        return Outcome(204, ws_body=f"Subscription {subscription_id} removed.")
    return await subs.delete_subscription(c.up, c.caller, c.queue, subscription_id)


# Topics -----------------------------------------------------------------------------------


async def _topic_list(c: Call) -> Outcome:
    return await topics.list_topics(
        c.up,
        c.caller,
        limit=p.opt_int(c.body, "limit"),
        marker=p.opt_text(c.body, "marker"),
        detailed=p.flag(c.body, "detailed"),
        name=p.opt_text(c.body, "name"),
        with_count=p.flag(c.body, "with_count"),
        filters={},
        next_link=p.next_link("/v2/topics", c.body, _QUEUE_LIST_FIELDS),
    )


async def _topic_create(c: Call) -> Outcome:
    return await topics.create_topic(c.up, c.caller, c.topic, c.body.get("metadata"))


async def _topic_get(c: Call) -> Outcome:
    return await topics.get_topic(c.up, c.caller, c.topic)


async def _topic_delete(c: Call) -> Outcome:
    return await topics.delete_topic(c.up, c.caller, c.topic)


async def _topic_stats(c: Call) -> Outcome:
    return await topics.topic_stats(c.up, c.caller, c.topic)


async def _topic_purge(c: Call) -> Outcome:
    return await topics.purge_topic(c.up, c.caller, c.topic, dict(c.body))


async def _topic_message_post(c: Call) -> Outcome:
    return await topics.post_topic_messages(c.up, c.caller, c.topic, dict(c.body))


async def _topic_subscription_create(c: Call) -> Outcome:
    if c.body.get("subscriber"):
        return await subs.create_subscription(c.up, c.caller, c.topic, dict(c.body), topic=True)
    ttl = p.opt_int(c.body, "ttl")
    ttl = SUBSCRIPTION_TTL_DEFAULT if ttl is None else ttl
    subscription_id = await c.watches.subscribe(c.caller, c.topic, ttl, c.binary, topic=True)
    body = {"subscription_id": subscription_id, "message": f"Subscription {c.topic} created."}
    return Outcome(201, body)


async def _topic_subscription_list(c: Call) -> Outcome:
    return await subs.list_subscriptions(
        c.up,
        c.caller,
        c.topic,
        limit=p.opt_int(c.body, "limit"),
        marker=p.opt_text(c.body, "marker"),
        next_link=p.next_link(f"/v2/topics/{c.topic}/subscriptions", c.body, ("limit",)),
        topic=True,
    )


async def _topic_subscription_get(c: Call) -> Outcome:
    subscription_id = p.text(c.body, "subscription_id")
    return await subs.get_subscription(c.up, c.caller, c.topic, subscription_id, topic=True)


async def _topic_subscription_delete(c: Call) -> Outcome:
    subscription_id = p.text(c.body, "subscription_id")
    if c.watches.cancel(subscription_id):
        return Outcome(204, ws_body=f"Subscription {subscription_id} removed.")
    return await subs.delete_subscription(c.up, c.caller, c.topic, subscription_id, topic=True)


_QN = ("queue_name",)
_TN = ("topic_name",)

ACTIONS: Final[Mapping[str, Action]] = {
    "authenticate": Action(_authenticate),
    "get_home_doc": Action(_home, route="GET /v2/"),
    "check_node_health": Action(_health, route="GET /v2/health"),
    "ping_node": Action(_ping, route="GET /v2/ping"),
    "queue_list": Action(_queue_list, route="GET /v2/queues"),
    "queue_create": Action(_queue_create, _QN, f"PUT {Q}", body_max=QUEUE_BODY_MAX),
    "queue_get": Action(_queue_get, _QN, f"GET {Q}"),
    "queue_delete": Action(_queue_delete, _QN, f"DELETE {Q}"),
    "queue_get_stats": Action(_queue_stats, _QN, f"GET {Q}/stats"),
    "queue_purge": Action(_queue_purge, ("queue_name", "resource_types"), f"POST {Q}/purge"),
    "queue_redrive": Action(_queue_redrive, _QN, f"POST {Q}/redrive"),
    "queue_redrive_get": Action(_queue_redrive_get, _QN, f"GET {Q}/redrive"),
    "queue_redrive_delete": Action(_queue_redrive_delete, _QN, f"DELETE {Q}/redrive"),
    "message_list": Action(_message_list, _QN, f"GET {Q}/messages"),
    "message_get": Action(
        _message_get, ("queue_name", "message_id"), f"GET {Q}/messages/{{message_id}}"
    ),
    "message_get_many": Action(
        _message_get_many, ("queue_name", "message_ids"), f"GET {Q}/messages"
    ),
    "message_post": Action(
        _message_post, ("queue_name", "messages"), f"POST {Q}/messages",
        body_max=MESSAGES_BODY_MAX,
    ),
    "message_delete": Action(
        _message_delete, ("queue_name", "message_id"), f"DELETE {Q}/messages/{{message_id}}"
    ),
    "message_delete_many": Action(
        _message_delete_many,
        _QN,
        f"DELETE {Q}/messages",
        one_of=("message_ids", "claim_ids", "pop"),
    ),
    "claim_create": Action(_claim_create, _QN, f"POST {Q}/claims"),
    "claim_get": Action(_claim_get, ("queue_name", "claim_id"), f"GET {Q}/claims/{{claim_id}}"),
    "claim_update": Action(
        _claim_update, ("queue_name", "claim_id"), f"PATCH {Q}/claims/{{claim_id}}"
    ),
    "claim_delete": Action(
        _claim_delete, ("queue_name", "claim_id"), f"DELETE {Q}/claims/{{claim_id}}"
    ),
    "subscription_create": Action(_subscription_create, _QN, f"POST {Q}/subscriptions"),
    "subscription_list": Action(_subscription_list, _QN, f"GET {Q}/subscriptions"),
    "subscription_get": Action(
        _subscription_get,
        ("queue_name", "subscription_id"),
        f"GET {Q}/subscriptions/{{subscription_id}}",
    ),
    "subscription_delete": Action(
        _subscription_delete,
        ("queue_name", "subscription_id"),
        f"DELETE {Q}/subscriptions/{{subscription_id}}",
    ),
    "topic_list": Action(_topic_list, route="GET /v2/topics"),
    "topic_create": Action(_topic_create, _TN, f"PUT {T}", body_max=QUEUE_BODY_MAX),
    "topic_get": Action(_topic_get, _TN, f"GET {T}"),
    "topic_delete": Action(_topic_delete, _TN, f"DELETE {T}"),
    "topic_get_stats": Action(_topic_stats, _TN, f"GET {T}/stats"),
    "topic_purge": Action(_topic_purge, ("topic_name", "resource_types"), f"POST {T}/purge"),
    "topic_message_post": Action(
        _topic_message_post, ("topic_name", "messages"), f"POST {T}/messages",
        body_max=MESSAGES_BODY_MAX,
    ),
    "topic_subscription_create": Action(
        _topic_subscription_create, _TN, f"POST {T}/subscriptions"
    ),
    "topic_subscription_list": Action(_topic_subscription_list, _TN, f"GET {T}/subscriptions"),
    "topic_subscription_get": Action(
        _topic_subscription_get,
        ("topic_name", "subscription_id"),
        f"GET {T}/subscriptions/{{subscription_id}}",
    ),
    "topic_subscription_delete": Action(
        _topic_subscription_delete,
        ("topic_name", "subscription_id"),
        f"DELETE {T}/subscriptions/{{subscription_id}}",
    ),
}
