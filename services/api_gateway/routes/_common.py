"""Helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

import falcon.asgi
import orjson

from services.api_gateway.upstream import Upstreams


class Resource:
    """A Falcon resource that talks to the upstream services."""

    def __init__(self, up: Upstreams) -> None:
        self.up = up


def no_content(resp: falcon.asgi.Response) -> None:
    """204 with an explicit ``Content-Length: 0``, as Zaqar sends it."""
    resp.status = 204
    resp.content_length = 0


def send_json(resp: falcon.asgi.Response, doc: Any, status: int = 200) -> None:
    resp.status = status
    resp.data = orjson.dumps(doc)
