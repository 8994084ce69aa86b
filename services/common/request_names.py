"""The names a request carries, checked before its method runs.

Every method of a ``zaqar.v2`` service whose request names a project (and a queue or a topic)
has those names checked by the error interceptor (:mod:`services.common.errors`) before the
method is called. A bad one is refused with the error the service itself gives
(INVALID_QUEUE_NAME or INVALID_TOPIC_NAME), and nothing is done for it: no store is read, no
other service is asked, no long poll waits.

The rule of a method is read once from its request's descriptor, so a method added later is
covered without a change here:

- ``queue`` and ``topic`` (a subscription): the topic's rule when it names one, else the
  queue's (the service refuses both at once);
- ``queue``: the project and the queue name;
- ``topic``: the project and the topic name;
- ``project`` alone (a listing): the project, with the topic's error in ``zaqar.v2.Topics``
  and the queue's elsewhere.

The services keep their own checks; this is the floor under them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool

from services.common import limits
from services.common.errors import InvalidQueueName, InvalidTopicName

Check = Callable[[Any], None]
PACKAGE = "zaqar.v2."


def _queue(request: Any) -> None:
    if not limits.valid_project(request.project) or not limits.valid_queue_name(request.queue):
        raise InvalidQueueName()


def _topic(request: Any) -> None:
    if not limits.valid_project(request.project) or not limits.valid_queue_name(request.topic):
        raise InvalidTopicName()


def _queue_or_topic(request: Any) -> None:
    (_topic if request.topic else _queue)(request)


def _queue_project(request: Any) -> None:
    if not limits.valid_project(request.project):
        raise InvalidQueueName()


def _topic_project(request: Any) -> None:
    if not limits.valid_project(request.project):
        raise InvalidTopicName()


def rule_of(method: str) -> Check | None:
    """The check of ``method`` (``/zaqar.v2.Messages/PostMessages``); None when its request
    names no project, or the method is not one of ``zaqar.v2`` (health, reflection)."""
    service, _, name = method.lstrip("/").rpartition("/")
    if not service.startswith(PACKAGE):
        return None
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    fields = found.input_type.fields_by_name
    if "project" not in fields:
        return None  # a batch, or a stream of them: each item is checked by the service
    if "queue" in fields:
        return _queue_or_topic if "topic" in fields else _queue
    if "topic" in fields:
        return _topic
    return _topic_project if service == f"{PACKAGE}Topics" else _queue_project
