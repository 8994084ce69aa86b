"""Queue subscribers (``queue://NAME``): a subscription that posts each message of its queue
into another queue of the same project (docs/queue-subscribers.md).

This module holds the rules of such subscriptions: the subscriber URI, and the refusal of a
subscription that would make a loop (a message posted back, through any chain of queue
subscribers, into the queue it came from). The delivery itself is ``delivery/queue.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from services.common import limits
from services.common.errors import InvalidArgument
from services.notifier_svc.storage.base import Subscription

SCHEME = "queue"
# The delivery option that holds the id of the message a queue subscriber's delivery posts:
# its post is keyed by (subscription, message), so that it is made once however many
# deliveries of that message there are (a hand-over made again).
MESSAGE_ID_OPTION = "_message_id"
# Queues looked at, at most, when a new queue subscriber is checked for a loop.
LOOP_WALK_MAX = 1_000


def target(uri: str) -> str | None:
    """The queue a ``queue://NAME`` subscriber names; None for any other subscriber."""
    if not uri.startswith(SCHEME + "://"):
        return None
    return uri[len(SCHEME) + 3:]


def check_subscriber(uri: str) -> None:
    """``queue://NAME`` with a valid queue name and nothing else."""
    name = target(uri)
    if name is None or not limits.valid_queue_name(name):
        raise InvalidArgument(
            f"The subscriber {uri} is not a valid queue:// URI: queue://NAME, NAME a queue "
            "name of 1 to 64 letters, digits, '_', '-' and '.'."
        )


def is_queue(uri: str) -> bool:
    return urlsplit(uri).scheme == SCHEME


Subscribers = Callable[[str, str], Awaitable[list[Subscription]]]
"""The live subscriptions of (project, queue), wherever they are stored."""


async def check_no_loop(subscribers: Subscribers, project: str, queue: str, uri: str) -> None:
    """Refuse a ``queue://`` subscriber of ``queue`` from which, following the project's queue
    subscribers, the messages would come back to ``queue`` (itself included).

    Subscriptions made at the same time are not seen by each other's walk: two made at once
    that close a loop together are both accepted (see docs/queue-subscribers.md).
    """
    start = target(uri)
    if start is None:
        return
    seen: set[str] = set()
    todo = deque([start])
    while todo:
        current = todo.popleft()
        if current == queue:
            raise InvalidArgument(
                f"The subscriber {uri} would post the messages of queue {queue} back into "
                "it (a loop of queue subscribers)."
            )
        if current in seen:
            continue
        seen.add(current)
        if len(seen) > LOOP_WALK_MAX:
            raise InvalidArgument(
                f"The subscriber {uri} leads to more than {LOOP_WALK_MAX} queues through "
                "queue subscribers."
            )
        for subscription in await subscribers(project, current):
            name = target(subscription.subscriber)
            if name is not None:
                todo.append(name)
