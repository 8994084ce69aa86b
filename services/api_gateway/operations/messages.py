"""Message operations: post, list, get one / a set, delete one / a set, pop."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import messages_pb2

from services.api_gateway import translate
from services.api_gateway.errors import ApiError, bad_request
from services.api_gateway.limits import check_id_count
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.operations.waiting import Gone, checked_wait, held
from services.api_gateway.upstream import Upstreams
from services.common.limits import PAGE_LIMIT_MAX


def _checked_ids(ids: list[str]) -> list[str]:
    if not 0 < len(ids) <= PAGE_LIMIT_MAX:
        raise bad_request(
            f"ids parameter should have at least 1 and not greater than {PAGE_LIMIT_MAX} values."
        )
    return ids


async def post_messages(up: Upstreams, caller: Caller, queue: str, doc: Any) -> Outcome:
    """``doc``: as :func:`translate.post_messages_request`. A deduplicated message (FIFO
    queues) answers with the id of the message first posted with its ``dedup_id``."""
    request = translate.post_messages_request(caller.project, queue, caller.client_id, doc)
    response = await up.messages.PostMessages(request, timeout=up.timeout)
    ids = list(response.ids)
    return Outcome(
        201,
        {"resources": [translate.message_href(queue, mid) for mid in ids]},
        location=translate.messages_location(queue, ids),
        ws_body={"message_ids": ids},
    )


async def list_messages(
    up: Upstreams,
    caller: Caller,
    queue: str,
    *,
    limit: int | None,
    marker: str | None,
    echo: bool,
    include_claimed: bool,
    include_delayed: bool,
    next_link: NextLink,
    wait: int | None = None,
    gone: Gone | None = None,
) -> Outcome:
    """``wait``: seconds to wait for a message when the page would be empty (0..20); ``gone``
    returns when the client went away, which cancels the wait."""
    seconds = checked_wait(wait)
    request = messages_pb2.ListMessagesRequest(
        project=caller.project,
        queue=queue,
        client_id=caller.client_id,
        marker=marker or "",
        echo=echo,
        include_claimed=include_claimed,
        include_delayed=include_delayed,
    )
    if limit is not None:
        request.limit = translate.int32(limit)
    if seconds:
        response = await held(
            up.messages_direct.ListMessages, request, seconds, up.timeout, gone, up.waits
        )
    else:
        response = await up.messages.ListMessages(request, timeout=up.timeout)
    link = next_link(response.next_marker) if response.next_marker else None
    return Outcome(200, translate.message_page_doc(response.messages, queue, link))


async def get_messages(up: Upstreams, caller: Caller, queue: str, ids: list[str]) -> Outcome:
    """A set of messages by id; 404 when none of them is found."""
    request = messages_pb2.GetMessagesRequest(
        project=caller.project, queue=queue, message_ids=_checked_ids(ids)
    )
    response = await up.messages.GetMessages(request, timeout=up.timeout)
    if not response.messages:
        raise ApiError(
            404,
            "Not found",
            f"No messages with IDs: {', '.join(ids)} found in the queue {queue}"
            f" for project {caller.project}.",
        )
    return Outcome(200, {"messages": translate.message_docs(response.messages, queue)})


async def delete_messages(
    up: Upstreams,
    caller: Caller,
    queue: str,
    *,
    ids: list[str] | None,
    pop: int | None,
    claim_ids: list[str] | None,
) -> Outcome:
    """Bulk delete by ``ids`` (204) or pop ``pop`` messages (200 with them); one of the two."""
    if ids is not None and pop is not None:
        raise bad_request("pop and id params cannot be present together in the delete request.")
    if pop is not None:
        pop_request = messages_pb2.PopMessagesRequest(
            project=caller.project, queue=queue, limit=translate.int32(pop)
        )
        popped = await up.messages.PopMessages(pop_request, timeout=up.timeout)
        return Outcome(200, {"messages": [translate.popped_doc(m) for m in popped.messages]})
    check_id_count(claim_ids, "claim_ids", PAGE_LIMIT_MAX)
    if ids is None:
        raise bad_request(
            'The request should have either "ids" or "pop" parameter in the request, '
            "to be able to delete."
        )
    request = messages_pb2.DeleteMessagesRequest(
        project=caller.project,
        queue=queue,
        message_ids=_checked_ids(ids),
        claim_ids=claim_ids or [],
    )
    await up.messages.DeleteMessages(request, timeout=up.timeout)
    return Outcome(204)


async def get_message(up: Upstreams, caller: Caller, queue: str, message_id: str) -> Outcome:
    request = messages_pb2.GetMessageRequest(
        project=caller.project, queue=queue, message_id=message_id
    )
    message = await up.messages.GetMessage(request, timeout=up.timeout)
    doc = translate.message_doc(message, queue)
    # Zaqar's WebSocket API wraps the one message under "messages".
    return Outcome(200, doc, ws_body={"messages": doc})


async def delete_message(
    up: Upstreams, caller: Caller, queue: str, message_id: str, claim_id: str | None
) -> Outcome:
    request = messages_pb2.DeleteMessageRequest(
        project=caller.project, queue=queue, message_id=message_id, claim_id=claim_id or ""
    )
    await up.messages.DeleteMessage(request, timeout=up.timeout)
    return Outcome(204)
