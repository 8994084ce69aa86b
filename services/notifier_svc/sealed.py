"""Sealed messages (queues with ``_enable_encrypt_messages``) on their way out of notifier_svc.

message_svc hands such messages over sealed, and they are stored sealed (outbox, watch feed).
Only message_svc decrypts: a delivery, or a notification streamed to a watcher, has it open
the body (``MessagesInternal.OpenBodies``) at the last moment, and the plaintext is never
stored here.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from zaqar_grpc.v2 import notifier_pb2

from services.common.errors import Unavailable
from services.common.message_keys import is_sealed
from services.notifier_svc import documents
from services.notifier_svc.storage.base import Delivery
from services.notifier_svc.upstream import MessageReplicas

log = logging.getLogger(__name__)


class SealedBodies:
    def __init__(self, messages: MessageReplicas) -> None:
        self._messages = messages

    async def open_delivery(self, delivery: Delivery) -> Delivery | None:
        """The delivery with its notification opened (the dispatcher's ``Opener``)."""
        bodies = await self._messages.open_bodies(
            delivery.project, delivery.queue, [documents.sealed_body(delivery.document)]
        )
        if bodies is None:
            return None
        return replace(delivery, document=documents.opened(delivery.document, bodies[0]))

    async def open_notification(
        self, project: str, notification: notifier_pb2.Notification
    ) -> notifier_pb2.Notification | None:
        """The notification for a watcher with its body opened; it unchanged when the body is
        not sealed; None (logged) when the body cannot be opened now."""
        if not is_sealed(notification.message.body):
            return notification
        try:
            bodies = await self._messages.open_bodies(
                project, notification.queue, [notification.message.body]
            )
        except Unavailable as exc:
            log.warning("sealed message not streamed to a watcher: %s", exc.description)
            return None
        if bodies is None:
            return None
        opened = notifier_pb2.Notification()
        opened.CopyFrom(notification)
        opened.message.body = bodies[0]
        return opened
