"""``/v2/queues/{queue_name}/subscriptions[/{subscription_id}[/confirm]]`` (notifier_svc)."""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import SMALL_BODY_MAX, int_param, read_json
from services.api_gateway.operations import subscriptions
from services.api_gateway.routes._common import Resource, answer, caller, next_link


class SubscriptionCollection(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        outcome = await subscriptions.create_subscription(self.up, caller(req), queue_name, doc)
        answer(resp, outcome)

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        outcome = await subscriptions.list_subscriptions(
            self.up,
            caller(req),
            queue_name,
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            next_link=next_link(req),
        )
        answer(resp, outcome)


class SubscriptionItem(Resource):
    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        outcome = await subscriptions.get_subscription(
            self.up, caller(req), queue_name, subscription_id
        )
        answer(resp, outcome)

    async def on_patch(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        outcome = await subscriptions.update_subscription(
            self.up, caller(req), queue_name, subscription_id, doc
        )
        answer(resp, outcome)

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        outcome = await subscriptions.delete_subscription(
            self.up, caller(req), queue_name, subscription_id
        )
        answer(resp, outcome)


class SubscriptionConfirm(Resource):
    async def on_put(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        outcome = await subscriptions.confirm_subscription(
            self.up, caller(req), queue_name, subscription_id, doc
        )
        answer(resp, outcome)
