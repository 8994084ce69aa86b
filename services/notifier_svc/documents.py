"""The JSON documents notifier_svc delivers, shaped as Zaqar's.

A notification is the message as posted plus ``Message_Type`` and ``queue_name``::

    {"body": <the body, byte for byte>, "ttl": 300, "Message_Type": "Notification",
     "queue_name": "q"}

A message of a queue with ``_enable_encrypt_messages`` is handed over sealed, and its
notification is stored sealed too (:data:`SEALED_PREFIX` and a JSON object with the envelope in
base64), so the outbox never holds its plaintext; the dispatcher has message_svc open the body
just before each attempt (:func:`opened`).

A message posted to a topic is delivered as a topic notification, its id included (a topic's
subscribers have no queue to read it from, and may use it to drop a delivery made twice)::

    {"body": <the body>, "ttl": 300, "Message_Type": "Notification", "topic_name": "t",
     "message_id": "…"}

A confirmation carries a pre-signed PUT of ``/v2/queues/{q}/subscriptions/{id}/confirm``
(``/v2/topics/{t}/…`` for a topic's; contract §5, §6) with the bodies that confirm or cancel
the subscription.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Final

import orjson
from zaqar_grpc.v2 import common_pb2

from services.common import signing
from services.common.message_keys import is_sealed
from services.notifier_svc import sources
from services.notifier_svc.storage.base import DeliveryKind, Subscription

_MESSAGES = {
    DeliveryKind.SUBSCRIPTION_CONFIRMATION: "You have chosen to subscribe to the {kind}: {name}",
    DeliveryKind.UNSUBSCRIBE_CONFIRMATION: (
        "You have unsubscribed successfully to the {kind}: {name}, you can resubscribe it by "
        "using confirmed=True."
    ),
}


SEALED_PREFIX: Final = b"sealed-notification:"
"""Start of a stored notification whose body is sealed; a plain document starts with ``{``."""


def notification(queue: str, message: common_pb2.Message) -> bytes:
    if is_sealed(message.body):
        return SEALED_PREFIX + orjson.dumps({
            "sealed": base64.b64encode(message.body).decode("ascii"),
            "ttl": message.ttl,
            "queue_name": queue,
        })
    return orjson.dumps({
        "body": orjson.Fragment(message.body or b"null"),
        "ttl": message.ttl,
        "Message_Type": DeliveryKind.NOTIFICATION.value,
        "queue_name": queue,
    })


def topic_notification(topic: str, message_id: str, body: bytes, ttl: int) -> bytes:
    return orjson.dumps({
        "body": orjson.Fragment(body or b"null"),
        "ttl": ttl,
        "Message_Type": DeliveryKind.NOTIFICATION.value,
        "topic_name": topic,
        "message_id": message_id,
    })


def confirm_path(subscription: Subscription) -> str:
    topic = sources.topic_of(subscription.queue)
    base = f"/v2/queues/{subscription.queue}" if topic is None else f"/v2/topics/{topic}"
    return f"{base}/subscriptions/{subscription.id}/confirm"


def confirmation(
    kind: DeliveryKind,
    subscription: Subscription,
    *,
    secret: str,
    expires: float,
    public_url: str = "",
) -> bytes:
    """A ``SubscriptionConfirmation`` or ``UnsubscribeConfirmation`` whose signed URL is valid
    until ``expires`` (Unix seconds)."""
    path = confirm_path(subscription)
    signed = signing.sign(
        secret, [path], ["PUT"], subscription.project, datetime.fromtimestamp(expires, UTC)
    )
    document: dict[str, object] = {}
    if public_url:
        document["WSGISubscribeURL"] = public_url.rstrip("/") + path
    topic = sources.topic_of(subscription.queue)
    document.update({
        "Message_Type": kind.value,
        "Message": _MESSAGES[kind].format(
            kind="queue" if topic is None else "topic", name=sources.name_of(subscription.queue)
        ),
        "URL-Signature": signed.signature,
        "URL-Methods": signed.methods[0],
        "URL-Paths": signed.paths[0],
        "X-Project-ID": signed.project,
        "URL-Expires": signed.expires,
        "SubscribeBody": {"confirmed": True},
        "UnsubscribeBody": {"confirmed": False},
        "queue_name" if topic is None else "topic_name": sources.name_of(subscription.queue),
    })
    return orjson.dumps(document)


def is_sealed_notification(document: bytes) -> bool:
    return document.startswith(SEALED_PREFIX)


def sealed_body(document: bytes) -> bytes:
    """The sealed body of a sealed notification."""
    return base64.b64decode(orjson.loads(document[len(SEALED_PREFIX):])["sealed"])


def opened(document: bytes, body: bytes) -> bytes:
    """The notification a sealed one stands for, with ``body`` (its plaintext)."""
    sealed = orjson.loads(document[len(SEALED_PREFIX):])
    return orjson.dumps({
        "body": orjson.Fragment(body or b"null"),
        "ttl": sealed["ttl"],
        "Message_Type": DeliveryKind.NOTIFICATION.value,
        "queue_name": sealed["queue_name"],
    })
