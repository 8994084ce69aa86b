"""Claim operations: create, get, renew, release."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import messages_pb2

from services.api_gateway import translate
from services.api_gateway.operations import Caller, Outcome
from services.api_gateway.operations.waiting import Gone, checked_wait, held
from services.api_gateway.upstream import Upstreams


async def create_claim(
    up: Upstreams,
    caller: Caller,
    queue: str,
    limit: int | None,
    doc: Any,
    wait: int | None = None,
    gone: Gone | None = None,
) -> Outcome:
    """201 with the claimed messages; 204 when nothing is claimable.

    ``doc``: ``{"ttl"?: int, "grace"?: int}``; absent means the defaults. ``wait``: seconds
    to wait for a message when none is claimable (0..20); ``gone`` returns when the client
    went away, which cancels the wait.
    """
    seconds = checked_wait(wait)
    request = translate.create_claim_request(caller.project, queue, limit, doc)
    if seconds:
        claim = await held(
            up.messages_direct.CreateClaim, request, seconds, up.timeout, gone, up.waits
        )
    else:
        claim = await up.messages.CreateClaim(request, timeout=up.timeout)
    if not claim.id:
        return Outcome(204, ws_body={"claim_id": None})
    messages = translate.message_docs(claim.messages, queue)
    return Outcome(
        201,
        {"messages": messages},
        location=translate.claim_href(queue, claim.id),
        ws_body={"claim_id": claim.id, "messages": messages},
    )


async def get_claim(up: Upstreams, caller: Caller, queue: str, claim_id: str) -> Outcome:
    request = messages_pb2.GetClaimRequest(project=caller.project, queue=queue, claim_id=claim_id)
    claim = await up.messages.GetClaim(request, timeout=up.timeout)
    return Outcome(200, translate.claim_doc(claim, queue))


async def update_claim(
    up: Upstreams, caller: Caller, queue: str, claim_id: str, doc: Any
) -> Outcome:
    """Renew: ``doc`` is ``{"ttl"?: int, "grace"?: int}``."""
    request = translate.update_claim_request(caller.project, queue, claim_id, doc)
    await up.messages.UpdateClaim(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Claim {claim_id} updated.")


async def delete_claim(up: Upstreams, caller: Caller, queue: str, claim_id: str) -> Outcome:
    request = messages_pb2.DeleteClaimRequest(
        project=caller.project, queue=queue, claim_id=claim_id
    )
    await up.messages.DeleteClaim(request, timeout=up.timeout)
    return Outcome(204, ws_body=f"Claim {claim_id} deleted.")
