"""Message filters: the public API of message_svc's filter plugins.

A filter sees the messages of a queue as they are posted (it may refuse them or change their
bodies) and on their way out: listed, got, claimed, popped and handed to notifier_svc for
delivery to subscribers (it may change their bodies). A package provides one by declaring an
entry point in the group ``zaqar_grpc.message_filters`` that names a :class:`MessageFilter`
subclass::

    [project.entry-points."zaqar_grpc.message_filters"]
    stamp = "my_package.filters:Stamp"

Filters run in message_svc, so every caller (HTTP, WebSocket, gRPC, coalesced batches) sees
the same behaviour. Which filters a queue has, and what happens when one fails:
docs/plugins.md, "Message filters". The built-in ``message_schema`` filter is ``schema.py``.

Filters are synchronous and run on message_svc's event loop: they must not block or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FilterContext", "FilterRejected", "Message", "MessageFilter", "Operation"]

Operation = Literal["post", "list", "get", "claim", "pop", "deliver"]
"""What the messages are going through: ``post``, or on their way out ``list``, ``get`` (one
or several by id), ``claim`` (a new claim, or one read again), ``pop``, ``deliver`` (handed to
notifier_svc for the queue's subscribers, right after the post)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a filter sees it.

    A filter changes a body by returning ``dataclasses.replace(message, body=new)``; only the
    body of a returned message is used, its other fields are for reading.
    """

    body: bytes
    """The message's body, as UTF-8 JSON text."""
    ttl: int
    """Seconds the message lives (on post: the queue's default when the caller gave none)."""
    id: str = ""
    """The message's id; "" on post (not stored yet)."""


@dataclass(frozen=True, slots=True)
class FilterContext:
    """Where the messages are."""

    project: str
    queue: str
    operation: Operation
    client_id: str = ""
    """The posting client's id (post); "" on the way out."""


class FilterRejected(Exception):
    """Raised by :meth:`MessageFilter.on_post` to refuse a post: the caller gets 400 with
    ``description`` (and, with ``index``, the position of the refused message in the post).
    Nothing of the post is stored."""

    def __init__(self, description: str, index: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.index = index


class MessageFilter:
    """Base class of message filters; override what the filter does.

    Each queue gets its own instance (:meth:`for_queue`), made once per version of the queue's
    metadata, so per-queue settings read from the metadata are prepared once. The methods get
    a queue's messages of one call in order and return as many messages, in the same order.
    """

    @classmethod
    def for_queue(cls, metadata: Mapping[str, Any]) -> MessageFilter | None:
        """The filter for a queue whose metadata is ``metadata`` (read only), or None when it
        has nothing to do on that queue. The default: ``cls()``."""
        return cls()

    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        """Check or change posted messages before they are stored.

        Raises:
            FilterRejected: to refuse the post.
        """
        return messages

    def on_read(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        """Change messages on their way out (the stored messages do not change)."""
        return messages
