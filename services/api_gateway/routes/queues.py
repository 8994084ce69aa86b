"""``/v2/queues`` and ``/v2/queues/{queue_name}[/stats|/purge]``."""

from __future__ import annotations

from typing import Any, Final

import falcon.asgi
from zaqar.v2 import common_pb2, queues_pb2

from services.api_gateway import translate
from services.api_gateway.errors import ApiError
from services.api_gateway.inputs import (
    PATCH_BODY_MAX,
    QUEUE_BODY_MAX,
    SMALL_BODY_MAX,
    bool_param,
    int_param,
    next_href,
    read_json,
)
from services.api_gateway.routes._common import Resource, no_content, send_json

JSON_PATCH: Final = "application/openstack-messaging-v2.0-json-patch"
_LIST_PARAMS: Final = frozenset({"limit", "marker", "detailed", "name", "with_count"})


def _filter_value(value: str) -> Any:
    """Queue-list metadata filters compare as ints when the value is one (Zaqar casts)."""
    try:
        return int(value)
    except ValueError:
        return value


class QueueCollection(Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        detailed = bool_param(req, "detailed")
        filters = {
            key: _filter_value(value if isinstance(value, str) else value[-1])
            for key, value in req.params.items()
            if key not in _LIST_PARAMS
        }
        request = translate.list_queues_request(
            req.context.project,
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            detailed=detailed,
            name=req.get_param("name"),
            with_count=bool_param(req, "with_count"),
            filters=filters,
        )
        response = await self.up.queues.ListQueues(request, timeout=self.up.timeout)
        link = next_href(req, response.next_marker) if response.next_marker else None
        send_json(resp, translate.queue_list_doc(response, detailed, link))


class QueueItem(Resource):
    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, QUEUE_BODY_MAX, "Queue metadata")
        request = translate.create_queue_request(req.context.project, queue_name, doc)
        response = await self.up.queues.CreateQueue(request, timeout=self.up.timeout)
        resp.location = translate.queue_href(queue_name)
        if response.created:
            resp.status = 201
            resp.data = b""
        else:
            no_content(resp)

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        request = queues_pb2.GetQueueRequest(project=req.context.project, queue=queue_name)
        queue = await self.up.queues.GetQueue(request, timeout=self.up.timeout)
        resp.data = queue.metadata or b"{}"

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        if req.content_type is None or not req.content_type.startswith(JSON_PATCH):
            accept_patch = {"Accept-Patch": JSON_PATCH}
            raise ApiError(
                415,
                "415 Unsupported Media Type",
                f"Accepted media type for PATCH: {accept_patch}.",
                accept_patch,
            )
        doc = await read_json(req, PATCH_BODY_MAX)
        request = translate.update_queue_request(req.context.project, queue_name, doc)
        queue = await self.up.queues.UpdateQueue(request, timeout=self.up.timeout)
        resp.data = queue.metadata or b"{}"

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        request = queues_pb2.DeleteQueueRequest(project=req.context.project, queue=queue_name)
        await self.up.queues.DeleteQueue(request, timeout=self.up.timeout)
        no_content(resp)


class QueueStats(Resource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        request = common_pb2.QueueRef(project=req.context.project, queue=queue_name)
        stats = await self.up.messages.GetStats(request, timeout=self.up.timeout)
        send_json(resp, translate.stats_doc(stats, queue_name))


class QueuePurge(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        request = translate.purge_queue_request(req.context.project, queue_name, doc)
        await self.up.queues.PurgeQueue(request, timeout=self.up.timeout)
        no_content(resp)
