"""What a subscription subscribes to: a queue, or a topic (``zaqar.v2.Topics``).

notifier_svc keeps the subscriptions and the deliveries of both under one string, the *source
key*, where its store says ``queue``: a queue's name, or ``topic/<name>`` for a topic. No queue
name holds a ``/``, so a queue and a topic of one name never share a subscription, a delivery or
a watcher, and no request naming a queue reaches a topic's. The key stays inside notifier_svc:
the API shows a subscription's ``source`` as the bare name.
"""

from __future__ import annotations

from typing import Final

from services.common import limits
from services.common.errors import InvalidArgument, InvalidQueueName, InvalidTopicName

TOPIC_PREFIX: Final = "topic/"
BOTH: Final = "A subscription names a queue or a topic, not both."


def topic_key(project: str, topic: str) -> str:
    """The source key of a topic (its project and name checked).

    Raises:
        InvalidTopicName: the project id or the topic name is not valid.
    """
    if not limits.valid_project(project) or not limits.valid_queue_name(topic):
        raise InvalidTopicName()
    return TOPIC_PREFIX + topic


def key_of(project: str, queue: str, topic: str) -> str:
    """The source key a request names: its ``topic`` when it names one, else its ``queue``
    (both checked).

    Raises:
        InvalidArgument: both are given.
        InvalidQueueName, InvalidTopicName: the one given is not valid (or neither is).
    """
    if topic:
        if queue:
            raise InvalidArgument(BOTH)
        return topic_key(project, topic)
    if not limits.valid_project(project) or not limits.valid_queue_name(queue):
        raise InvalidQueueName()
    return queue


def topic_of(key: str) -> str | None:
    """The topic a source key names; None for a queue's."""
    return key[len(TOPIC_PREFIX):] if key.startswith(TOPIC_PREFIX) else None


def name_of(key: str) -> str:
    """The queue's or topic's name."""
    topic = topic_of(key)
    return key if topic is None else topic


def check(project: str, key: str) -> None:
    """A source key as :func:`key_of` makes them.

    Raises:
        InvalidQueueName, InvalidTopicName: it is not one.
    """
    topic = topic_of(key)
    if topic is not None:
        topic_key(project, topic)
    elif not limits.valid_project(project) or not limits.valid_queue_name(key):
        raise InvalidQueueName()
