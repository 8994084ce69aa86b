"""Limits and defaults of the Zaqar v2 API (contract §3, §4), shared by every service."""

from __future__ import annotations

import re
from typing import Final

QUEUE_NAME_MAX: Final = 64
_NAME_CHARS: Final = r"a-zA-Z0-9_\-."
# Matched in full: with re.match, a "$" would also accept a name ending in a newline.
QUEUE_NAME_RE: Final = re.compile(rf"[{_NAME_CHARS}]{{1,{QUEUE_NAME_MAX}}}")
_NAME_PART_RE: Final = re.compile(rf"[{_NAME_CHARS}]{{0,{QUEUE_NAME_MAX}}}")
PROJECT_ID_MAX: Final = 256

PAGE_LIMIT_MIN: Final = 1
PAGE_LIMIT_MAX: Final = 20
PAGE_LIMIT_DEFAULT: Final = 10
PAGE_LIMIT_ERROR: Final = (
    f"Limit must be at least {PAGE_LIMIT_MIN} and may not be greater than {PAGE_LIMIT_MAX}."
)


def page_limit(limit: int | None) -> int:
    """A page (or claim) size: ``None`` means the default (10); otherwise 1..20.

    Raises:
        InvalidArgument: out of range, with Zaqar's text.
    """
    if limit is None:
        return PAGE_LIMIT_DEFAULT
    if not PAGE_LIMIT_MIN <= limit <= PAGE_LIMIT_MAX:
        from services.common.errors import InvalidArgument

        raise InvalidArgument(PAGE_LIMIT_ERROR)
    return limit

MESSAGE_TTL_MIN: Final = 60
MESSAGE_TTL_MAX: Final = 1_209_600
MESSAGE_TTL_DEFAULT: Final = 3600
MESSAGE_DELAY_MIN: Final = 0
MESSAGE_DELAY_MAX: Final = 900
MESSAGE_POST_SIZE_MAX: Final = 262_144

# FIFO queues (extension): group and deduplication ids, and the deduplication window.
FIFO_ID_MAX: Final = 128
DEDUP_WINDOW_MIN: Final = 1
DEDUP_WINDOW_MAX: Final = 86_400
DEDUP_WINDOW_DEFAULT: Final = 300

CLAIM_TTL_MIN: Final = 60
CLAIM_TTL_MAX: Final = 43_200
CLAIM_TTL_DEFAULT: Final = 300
CLAIM_GRACE_MIN: Final = 60
CLAIM_GRACE_MAX: Final = 43_200
CLAIM_GRACE_DEFAULT: Final = 60

METADATA_SIZE_MAX: Final = 65_536

SUBSCRIPTION_TTL_MIN: Final = 60
SUBSCRIPTION_TTL_DEFAULT: Final = 3600

# Reserved queue metadata keys with the defaults GET shows (contract §3). Keys whose default is
# absent (``_retry_policy``, ``_flavor``) are not filled in.
RESERVED_DEFAULTS: Final[dict[str, object]] = {
    "_max_messages_post_size": MESSAGE_POST_SIZE_MAX,
    "_default_message_ttl": MESSAGE_TTL_DEFAULT,
    "_default_message_delay": 0,
    "_dead_letter_queue": None,
    "_dead_letter_queue_messages_ttl": None,
    "_max_claim_count": None,
    "_enable_encrypt_messages": False,
}


def valid_queue_name(name: str) -> bool:
    return QUEUE_NAME_RE.fullmatch(name) is not None


def may_be_in_a_name(fragment: str) -> bool:
    """Whether some queue (or topic) name could contain ``fragment``: a listing's ``name``
    filter longer than a name, or with a character no name has, matches nothing. The
    services answer such a listing empty without asking their store, so that every store
    answers it alike and none is handed a filter it may refuse (a MongoDB regular expression
    has a length cap)."""
    return _NAME_PART_RE.fullmatch(fragment) is not None


def valid_project(project: str) -> bool:
    return 0 < len(project) <= PROJECT_ID_MAX
