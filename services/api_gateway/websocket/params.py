"""Typed fields of a WebSocket request body (the HTTP API's query parameters live there)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from services.api_gateway.errors import bad_request
from services.api_gateway.operations import NextLink

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _wrong(name: str, kind: str) -> Exception:
    return bad_request(f'The value of the "{name}" field must be a {kind}.')


def text(body: Mapping[str, Any], name: str) -> str:
    """A required string (its presence is checked before the action runs)."""
    value = body.get(name)
    if not isinstance(value, str):
        raise _wrong(name, "str")
    return value


def opt_text(body: Mapping[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else text(body, name)


def opt_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(name, "int")
    return value


def flag(body: Mapping[str, Any], name: str) -> bool:
    """A boolean; strings are read as Zaqar reads them (true/false, yes/no, 1/0, on/off)."""
    value = body.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _wrong(name, "bool")


def opt_texts(body: Mapping[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _wrong(name, "list of str")
    return value


def next_link(path: str, body: Mapping[str, Any], names: tuple[str, ...]) -> NextLink:
    """The next-page href an HTTP client would follow: ``path`` with the listing's fields."""

    def link(marker: str) -> str:
        query = [(n, _query_value(body[n])) for n in names if body.get(n) is not None]
        return path + "?" + urlencode([*query, ("marker", marker)])

    return link


def _query_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
