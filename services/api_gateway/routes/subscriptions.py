"""``/v2/queues/{queue_name}/subscriptions[/{subscription_id}[/confirm]]`` (notifier_svc), and
the same under ``/v2/topics/{queue_name}`` (built with ``topic=True``; the template names the
topic as the queue's place, and its name follows the queue name rule)."""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import SMALL_BODY_MAX, int_param, read_json
from services.api_gateway.operations import subscriptions
from services.api_gateway.routes._common import Resource, answer, caller, next_link
from services.api_gateway.upstream import Upstreams


class _Subscriptions(Resource):
    def __init__(self, up: Upstreams, *, topic: bool = False) -> None:
        super().__init__(up)
        self.topic = topic


class SubscriptionCollection(_Subscriptions):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        outcome = await subscriptions.create_subscription(
            self.up, caller(req), queue_name, doc, topic=self.topic
        )
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
            topic=self.topic,
        )
        answer(resp, outcome)


class SubscriptionItem(_Subscriptions):
    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        outcome = await subscriptions.get_subscription(
            self.up, caller(req), queue_name, subscription_id, topic=self.topic
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
            self.up, caller(req), queue_name, subscription_id, doc, topic=self.topic
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
            self.up, caller(req), queue_name, subscription_id, topic=self.topic
        )
        answer(resp, outcome)


class SubscriptionConfirm(_Subscriptions):
    async def on_put(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        subscription_id: str,
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        outcome = await subscriptions.confirm_subscription(
            self.up, caller(req), queue_name, subscription_id, doc, topic=self.topic
        )
        answer(resp, outcome)
