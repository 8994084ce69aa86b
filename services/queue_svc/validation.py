"""Request rules of the Queues API that are not about metadata (contract §2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from services.common import limits
from services.common.errors import InvalidArgument, InvalidQueueName
from services.queue_svc.storage.base import QueuePage

if TYPE_CHECKING:
    from services.queue_svc.storage.base import QueueStore, TopicStore

PURGEABLE = ("messages", "subscriptions")
# Zaqar prints the Python set literal; keep its exact text.
PURGE_ERROR = "Resource types must be a sub set of {'messages', 'subscriptions'}."


def check_project(project: str) -> None:
    if not limits.valid_project(project):
        raise InvalidQueueName()


def check_queue(project: str, queue: str) -> None:
    """The project id (1..256 characters) and queue name (``^[a-zA-Z0-9_\\-.]{1,64}$``)."""
    check_project(project)
    if not limits.valid_queue_name(queue):
        raise InvalidQueueName()




def metadata_filters(raw: Mapping[str, bytes]) -> dict[str, Any]:
    """Listing filters: metadata key -> the JSON value it must equal."""
    filters = {}
    for key, value in raw.items():
        try:
            filters[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidArgument(
                f"The filter on metadata key {key!r} is not a JSON value."
            ) from None
    return filters


def resource_types(raw: Iterable[str]) -> frozenset[str]:
    """What a purge removes: a subset of messages/subscriptions; none given means both."""
    types = frozenset(raw)
    if not types <= frozenset(PURGEABLE):
        raise InvalidArgument(PURGE_ERROR)
    return types or frozenset(PURGEABLE)


async def listed(
    store: QueueStore | TopicStore,
    project: str,
    *,
    limit: int | None,
    marker: str,
    name: str,
    with_count: bool,
    filters: Mapping[str, bytes],
) -> QueuePage:
    """A page of a listing of queues or topics, its parameters checked first. A ``name``
    filter that no name can contain is answered empty here, without asking the store
    (:func:`services.common.limits.may_be_in_a_name`)."""
    size = limits.page_limit(limit)
    wanted = metadata_filters(filters)
    if not limits.may_be_in_a_name(name):
        return QueuePage([], 0 if with_count else None)
    return await store.list(project, limit=size, marker=marker, name_contains=name,
                            metadata_filters=wanted, with_count=with_count)

