"""``/v2/queues/{queue_name}/messages`` and ``…/messages/{message_id}``."""

from __future__ import annotations

import falcon.asgi
from zaqar.v2 import messages_pb2

from services.api_gateway import translate
from services.api_gateway.errors import ApiError, bad_request
from services.api_gateway.inputs import (
    MESSAGES_BODY_MAX,
    bool_param,
    csv_param,
    int_param,
    next_href,
    read_json,
)
from services.api_gateway.routes._common import Resource, no_content, send_json
from services.common.limits import PAGE_LIMIT_MAX


def _checked_ids(ids: list[str]) -> list[str]:
    if not 0 < len(ids) <= PAGE_LIMIT_MAX:
        raise bad_request(
            f"ids parameter should have at least 1 and not greater than {PAGE_LIMIT_MAX} values."
        )
    return ids


class MessageCollection(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, MESSAGES_BODY_MAX, "Message collection size")
        ctx = req.context
        request = translate.post_messages_request(ctx.project, queue_name, ctx.client_id, doc)
        response = await self.up.messages.PostMessages(request, timeout=self.up.timeout)
        ids = list(response.ids)
        resp.location = translate.messages_location(queue_name, ids)
        send_json(
            resp,
            {"resources": [translate.message_href(queue_name, mid) for mid in ids]},
            201,
        )

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        ids = csv_param(req, "ids")
        if ids is not None:
            await self._get_set(req, resp, queue_name, _checked_ids(ids))
            return
        ctx = req.context
        request = messages_pb2.ListMessagesRequest(
            project=ctx.project,
            queue=queue_name,
            client_id=ctx.client_id,
            marker=req.get_param("marker") or "",
            echo=bool_param(req, "echo"),
            include_claimed=bool_param(req, "include_claimed"),
            include_delayed=bool_param(req, "include_delayed"),
        )
        limit = int_param(req, "limit")
        if limit is not None:
            request.limit = translate.int32(limit)
        response = await self.up.messages.ListMessages(request, timeout=self.up.timeout)
        link = next_href(req, response.next_marker) if response.next_marker else None
        send_json(resp, translate.message_page_doc(response.messages, queue_name, link))

    async def _get_set(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        ids: list[str],
    ) -> None:
        request = messages_pb2.GetMessagesRequest(
            project=req.context.project, queue=queue_name, message_ids=ids
        )
        response = await self.up.messages.GetMessages(request, timeout=self.up.timeout)
        if not response.messages:
            raise ApiError(
                404,
                "Not found",
                f"No messages with IDs: {', '.join(ids)} found in the queue {queue_name}"
                f" for project {req.context.project}.",
            )
        send_json(resp, {"messages": translate.message_docs(response.messages, queue_name)})

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        ids = csv_param(req, "ids")
        pop = int_param(req, "pop")
        if ids is not None and pop is not None:
            raise bad_request("pop and id params cannot be present together in the delete request.")
        project = req.context.project
        if pop is not None:
            pop_request = messages_pb2.PopMessagesRequest(
                project=project, queue=queue_name, limit=translate.int32(pop)
            )
            popped = await self.up.messages.PopMessages(pop_request, timeout=self.up.timeout)
            send_json(resp, {"messages": [translate.popped_doc(m) for m in popped.messages]})
            return
        if ids is None:
            raise bad_request(
                'The request should have either "ids" or "pop" parameter in the request, '
                "to be able to delete."
            )
        request = messages_pb2.DeleteMessagesRequest(
            project=project,
            queue=queue_name,
            message_ids=_checked_ids(ids),
            claim_ids=csv_param(req, "claim_ids") or [],
        )
        await self.up.messages.DeleteMessages(request, timeout=self.up.timeout)
        no_content(resp)


class MessageItem(Resource):
    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        message_id: str,
    ) -> None:
        request = messages_pb2.GetMessageRequest(
            project=req.context.project, queue=queue_name, message_id=message_id
        )
        message = await self.up.messages.GetMessage(request, timeout=self.up.timeout)
        send_json(resp, translate.message_doc(message, queue_name))

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        message_id: str,
    ) -> None:
        request = messages_pb2.DeleteMessageRequest(
            project=req.context.project,
            queue=queue_name,
            message_id=message_id,
            claim_id=req.get_param("claim_id") or "",
        )
        await self.up.messages.DeleteMessage(request, timeout=self.up.timeout)
        no_content(resp)
