"""URI parsing shared by networked store backends (``redis://``, ``mongodb://``).

Every problem is reported as one :class:`ConfigurationError` naming the store, the URI
(password redacted) and exactly what is wrong with it, so a typo fails at start-up, not at
first use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from services.common.config import ConfigurationError

Converter = Callable[[str], Any]

# C0 controls, DEL and C1 controls.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def redact(uri: str) -> str:
    """The URI without its password, for messages and logs."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if password is None:
        return uri
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def invalid(store: str, uri: str, problem: str) -> ConfigurationError:
    """The error for a bad URI of ``store`` (e.g. "message store")."""
    return ConfigurationError(f"invalid {store} URI {redact(uri)!r}: {problem}")


def check_characters(store: str, uri: str) -> None:
    """Refuse a URI holding a control character (NUL, newline, ...).

    No store is named with one, and each consumer reads them its own way: ``urlsplit`` drops
    tabs and newlines, a NUL ends a file name in the C library, so a URI that parses here may
    name nothing, or something else, where it is used.
    """
    found = _CONTROL.search(uri)
    if found is not None:
        raise invalid(
            store, uri, f"control character {found.group()!r} at position {found.start()}"
        )


def split(store: str, uri: str, scheme: str, form: str) -> SplitResult:
    """``uri`` split into its parts, checked to be of ``scheme``, to have no fragment and no
    control character (:func:`check_characters`).

    Args:
        form: the expected shape, quoted in the error, e.g. ``redis://host:port/db``.
    """
    check_characters(store, uri)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise invalid(store, uri, f"{exc}; expected {form}") from exc
    if parts.scheme.lower() != scheme or not uri[len(scheme) + 1:].startswith("//"):
        raise invalid(store, uri, f"expected {form}")
    if parts.fragment or uri.endswith("#"):
        raise invalid(store, uri, "a store URI has no fragment ('#...')")
    return parts


def host_and_port(
    store: str, uri: str, parts: SplitResult, default_port: int
) -> tuple[str, int]:
    """The one host and port of ``parts``; the port defaults to ``default_port``."""
    if not parts.hostname:
        raise invalid(store, uri, "the host is missing")
    try:
        port = parts.port
    except ValueError as exc:
        raise invalid(store, uri, f"bad port: {exc}") from exc
    if port == 0:
        raise invalid(store, uri, "bad port: 0 is not a port a server listens on")
    return parts.hostname, default_port if port is None else port


def options(
    store: str, uri: str, query: str, converters: Mapping[str, Converter]
) -> dict[str, Any]:
    """The query parameters of ``uri``, each converted by its converter.

    Unknown, repeated and empty-named parameters are errors, as is a value its converter
    rejects with ``ValueError``.
    """
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise invalid(store, uri, f"malformed query string {query!r}") from exc
    known = ", ".join(sorted(converters))
    result: dict[str, Any] = {}
    for name, text in pairs:
        if name not in converters:
            raise invalid(store, uri, f"unknown option {name!r} (known options: {known})")
        if name in result:
            raise invalid(store, uri, f"option {name!r} is given more than once")
        try:
            result[name] = converters[name](text)
        except ValueError as exc:
            raise invalid(store, uri, f"option {name}={text!r}: {exc}") from exc
    return result


def seconds(text: str) -> float:
    """A timeout: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds, e.g. 2 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number of seconds")
    return value


def count(text: str) -> int:
    """A whole number of at least 1."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError("expected a whole number of at least 1")
    return int(text)


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def boolean(text: str) -> bool:
    """``true``/``false`` (or yes/no, on/off, 1/0), in any case."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("expected true or false")


def hosts_and_ports(
    store: str, uri: str, parts: SplitResult, default_port: int
) -> tuple[tuple[str, int], ...]:
    """The comma-separated ``host[:port]`` list of ``parts`` (a ``redis+cluster://`` URI names
    several nodes of one cluster); each port defaults to ``default_port``."""
    hosts = parts.netloc.rpartition("@")[2]
    found: list[tuple[str, int]] = []
    for number, entry in enumerate(hosts.split(","), start=1):
        if not entry:
            raise invalid(store, uri, f"host {number} of the list is empty")
        try:
            one = urlsplit(f"//{entry}")
        except ValueError as exc:
            raise invalid(store, uri, f"host {number} of the list, {entry!r}: {exc}") from exc
        node = host_and_port(store, uri, one, default_port)
        if node not in found:
            found.append(node)
    return tuple(found)
