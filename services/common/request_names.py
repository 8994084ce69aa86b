"""The names a request carries, checked before its method runs.

Every method of a ``zaqar.v2`` service whose request names a project (and a queue or a topic)
has those names checked by :class:`NamesInterceptor` before the method is called. It is the
innermost interceptor of every server (``grpc_server.py``): after the token interceptor, which
refuses an unauthenticated call first and scopes ``project`` to the token's, and inside the
error interceptor, which turns its refusal into a rich status. A bad name is refused with the
error the service itself gives (INVALID_QUEUE_NAME or INVALID_TOPIC_NAME), and nothing is done
for it: no store is read, no other service is asked, no long poll waits.

The rule of a method is read once from its request's descriptor, so a method added later is
covered without a change here:

- ``queue`` and ``topic`` (a subscription): the topic's rule when it names one, else the
  queue's (a request naming both is the service's to refuse);
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
from services.common.grpc_types import (
    Context,
    MethodHandler,
    MethodWrapping,
    UnaryStream,
    UnaryUnary,
    rewrapped,
    stream_within,
)

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


def _checked_unary(behavior: UnaryUnary, check: Check) -> UnaryUnary:
    async def checked(request: Any, context: Context) -> Any:
        check(request)
        return await behavior(request, context)

    return checked


class _Checked:
    """Entered before a server stream starts: the request's names checked (``stream_within``)."""

    __slots__ = ("_check", "_request")

    def __init__(self, check: Check, request: Any) -> None:
        self._check, self._request = check, request

    async def __aenter__(self) -> None:
        self._check(self._request)

    async def __aexit__(self, *exc: object) -> None:
        return None


def _checked_stream(behavior: UnaryStream, check: Check) -> UnaryStream:
    return stream_within(behavior, lambda request, context: _Checked(check, request))


class NamesInterceptor(MethodWrapping):
    """Checks the names of each request before its method runs (the module's docstring).
    A method whose requests name nothing (a batch, health, reflection) keeps its handler."""

    def wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        check = rule_of(method)
        if check is None:
            return handler
        return rewrapped(handler, lambda unary: _checked_unary(unary, check),
                         lambda stream: _checked_stream(stream, check)) or handler
