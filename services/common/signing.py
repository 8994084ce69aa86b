"""Pre-signed URLs (contract §6): the signature notifier_svc puts in confirmation messages and
the gateway checks on requests carrying ``URL-Signature``.

The signed text is ``",".join(sorted(paths)) + SEP + ",".join(sorted(methods)) + SEP +
project + SEP + expires`` where SEP is the two characters backslash and ``n`` (Zaqar builds
it from a raw string), ``expires`` is ``%Y-%m-%dT%H:%M:%S`` in UTC, and the signature is the
lowercase hex HMAC-SHA256 of it under the configured secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S"
SEPARATOR = "\\n"  # two characters, not a newline


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """What a pre-signed URL grants: sorted paths and methods, a project, an expiry."""

    paths: tuple[str, ...]
    methods: tuple[str, ...]
    project: str
    expires: str
    signature: str


def format_expires(moment: datetime) -> str:
    """``moment`` as the signed text spells it (naive values are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(EXPIRES_FORMAT)


def signature(
    secret: str, paths: Iterable[str], methods: Iterable[str], project: str, expires: str
) -> str:
    """The lowercase hex HMAC-SHA256 of the signed text (see the module docstring)."""
    text = SEPARATOR.join(
        [",".join(sorted(paths)), ",".join(sorted(methods)), project, expires]
    )
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign(
    secret: str, paths: Iterable[str], methods: Iterable[str], project: str, expires: datetime
) -> SignedUrl:
    """A pre-signed URL for each of ``methods`` on each of ``paths`` of ``project``, valid
    until ``expires``."""
    sorted_paths, sorted_methods = tuple(sorted(paths)), tuple(sorted(methods))
    text = format_expires(expires)
    return SignedUrl(
        sorted_paths, sorted_methods, project, text,
        signature(secret, sorted_paths, sorted_methods, project, text),
    )


def verify(
    secret: str,
    given: str,
    paths: Iterable[str],
    methods: Iterable[str],
    project: str,
    expires: str,
) -> bool:
    """Whether ``given`` is the signature of those values (compared in constant time)."""
    expected = signature(secret, paths, methods, project, expires)
    return hmac.compare_digest(expected, given.lower())
