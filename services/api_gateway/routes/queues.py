"""``/v2/queues`` and ``/v2/queues/{queue_name}[/stats|/purge|/share]``."""

from __future__ import annotations

from typing import Any, Final

import falcon.asgi

from services.api_gateway.errors import ApiError
from services.api_gateway.inputs import (
    PATCH_BODY_MAX,
    QUEUE_BODY_MAX,
    SMALL_BODY_MAX,
    bool_param,
    int_param,
    read_json,
)
from services.api_gateway.operations import queues
from services.api_gateway.routes._common import Resource, answer, caller, next_link
from services.api_gateway.upstream import Upstreams
from services.common.signing import Keys

JSON_PATCH: Final = "application/openstack-messaging-v2.0-json-patch"
_LIST_PARAMS: Final = frozenset({"limit", "marker", "detailed", "name", "with_count"})


def _filter_value(value: str) -> Any:
    """Queue-list metadata filters compare as ints when the value is one (Zaqar casts)."""
    try:
        return int(value)
    except ValueError:
        return value


def list_filters(req: falcon.asgi.Request) -> dict[str, Any]:
    """The metadata equality filters of a listing: every query key but the listing's own."""
    return {
        key: _filter_value(value if isinstance(value, str) else value[-1])
        for key, value in req.params.items()
        if key not in _LIST_PARAMS
    }


def check_patch_type(req: falcon.asgi.Request) -> None:
    """A metadata PATCH needs the JSON-patch media type: 415 otherwise, with Accept-Patch."""
    if req.content_type is None or not req.content_type.startswith(JSON_PATCH):
        accept_patch = {"Accept-Patch": JSON_PATCH}
        raise ApiError(
            415,
            "415 Unsupported Media Type",
            f"Accepted media type for PATCH: {accept_patch}.",
            accept_patch,
        )


class QueueCollection(Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        filters = list_filters(req)
        outcome = await queues.list_queues(
            self.up,
            caller(req),
            limit=int_param(req, "limit"),
            marker=req.get_param("marker"),
            detailed=bool_param(req, "detailed"),
            name=req.get_param("name"),
            with_count=bool_param(req, "with_count"),
            filters=filters,
            next_link=next_link(req),
        )
        answer(resp, outcome)


class QueueItem(Resource):
    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, QUEUE_BODY_MAX, "Queue metadata")
        answer(resp, await queues.create_queue(self.up, caller(req), queue_name, doc))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await queues.get_queue(self.up, caller(req), queue_name))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        check_patch_type(req)
        doc = await read_json(req, PATCH_BODY_MAX)
        answer(resp, await queues.update_queue(self.up, caller(req), queue_name, doc))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await queues.delete_queue(self.up, caller(req), queue_name))


class QueueStats(Resource):
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        answer(resp, await queues.queue_stats(self.up, caller(req), queue_name))


class QueuePurge(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, await queues.purge_queue(self.up, caller(req), queue_name, doc))


class QueueShare(Resource):
    """Pre-signed URL data of a queue, signed with the current secret."""

    def __init__(self, up: Upstreams, keys: Keys) -> None:
        super().__init__(up)
        self.keys = keys

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        answer(resp, queues.share_queue(caller(req), queue_name, doc, self.keys.current))
