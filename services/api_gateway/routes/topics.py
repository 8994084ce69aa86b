"""``/v2/topics`` and ``/v2/topics/{queue_name}[/stats|/purge|/messages]`` (queue_svc's
``zaqar.v2.Topics``); a topic's subscriptions are ``subscriptions.py``'s resources.

The templates name the topic ``{queue_name}``: a topic's name follows the queue name rule, and
the subscription resources serve queues and topics alike under that name.
"""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.inputs import (
    MESSAGES_BODY_MAX,
    PATCH_BODY_MAX,
    QUEUE_BODY_MAX,
    SMALL_BODY_MAX,
    bool_param,
    int_param,
    read_json,
)
from services.api_gateway.operations import topics
from services.api_gateway.routes._common import Resource, answer, caller, next_link
from services.api_gateway.routes.queues import check_patch_type, list_filters


class TopicCollection(Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        outcome = await topics.list_topics(
            self.up,
            caller(req),
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            detailed=bool_param(req, "detailed"),
            name=req.get_param("name"),
            with_count=bool_param(req, "with_count"),
            filters=list_filters(req),
            next_link=next_link(req),
        )
        answer(resp, outcome)


class TopicItem(Resource):
    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, QUEUE_BODY_MAX, "Topic metadata")
        answer(resp, await topics.create_topic(self.up, caller(req), queue_name, doc))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await topics.get_topic(self.up, caller(req), queue_name))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        check_patch_type(req)
        doc = await read_json(req, PATCH_BODY_MAX)
        answer(resp, await topics.update_topic(self.up, caller(req), queue_name, doc))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await topics.delete_topic(self.up, caller(req), queue_name))


class TopicStats(Resource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await topics.topic_stats(self.up, caller(req), queue_name))


class TopicPurge(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await topics.purge_topic(self.up, caller(req), queue_name, doc))


class TopicMessages(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, MESSAGES_BODY_MAX, "Message collection size")
        answer(resp, await topics.post_topic_messages(self.up, caller(req), queue_name, doc))
