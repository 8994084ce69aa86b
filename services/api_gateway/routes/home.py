"""``/`` (versions), ``/v2/`` (JSON-home), ``/v2/ping`` and ``/v2/health``."""

from __future__ import annotations

from typing import Final

import falcon.asgi
import orjson

from services.api_gateway.errors import ApiError, unavailable
from services.api_gateway.routes._common import Resource, no_content
from services.api_gateway.routes._homedoc import HOME_DOC_BYTES

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
        resp.content_type = "application/json-home"
        resp.cache_control = ["max-age=86400"]
        resp.data = HOME_DOC_BYTES


class Ping(Resource):
    """204 when every upstream service reports SERVING on its gRPC health service."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        serving = await self.up.serving()
        if not all(serving.values()):
            down = ", ".join(sorted(name for name, ok in serving.items() if not ok))
            raise unavailable(f"Not serving: {down}.")
        no_content(resp)

    on_head = on_get


class Health(Resource):
    """Admin only (no-auth mode: ``X-Roles`` contains ``admin``)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        roles = req.get_header("X-Roles") or ""
        if "admin" not in (role.strip().lower() for role in roles.split(",")):
            raise ApiError(403, "Not authorized", "This operation requires the admin role.")
        serving = await self.up.serving()
        resp.data = orjson.dumps(
            {"storage_reachable": all(serving.values()), "operation_status": {}}
        )
