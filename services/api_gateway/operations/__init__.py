"""The gateway's operations: one function per Zaqar v2 operation, shared by HTTP and WebSocket.

Each operation takes typed request fields (already read from a query string, a URL template or
a WebSocket request body), builds the protobuf request (``translate``), makes the gRPC call and
returns an :class:`Outcome`: the status and the Zaqar-shaped document. The transports are thin:
``routes/`` renders an outcome as an HTTP answer, ``websocket/`` as a response frame.

Failures are raised, never returned: :class:`~services.api_gateway.errors.ApiError` for a
request the gateway refuses itself, ``grpc.RpcError`` for a failed call; each transport turns
them into its error answer through the one status table in ``errors.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

# marker -> href of the next page (the transport knows the path and the original parameters).
NextLink = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the tenant and the client (``echo`` filtering, message ownership).

    ``token``: the caller's ``X-Auth-Token`` (keystone mode), sent on only where a service
    acts as the caller (:meth:`as_caller`).
    """

    project: str
    client_id: str
    token: str = ""

    def as_caller(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the caller's own token, when there is one."""
        return (("x-auth-token", self.token),) if self.token else ()


class _Same:
    def __repr__(self) -> str:
        return "SAME"


SAME: Final = _Same()


@dataclass(frozen=True, slots=True)
class Outcome:
    """A successful answer.

    ``body`` is the HTTP document (ready for ``orjson.dumps``; ``None`` is an empty body).
    ``ws_body`` is the document Zaqar's WebSocket API answers with where it differs from the
    HTTP one (``message_post`` gives ids, not hrefs; ``queue_create`` a sentence); by default
    it is ``body``, and ``{}`` when that is empty.
    """

    status: int
    body: Any = None
    location: str | None = None
    ws_body: Any = SAME

    def websocket_body(self) -> Any:
        if self.ws_body is not SAME:
            return self.ws_body
        return {} if self.body is None else self.body
