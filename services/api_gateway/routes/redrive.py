"""``/v2/queues/{queue_name}/redrive``: dead-letter redrive (extension)."""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import SMALL_BODY_MAX, read_json
from services.api_gateway.operations import redrive
from services.api_gateway.routes._common import Resource, answer, caller


class QueueRedrive(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await redrive.start_redrive(self.up, caller(req), queue_name, doc))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await redrive.get_redrive(self.up, caller(req), queue_name))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await redrive.cancel_redrive(self.up, caller(req), queue_name))
