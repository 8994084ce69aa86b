"""``/v2/queues/{queue_name}/claims`` and ``…/claims/{claim_id}``."""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import SMALL_BODY_MAX, disconnected, int_param, read_json
from services.api_gateway.operations import claims
from services.api_gateway.routes._common import Resource, answer, caller


class ClaimCollection(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        limit = int_param(req, "limit")
        outcome = await claims.create_claim(
            self.up, caller(req), queue_name, limit, doc,
            wait=int_param(req, "wait"), gone=lambda: disconnected(req),
        )
        answer(resp, outcome)


class ClaimItem(Resource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str, claim_id: str
    ) -> None:
        answer(resp, await claims.get_claim(self.up, caller(req), queue_name, claim_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str, claim_id: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await claims.update_claim(self.up, caller(req), queue_name, claim_id, doc))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str, claim_id: str
    ) -> None:
        answer(resp, await claims.delete_claim(self.up, caller(req), queue_name, claim_id))
