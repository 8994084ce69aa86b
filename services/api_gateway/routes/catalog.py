"""``/v2/pools[/{pool_name}]`` and ``/v2/flavors[/{flavor_name}]`` (queue_svc's catalog).

Without pooling these paths do not exist (404, as in Zaqar); the admin check comes after.
"""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.errors import ApiError
from services.api_gateway.inputs import SMALL_BODY_MAX, bool_param, int_param, read_json
from services.api_gateway.operations import flavors, pools
from services.api_gateway.routes._common import Resource, answer, caller, next_link, roles

NOT_FOUND = (404, "404 Not Found")


class CatalogResource(Resource):
    """A catalog route: answered only when the services run with pooling."""

    def _enabled(self) -> None:
        if not self.up.pooling:
            raise ApiError(*NOT_FOUND)


class PoolCollection(CatalogResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._enabled()
        answer(resp, await pools.list_pools(
            self.up,
            roles(req),
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            detailed=bool_param(req, "detailed"),
            next_link=next_link(req),
        ))


class PoolItem(CatalogResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, pool_name: str
    ) -> None:
        self._enabled()
        detailed = bool_param(req, "detailed")
        answer(resp, await pools.get_pool(self.up, roles(req), pool_name, detailed))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, pool_name: str
    ) -> None:
        self._enabled()
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await pools.put_pool(self.up, roles(req), pool_name, doc))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, pool_name: str
    ) -> None:
        self._enabled()
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await pools.update_pool(self.up, roles(req), pool_name, doc))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, pool_name: str
    ) -> None:
        self._enabled()
        answer(resp, await pools.delete_pool(self.up, roles(req), pool_name))


class FlavorCollection(CatalogResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._enabled()
        answer(resp, await flavors.list_flavors(
            self.up,
            caller(req),
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            detailed=bool_param(req, "detailed"),
            next_link=next_link(req),
        ))


class FlavorItem(CatalogResource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, flavor_name: str
    ) -> None:
        self._enabled()
        answer(resp, await flavors.get_flavor(self.up, caller(req), flavor_name))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, flavor_name: str
    ) -> None:
        self._enabled()
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await flavors.put_flavor(self.up, caller(req), roles(req), flavor_name, doc))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, flavor_name: str
    ) -> None:
        self._enabled()
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await flavors.update_flavor(
            self.up, caller(req), roles(req), flavor_name, doc
        ))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, flavor_name: str
    ) -> None:
        self._enabled()
        answer(resp, await flavors.delete_flavor(self.up, caller(req), roles(req), flavor_name))
