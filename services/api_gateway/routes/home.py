"""``/`` (versions), ``/v2/`` (JSON-home), ``/v2/ping`` and ``/v2/health``."""

from __future__ import annotations

from typing import Final

import falcon.asgi
import orjson

from services.api_gateway.operations import home
from services.api_gateway.routes._common import Resource, answer, roles

VERSIONS: Final = orjson.dumps(
    {
        "versions": [
            {
                "id": "2",
                "status": "CURRENT",
                "links": [{"href": "/v2/", "rel": "self"}],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.messaging-v2+json",
                    }
                ],
            }
        ]
    }
)


class Versions:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = 300
        resp.data = VERSIONS


class Home:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        answer(resp, home.home_doc())
        resp.content_type = "application/json-home"
        resp.cache_control = ["max-age=86400"]


class Ping(Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        answer(resp, await home.ping(self.up))

    on_head = on_get


class Health(Resource):
    """Admin only (the caller's roles include ``admin``: ``X-Roles`` in no-auth mode, the
    token's roles with Keystone)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        answer(resp, await home.health(self.up, roles(req)))
