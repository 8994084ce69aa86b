"""``/v2/queues/{queue_name}/claims`` and ``…/claims/{claim_id}``."""

from __future__ import annotations

import falcon.asgi
from zaqar.v2 import messages_pb2

from services.api_gateway import translate
from services.api_gateway.inputs import SMALL_BODY_MAX, int_param, read_json
from services.api_gateway.routes._common import Resource, no_content, send_json


class ClaimCollection(Resource):
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue_name: str
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        request = translate.create_claim_request(
            req.context.project, queue_name, int_param(req, "limit"), doc
        )
        claim = await self.up.messages.CreateClaim(request, timeout=self.up.timeout)
        if not claim.id:
            no_content(resp)
            return
        resp.location = translate.claim_href(queue_name, claim.id)
        send_json(resp, {"messages": translate.message_docs(claim.messages, queue_name)}, 201)


class ClaimItem(Resource):
    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        claim_id: str,
    ) -> None:
        request = messages_pb2.GetClaimRequest(
            project=req.context.project, queue=queue_name, claim_id=claim_id
        )
        claim = await self.up.messages.GetClaim(request, timeout=self.up.timeout)
        send_json(resp, translate.claim_doc(claim, queue_name))

    async def on_patch(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        claim_id: str,
    ) -> None:
        doc = await read_json(req, SMALL_BODY_MAX)
        request = translate.update_claim_request(req.context.project, queue_name, claim_id, doc)
        await self.up.messages.UpdateClaim(request, timeout=self.up.timeout)
        no_content(resp)

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        queue_name: str,
        claim_id: str,
    ) -> None:
        request = messages_pb2.DeleteClaimRequest(
            project=req.context.project, queue=queue_name, claim_id=claim_id
        )
        await self.up.messages.DeleteClaim(request, timeout=self.up.timeout)
        no_content(resp)
