"""Helpers shared by the route modules: the caller of a request, rendering an outcome."""

from __future__ import annotations

from typing import Any

import falcon.asgi
import orjson

from services.api_gateway.inputs import next_href
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.upstream import Upstreams


class Resource:
    """A Falcon resource that talks to the upstream services."""

    def __init__(self, up: Upstreams) -> None:
        self.up = up


def caller(req: falcon.asgi.Request) -> Caller:
    """The project, client and token the header middleware read from the request."""
    return Caller(req.context.project, req.context.client_id, req.context.token)


def roles(req: falcon.asgi.Request) -> str:
    """The caller's roles, comma-separated: ``X-Roles`` in no-auth mode, the token's with
    Keystone (read by the request gate, ``middleware.py``)."""
    return str(req.context.roles)


def next_link(req: falcon.asgi.Request) -> NextLink:
    return lambda marker: next_href(req, marker)


def no_content(resp: falcon.asgi.Response) -> None:
    """204 with an explicit ``Content-Length: 0``, as Zaqar sends it."""
    resp.status = 204
    resp.content_length = 0


def send_json(resp: falcon.asgi.Response, doc: Any, status: int = 200) -> None:
    resp.status = status
    resp.data = orjson.dumps(doc)


def answer(resp: falcon.asgi.Response, outcome: Outcome) -> None:
    """An operation's outcome as the HTTP answer: status, ``Location``, JSON body."""
    if outcome.location is not None:
        resp.location = outcome.location
    if outcome.body is not None:
        send_json(resp, outcome.body, outcome.status)
    elif outcome.status == 204:
        no_content(resp)
    else:
        resp.status = outcome.status
        resp.data = b""
