"""Request rules of the Subscriptions API (contract §2, §4, §5), with Zaqar's wording."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from services.common import limits
from services.common.errors import InvalidArgument, InvalidQueueName
from services.notifier_svc import fanout, filter_policy, retry

SUBSCRIBER_TYPES = ("http", "https", "mailto", "trust+http", "trust+https", "queue")
MISSING_SUBSCRIBER = "Missing parameter subscriber in body."
SUBSCRIBER_TYPE_ERROR = (
    "The subscriber type of subscription must be supported in the list "
    "['http', 'https', 'mailto', 'trust+http', 'trust+https', 'queue']."
)
OPTIONS_ERROR = "Options must be a dict."
TTL_ERROR = (
    f"The TTL for a subscription must be at least {limits.SUBSCRIPTION_TTL_MIN} seconds long."
)
NOTHING_TO_UPDATE = "No subscription to create."


def queue_ref(project: str, queue: str) -> None:
    """The project id (1..256 characters) and queue name (``^[a-zA-Z0-9_\\-.]{1,64}$``)."""
    if not limits.valid_project(project) or not limits.valid_queue_name(queue):
        raise InvalidQueueName()




def subscriber(uri: str) -> str:
    """A subscriber URI of a supported type: ``http(s)://host…``, ``trust+http(s)://host…``,
    ``mailto:address`` or ``queue://NAME`` (a queue of the same project)."""
    if not uri:
        raise InvalidArgument(MISSING_SUBSCRIBER)
    if fanout.is_queue(uri):
        fanout.check_subscriber(uri)
        return uri
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        raise InvalidArgument(SUBSCRIBER_TYPE_ERROR) from None
    if parts.scheme not in SUBSCRIBER_TYPES:
        raise InvalidArgument(SUBSCRIBER_TYPE_ERROR)
    if parts.scheme == "mailto":
        if "@" not in parts.path:
            raise InvalidArgument(f"The subscriber {uri} is not a valid mailto: URI.")
    elif not host:
        raise InvalidArgument(f"The subscriber {uri} has no host.")
    return uri


def ttl(value: int | None) -> int:
    """The subscription TTL: ``None`` means the default (3600); otherwise at least 60."""
    if value is None:
        return limits.SUBSCRIPTION_TTL_DEFAULT
    if value < limits.SUBSCRIPTION_TTL_MIN:
        raise InvalidArgument(TTL_ERROR)
    return value


def options(raw: bytes) -> dict[str, Any]:
    """The options JSON object (empty bytes mean ``{}``), with its ``_retry_policy`` and
    ``filter_policy`` checked."""
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidArgument(OPTIONS_ERROR) from None
    if not isinstance(value, dict):
        raise InvalidArgument(OPTIONS_ERROR)
    if "_retry_policy" in value:
        retry.check_policy(value["_retry_policy"])
    filter_policy.compile_policy(value.get(filter_policy.OPTION))
    headers = value.get("post_headers")
    if headers is not None and not (
        isinstance(headers, Mapping) and all(isinstance(v, str) for v in headers.values())
    ):
        raise InvalidArgument("post_headers must be an object of strings.")
    post_data = value.get("post_data")
    if post_data is not None and not isinstance(post_data, str | dict | list):
        raise InvalidArgument("post_data must be a string, an object or an array.")
    return value
