"""The rules of topics: their reserved metadata, and the messages posted to them.

A topic's metadata follows the queue rules (``metadata.py``: a JSON object of at most 64 KiB,
JSON patches) with the reserved keys that mean something for a topic: ``_max_messages_post_size``
and ``_default_message_ttl`` (the queue ranges; GET fills in their defaults) and
``_retry_policy`` (its deliveries' retries). The other reserved queue keys describe how a
queue keeps and hands out messages, which a topic never does; they are refused rather than
ignored, so that a caller relying on one learns at once that it has no effect. Other keys
are free metadata, as on queues.

Messages posted to a topic follow the queue post rules, with Zaqar's descriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.common import bodies, limits, message_schema
from services.common.errors import InvalidArgument, InvalidBody, InvalidTopicName
from services.queue_svc import metadata as meta
from services.queue_svc.storage.base import MetadataPatch

DEFAULTS: Final[dict[str, object]] = {
    "_max_messages_post_size": limits.MESSAGE_POST_SIZE_MAX,
    "_default_message_ttl": limits.MESSAGE_TTL_DEFAULT,
}
QUEUE_ONLY: Final = (
    "_default_message_delay", "_dead_letter_queue", "_dead_letter_queue_messages_ttl",
    "_max_claim_count", "_enable_encrypt_messages", "_flavor", "_fifo", "_dedup_window",
    "_filters", message_schema.KEY,
)

NO_MESSAGES: Final = "No messages to enqueu."  # sic: Zaqar's text, clients match on it
MESSAGE_TTL: Final = (
    f"The TTL for a message may not exceed {limits.MESSAGE_TTL_MAX} seconds, and must be at "
    f"least {limits.MESSAGE_TTL_MIN} seconds long."
)
MESSAGE_DELAY: Final = (
    f"The delay for a message may not exceed {limits.MESSAGE_DELAY_MAX} seconds, and must be "
    f"at least {limits.MESSAGE_DELAY_MIN} seconds long."
)
NO_FIFO: Final = "group_id and dedup_id are not supported on topics (a topic keeps no order)."


def check_topic(project: str, topic: str) -> None:
    """The project id (1..256 characters) and topic name (the queue name rule)."""
    if not limits.valid_project(project) or not limits.valid_queue_name(topic):
        raise InvalidTopicName()


def check_project(project: str) -> None:
    if not limits.valid_project(project):
        raise InvalidTopicName()


# metadata --------------------------------------------------------------------------------------


def check_metadata(
    metadata: Mapping[str, Any], error: type[InvalidArgument] = InvalidArgument
) -> None:
    """Raise ``error`` for a reserved queue key that does not apply to topics, or a reserved
    key with a value of the wrong type or range."""
    for key in metadata:
        if key in QUEUE_ONLY:
            raise error(
                f"{key} does not apply to topics: a topic keeps no messages, it delivers them "
                "to its subscribers."
            )
    meta.check_reserved(metadata, error)


def parse_metadata(raw: bytes) -> dict[str, Any]:
    """The metadata of a PUT (empty: ``{}``), checked."""
    metadata = meta.parse_object(raw)
    check_metadata(metadata)
    return metadata


def check_patched(metadata: Mapping[str, Any]) -> None:
    """Rules on the metadata a PATCH produces."""
    meta.check_patched(metadata)
    check_metadata(metadata, InvalidBody)


def parse_patch(operations: Iterable[tuple[str, str, bytes]]) -> list[MetadataPatch]:
    """A JSON patch, as the queue rule reads it: replacing or removing ``_max_messages_post_size``
    or ``_default_message_ttl`` while not stored is no conflict (they exist through their
    defaults); for any other key it is."""
    return meta.parse_patch(operations, reserved=DEFAULTS)


def with_defaults(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata as GET shows it: stored keys first, then the missing defaults."""
    shown = dict(metadata)
    for key, default in DEFAULTS.items():
        if shown.get(key) is None:
            shown[key] = default
    return shown


def max_post_size(metadata: Mapping[str, Any]) -> int:
    value = metadata.get("_max_messages_post_size")
    return value if isinstance(value, int) else limits.MESSAGE_POST_SIZE_MAX


def default_ttl(metadata: Mapping[str, Any]) -> int:
    value = metadata.get("_default_message_ttl")
    return value if isinstance(value, int) else limits.MESSAGE_TTL_DEFAULT


# messages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posted:
    """One message of a post, as the caller sent it."""

    body: bytes
    ttl: int | None = None
    delay: int | None = None
    fifo_ids: bool = False
    """A ``group_id`` or ``dedup_id`` was given."""


def messages(posted: Sequence[Posted], metadata: Mapping[str, Any]) -> list[tuple[bytes, int]]:
    """The messages to deliver, as (body, ttl): each checked as a queue post checks it, the
    topic's ``_default_message_ttl`` where none was given. A delay is checked and dropped: a
    topic delivers at once.

    Raises:
        InvalidArgument, InvalidBody: a message breaks a rule (nothing is posted).
    """
    if not posted:
        raise InvalidArgument(NO_MESSAGES)
    size = 0
    for message in posted:
        bodies.check_json(message.body)
        if message.ttl is not None and not (
            limits.MESSAGE_TTL_MIN <= message.ttl <= limits.MESSAGE_TTL_MAX
        ):
            raise InvalidArgument(MESSAGE_TTL)
        if message.delay is not None and not (
            limits.MESSAGE_DELAY_MIN <= message.delay <= limits.MESSAGE_DELAY_MAX
        ):
            raise InvalidArgument(MESSAGE_DELAY)
        if message.fifo_ids:
            raise InvalidArgument(NO_FIFO)
        size += len(message.body)
    allowed = min(max_post_size(metadata), limits.MESSAGE_POST_SIZE_MAX)
    if size > allowed:
        raise InvalidArgument(f"Message collection size is too large. Max size {allowed}")
    ttl = default_ttl(metadata)
    return [(m.body, ttl if m.ttl is None else m.ttl) for m in posted]
