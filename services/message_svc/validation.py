"""Request rules of the data plane (contract §4), with Zaqar's own error descriptions."""

from __future__ import annotations

from collections.abc import Sized
from typing import Final

from services.common import limits
from services.common.errors import InvalidArgument, InvalidQueueName

POP: Final = (
    f"Pop value must be at least 1 and may not be greater than {limits.PAGE_LIMIT_MAX}."
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
CLAIM_TTL: Final = (
    f"The TTL for a claim may not exceed {limits.CLAIM_TTL_MAX} seconds, and must be at least "
    f"{limits.CLAIM_TTL_MIN} seconds long."
)
CLAIM_GRACE: Final = (
    f"The grace for a claim may not exceed {limits.CLAIM_GRACE_MAX} seconds, and must be at "
    f"least {limits.CLAIM_GRACE_MIN} seconds long."
)
TOO_MANY_TO_GET: Final = (
    f"No more than {limits.PAGE_LIMIT_MAX} messages can be retrieved at once."
)
TOO_MANY_TO_DELETE: Final = (
    f"No more than {limits.PAGE_LIMIT_MAX} messages can be deleted at once."
)


def queue_ref(project: str, queue: str) -> None:
    if not limits.valid_project(project) or not limits.valid_queue_name(queue):
        raise InvalidQueueName()




DEDUP_NEEDS_FIFO: Final = "dedup_id needs a FIFO queue (_fifo)."
GROUPS_UNSUPPORTED: Final = (
    "group_id needs a FIFO queue (_fifo) on the message store this queue is on."
)
FIFO_UNSUPPORTED: Final = (
    "FIFO queues (_fifo) are not supported by the message store this queue is on."
)


def fifo_id(name: str, value: str | None) -> None:
    if value is not None and not 1 <= len(value) <= limits.FIFO_ID_MAX:
        raise InvalidArgument(f"{name} must be a string of 1 to {limits.FIFO_ID_MAX} characters.")


def pop_limit(value: int) -> int:
    if not 1 <= value <= limits.PAGE_LIMIT_MAX:
        raise InvalidArgument(POP)
    return value


def message_ttl(value: int | None) -> None:
    if value is not None and not limits.MESSAGE_TTL_MIN <= value <= limits.MESSAGE_TTL_MAX:
        raise InvalidArgument(MESSAGE_TTL)


def message_delay(value: int | None) -> None:
    if value is not None and not limits.MESSAGE_DELAY_MIN <= value <= limits.MESSAGE_DELAY_MAX:
        raise InvalidArgument(MESSAGE_DELAY)


def post_size(total: int, queue_limit: int) -> None:
    allowed = min(queue_limit, limits.MESSAGE_POST_SIZE_MAX)
    if total > allowed:
        raise InvalidArgument(f"Message collection size is too large. Max size {allowed}")


def claim_ttl(value: int | None) -> int:
    if value is None:
        return limits.CLAIM_TTL_DEFAULT
    if not limits.CLAIM_TTL_MIN <= value <= limits.CLAIM_TTL_MAX:
        raise InvalidArgument(CLAIM_TTL)
    return value


def claim_grace(value: int | None) -> int:
    if value is None:
        return limits.CLAIM_GRACE_DEFAULT
    if not limits.CLAIM_GRACE_MIN <= value <= limits.CLAIM_GRACE_MAX:
        raise InvalidArgument(CLAIM_GRACE)
    return value


def ids_to_get(ids: Sized) -> None:
    if len(ids) > limits.PAGE_LIMIT_MAX:
        raise InvalidArgument(TOO_MANY_TO_GET)


def ids_to_delete(ids: Sized) -> None:
    if len(ids) > limits.PAGE_LIMIT_MAX:
        raise InvalidArgument(TOO_MANY_TO_DELETE)
