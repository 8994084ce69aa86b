"""Dead-letter redrive operations: start, report, cancel (``/v2/queues/{dlq}/redrive``)."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import common_pb2

from services.api_gateway.operations import Caller, Outcome
from services.api_gateway.translate_redrive import redrive_doc, start_redrive_request
from services.api_gateway.upstream import Upstreams


def redrive_href(queue: str) -> str:
    return f"/v2/queues/{queue}/redrive"


async def start_redrive(up: Upstreams, caller: Caller, queue: str, doc: Any) -> Outcome:
    """202 with the job, which runs in the background; ``doc``:
    ``{"destination"?: str, "max_per_second"?: int}``."""
    request = start_redrive_request(caller.project, queue, doc)
    job = await up.messages.StartRedrive(request, timeout=up.timeout)
    return Outcome(202, redrive_doc(job), location=redrive_href(queue))


async def get_redrive(up: Upstreams, caller: Caller, queue: str) -> Outcome:
    job = await up.messages.GetRedrive(
        common_pb2.QueueRef(project=caller.project, queue=queue), timeout=up.timeout
    )
    return Outcome(200, redrive_doc(job))


async def cancel_redrive(up: Upstreams, caller: Caller, queue: str) -> Outcome:
    """204; a finished job stays as it is."""
    await up.messages.CancelRedrive(
        common_pb2.QueueRef(project=caller.project, queue=queue), timeout=up.timeout
    )
    return Outcome(204, ws_body=f"Redrive of queue {queue} cancelled.")
