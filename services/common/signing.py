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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from services.common.config import ConfigurationError, Settings

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
    if not given.isascii():
        return False  # not a hex digest (and compare_digest takes ASCII text only)
    expected = signature(secret, paths, methods, project, expires)
    return hmac.compare_digest(expected, given.lower())


# The settings a process's Keys are made of, in this order (read again from their files while
# it runs: services/common/secret_files.py).
KEY_SETTINGS: Final = ("signed_url_secret", "signed_url_previous_secret")


def verifying_secrets(current: str, previous: str = "") -> tuple[str, ...]:
    """The secrets a signature may be made with: ``current`` (which signs), then ``previous``
    (being retired) when set; none without a secret.

    Raises:
        ConfigurationError: a previous secret without a current one (nothing would sign).
    """
    if previous and not current:
        raise ConfigurationError(
            "signed_url_previous_secret (ZAQAR_SIGNED_URL_PREVIOUS_SECRET) is set without "
            "signed_url_secret (ZAQAR_SIGNED_URL_SECRET): when rotating, the new secret "
            "signs and the previous one still verifies"
        )
    return tuple(secret for secret in (current, previous) if secret)


class Keys:
    """The pre-signed URL secrets a process uses now: ``current`` signs ('' = none), and
    ``verifying`` are those a signature may be made with. Both are replaced together, by
    :meth:`take`, when their files change; readers read them at each use, never keep them."""

    __slots__ = ("current", "verifying")

    def __init__(self, current: str = "", previous: str = "") -> None:
        """Raises: ConfigurationError, as :func:`verifying_secrets`."""
        self.verifying = verifying_secrets(current, previous)
        self.current = current

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        """Raises: ConfigurationError, as :func:`verifying_secrets`."""
        return cls(settings.signed_url_secret, settings.signed_url_previous_secret)

    def take(self, values: Mapping[str, str]) -> None:
        """Use the secrets of ``values`` (setting name -> value, for :data:`KEY_SETTINGS`; a
        name left out keeps its value) from now on.

        Raises:
            ConfigurationError: as :func:`verifying_secrets`; the secrets in use stay.
        """
        previous = self.verifying[1] if len(self.verifying) > 1 else ""
        current = values.get("signed_url_secret", self.current)
        previous = values.get("signed_url_previous_secret", previous)
        verifying = verifying_secrets(current, previous)
        # One assignment each, on the event loop: no request sees one without the other
        # between two awaits.
        self.current, self.verifying = current, verifying


class SignedUrlError(ValueError):
    """A value of a pre-signed URL is unusable; the message is Zaqar's, for a 400 answer."""


NO_SECRET: str = "The `key` can't be None"
PAST_EXPIRES: str = "`expires` is lower than the current time"


def normalise_expires(value: object, now: datetime | None = None) -> str:
    """An expiry given by a client as the signed text spells it, checked as Zaqar does.

    ``value`` is an ISO 8601 date and time (naive values are UTC, others are converted);
    integers, and strings holding one, are refused, as is a moment not after ``now``.
    Raises :class:`SignedUrlError`.
    """
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and _is_int(value)):
        number = int(value) if not isinstance(value, str) else int(value.strip())
        if number:
            raise SignedUrlError(
                "`expires` should be date format, for example 2016-01-01T00:00:00, "
                f"not integer value: {number}"
            )
    if not isinstance(value, str):
        raise SignedUrlError(f"Unable to parse date string {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SignedUrlError(f"Unable to parse date string {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    current = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    if moment <= current:
        raise SignedUrlError(PAST_EXPIRES)
    return moment.strftime(EXPIRES_FORMAT)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _items(value: object) -> list[str]:
    """A ``URL-Methods``/``URL-Paths`` value: comma-separated text (HTTP) or a list."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return []


def path_allowed(granted: str, path: str) -> bool:
    """Whether ``path`` is the granted path or below it (``…/messages`` grants
    ``…/messages/{id}``). Compared literally: a queue name's ``.`` matches only itself."""
    if not granted:
        return False
    return path == granted or path.startswith(granted.rstrip("/") + "/")


def verify_request(
    secrets: Sequence[str],
    *,
    method: str,
    path: str,
    project: str,
    given: str,
    methods: object,
    paths: object,
    expires: object,
    now: datetime | None = None,
) -> bool:
    """Whether a request carrying ``URL-Signature: given`` (and ``URL-Methods``,
    ``URL-Paths``, ``URL-Expires``, ``X-Project-ID``) may go ahead: its method is granted,
    its path is one granted (or below one), the expiry is in the future and the signature
    is that of those values under one of ``secrets`` (:attr:`Keys.verifying`). No secret
    configured: nothing verifies."""
    if isinstance(secrets, str):  # a str is a Sequence too: one secret would pass as its letters
        raise TypeError("verify_request takes a sequence of secrets, not one str")
    keys = [key for key in secrets if key]
    if not keys or not given:
        return False
    method_list, path_list = _items(methods), _items(paths)
    if method not in method_list:
        return False
    if not any(path_allowed(granted, path) for granted in path_list):
        return False
    try:
        expires_text = normalise_expires(expires, now)
    except SignedUrlError:
        return False
    return any(
        verify(key, given, path_list, method_list, project, expires_text) for key in keys
    )
