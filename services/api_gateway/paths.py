"""Canonical request paths: the one form the gateway routes, authenticates and signs.

Every check of the gateway (routing, the public-route allow-list, Keystone, pre-signed URLs)
sees one spelling of a path, so a path that another spelling could reach is refused before
routing (400) instead of being normalised: repeated slashes (``//v2/health``), dot segments
(``/v2/./queues``, ``/v2/x/../queues``) and percent-encoded slashes or unreserved characters
(``/%2Fv2/health``, ``/v2/queue%73``) never reach a route. Percent-encoding of any other byte
is left to the route, whose name rules refuse it (a queue name has no ``%0A``).
"""

from __future__ import annotations

import re
from typing import Final

# RFC 3986 unreserved characters, and "/" and "\": spellings that may not be percent-encoded.
_NO_ESCAPE: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/\\"
)
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_DOT_SEGMENT: Final = re.compile(r"/\.\.?(?:/|$)")


def non_canonical(path: str, raw_path: bytes | None = None) -> str | None:
    """Why ``path`` (ASGI ``path``, percent-decoded; ``raw_path``: the bytes as sent, when
    the server passes them) is not in canonical form, or None when it is."""
    if not path.startswith("/"):
        return "it does not start with a slash"
    if "//" in path:
        return "it has repeated slashes"
    if "/." in path and _DOT_SEGMENT.search(path):
        return "it has dot segments"
    raw = path if raw_path is None else raw_path.split(b"?", 1)[0].decode("latin-1")
    if "%" in raw:
        for match in _ESCAPE.finditer(raw):
            if int(match.group(1), 16) in _NO_ESCAPE:
                return f"it percent-encodes a character that is never encoded ({match[0]})"
    return None


def plain_segment(value: str) -> bool:
    """Whether ``value`` can stand as one segment of a canonical path (a WebSocket action's
    queue name or id, placed into the path a pre-signed URL must grant)."""
    return bool(value) and "/" not in value and value not in (".", "..")
