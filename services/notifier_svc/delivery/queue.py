"""Queue delivery: post the message into the queue a ``queue://NAME`` subscriber names, in
the subscription's project (docs/queue-subscribers.md).

The post goes through ``MessagesInternal.PostOnce`` with the delivery's id as its key: the
outbox delivers at least once (a delivery made, then its replica killed before it was removed,
is made again), and message_svc stores a key once, so each message reaches each target queue
once. The body as posted (a sealed one was opened by the dispatcher, in memory only; message_svc
seals it again for an encrypted target), the ttl the message had, capped by message_svc at the
target's ``_default_message_ttl``, no delay. A target that does not exist is created by the
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
            delivery.project, name, delivery.id, body, ttl, client_id=CLIENT_ID
        )
