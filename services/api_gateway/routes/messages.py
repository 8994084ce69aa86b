"""``/v2/queues/{queue_name}/messages`` and ``…/messages/{message_id}``."""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import (
    MESSAGES_BODY_MAX,
    bool_param,
    csv_param,
    disconnected,
    int_param,
    read_json,
)
from services.api_gateway.operations import messages
from services.api_gateway.routes._common import Resource, answer, caller, next_link


class MessageCollection(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, MESSAGES_BODY_MAX, "Message collection size")
        answer(resp, await messages.post_messages(self.up, caller(req), queue_name, doc))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        ids = csv_param(req, "ids")
        if ids is not None:
            answer(resp, await messages.get_messages(self.up, caller(req), queue_name, ids))
            return
        outcome = await messages.list_messages(
            self.up,
            caller(req),
            queue_name,
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            echo=bool_param(req, "echo"),
            include_claimed=bool_param(req, "include_claimed"),
            include_delayed=bool_param(req, "include_delayed"),
            next_link=next_link(req),
            wait=int_param(req, "wait"),
            gone=lambda: disconnected(req),
        )
        answer(resp, outcome)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        outcome = await messages.delete_messages(
            self.up,
            caller(req),
            queue_name,
            ids=csv_param(req, "ids"),
            pop=int_param(req, "pop"),
            claim_ids=csv_param(req, "claim_ids"),
        )
        answer(resp, outcome)


class MessageItem(Resource):
    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        message_id: str,
    ) -> None:
        answer(resp, await messages.get_message(self.up, caller(req), queue_name, message_id))

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        message_id: str,
    ) -> None:
        outcome = await messages.delete_message(
            self.up, caller(req), queue_name, message_id, req.get_param("claim_id")
        )
        answer(resp, outcome)
