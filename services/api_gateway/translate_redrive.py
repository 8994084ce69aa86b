"""Dead-letter redrive documents <-> protobuf (docs/architecture.md, "Dead-letter redrive").

``{"destination"?: str, "max_per_second"?: int}`` in; the job out. Shapes are checked here
(400); ranges, names and the rest are message_svc's rules.
"""

from __future__ import annotations

import time
from typing import Any

from zaqar_grpc.v2 import messages_pb2

from services.api_gateway.errors import bad_body
from services.api_gateway.translate import int32

_FIELDS = frozenset({"destination", "max_per_second"})


def start_redrive_request(
    project: str, queue: str, doc: Any
) -> messages_pb2.StartRedriveRequest:
    """The start request of ``doc`` (None: ``{}``)."""
    fields = {} if doc is None else doc
    if not isinstance(fields, dict):
        raise bad_body("Document type not supported.")
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise bad_body(f"Unknown field(s): {', '.join(unknown)}.")
    request = messages_pb2.StartRedriveRequest(project=project, queue=queue)
    destination = fields.get("destination")
    if destination is not None:
        if not isinstance(destination, str):
            raise bad_body('The value of the "destination" field must be a str.')
        request.destination = destination
    rate = fields.get("max_per_second")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise bad_body('The value of the "max_per_second" field must be a int.')
        request.max_per_second = int32(rate)
    return request


def _iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def redrive_doc(job: messages_pb2.Redrive) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": job.id,
        "queue": job.queue,
        "destination": job.destination,
        "max_per_second": job.max_per_second if job.HasField("max_per_second") else None,
        "status": job.status,
        "moved": job.moved,
        "remaining": job.remaining,
        "started": _iso(job.started),
        "updated": _iso(job.updated),
    }
    if job.error:
        doc["error"] = job.error
    return doc
