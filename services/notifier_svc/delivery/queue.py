"""Queue delivery: post the message into the queue a ``queue://NAME`` subscriber names, in
the subscription's project (docs/queue-subscribers.md).

The post goes through ``MessagesInternal.PostOnce`` keyed by the subscription and the message
(:func:`post_key`): the outbox delivers at least once (a delivery made, then its replica killed
before it was removed, is made again), message_svc may hand a message over twice (the answer
of the first hand-over lost: the same message in two deliveries), and message_svc stores a key
once, so each message reaches each target queue once. The body as posted (a sealed one was
opened by the dispatcher, in memory only; message_svc seals it again for an encrypted target),
the ttl the message had, capped by message_svc at the target's ``_default_message_ttl``, no
delay. A target that does not exist is created by the
post, as any post creates its queue. A post the target refuses for good (a body larger than its
``_max_messages_post_size``, say) counts as delivered, as a webhook's 4xx does: it will not get
better by retrying; it is logged.
"""

from __future__ import annotations

import logging

import orjson

from services.notifier_svc import fanout
from services.notifier_svc.storage.base import Delivery, DeliveryKind
from services.notifier_svc.upstream import MessageReplicas

log = logging.getLogger(__name__)

CLIENT_ID = "zaqar-queue-subscriber"
"""The ``client_id`` of the messages posted into target queues."""


class QueueSender:
    def __init__(self, messages: MessageReplicas) -> None:
        self._messages = messages

    async def send(self, delivery: Delivery) -> bool:
        """Raises: Unavailable (message_svc unreachable: the delivery stays pending)."""
        name = fanout.target(delivery.subscriber)
        if name is None:
            return True  # not a valid queue subscriber any more: nothing to do
        if delivery.kind is not DeliveryKind.NOTIFICATION:
            return True  # queue subscribers are never asked to confirm
        document = orjson.loads(delivery.document)
        body = orjson.dumps(document.get("body"))
        ttl = int(document.get("ttl") or 0)
        return await self._messages.post_once(
            delivery.project, name, post_key(delivery), body, ttl, client_id=CLIENT_ID
        )


def post_key(delivery: Delivery) -> str:
    """The key of a delivery's post: its subscription and message, so that a message reaches
    the target once however many deliveries of it there are (a hand-over from message_svc
    made again after its answer was lost makes new ones); the delivery's own id for one
    stored without the message's id."""
    message_id = delivery.options.get(fanout.MESSAGE_ID_OPTION)
    if isinstance(message_id, str) and message_id:
        return f"{delivery.subscription_id}/{message_id}"
    return delivery.id
