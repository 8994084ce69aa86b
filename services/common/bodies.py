"""What a message body is wherever one is handed over: UTF-8 JSON as posted, with Zaqar's
wording when it is not. message_svc checks each post, queue_svc each topic post, and
notifier_svc each body handed to it, so that nothing pushed to a socket or sent to a webhook
embeds bytes that are not JSON (a body travels as raw JSON bytes, spliced into the documents
it is sent in)."""

from __future__ import annotations

from typing import Any, Final

import orjson

from services.common.errors import InvalidBody
from services.common.message_keys import is_sealed

MISSING_BODY: Final = 'Missing "body" field.'
BODY_NOT_JSON: Final = "Message body must be valid JSON."


def check_json(body: bytes) -> Any:
    """A posted body: JSON. Returns the document it holds.

    Raises:
        InvalidBody: ``body`` is empty, or not JSON.
    """
    if not body:
        raise InvalidBody(MISSING_BODY)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBody(BODY_NOT_JSON) from None


def check_handed_over(body: bytes) -> None:
    """A body message_svc hands over for notification: JSON, or sealed (an encrypted queue's,
    opened just before each delivery).

    Raises:
        InvalidBody: neither.
    """
    if not is_sealed(body):
        check_json(body)
