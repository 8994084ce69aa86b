"""gRPC status -> HTTP status and Zaqar error body: one table, per-route overrides, handlers.

Every error answer of the gateway goes through this module. The services report domain
failures as gRPC statuses carrying a ``google.rpc.ErrorInfo`` (reason + Zaqar title); the
gateway maps the code through :data:`STATUS_TABLE`, then lets :data:`ROUTE_OVERRIDES` replace
the HTTP status for a given (route, reason) where Zaqar answers differently from the canonical
mapping. Handlers for every exception type are registered on the app in one place
(:func:`register_error_handlers`); resources never catch errors themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import falcon
import falcon.asgi
import grpc
import orjson

from services.common.errors import decode_rpc_error
from services.common.grpc_auth import SERVICE_CREDENTIALS_REFUSED

log = logging.getLogger(__name__)

JSON: Final = "application/json"

App = falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]

TITLE_UNAVAILABLE: Final = "Service temporarily unavailable"


class ApiError(Exception):
    """A transport-neutral error answer: HTTP status, Zaqar title, description, headers.

    ``title=None`` means an empty body (406 is answered that way).
    """

    def __init__(
        self,
        status: int,
        title: str | None,
        description: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(description or title or str(status))
        self.status = status
        self.title = title
        self.description = description
        self.headers = headers

    def body(self) -> bytes:
        if self.title is None:
            return b""
        doc: dict[str, str] = {"title": self.title}
        if self.description is not None:
            doc["description"] = self.description
        return orjson.dumps(doc)


def bad_request(description: str, title: str = "Invalid API request") -> ApiError:
    return ApiError(400, title, description)


def bad_body(description: str) -> ApiError:
    return ApiError(400, "Invalid request body", description)


def unavailable(description: str) -> ApiError:
    return ApiError(503, TITLE_UNAVAILABLE, description)


# The one table: every gRPC status code -> (HTTP status, title used when the service sent none).
# FAILED_PRECONDITION is 409 because the services use it for state conflicts (a JSON-patch on
# an absent key); anything that means "the backing service could not do it" is 503, Zaqar's
# answer when storage is unavailable, so that clients retry instead of giving up.
STATUS_TABLE: Final[Mapping[grpc.StatusCode, tuple[int, str]]] = {
    grpc.StatusCode.OK: (200, "OK"),
    grpc.StatusCode.CANCELLED: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.UNKNOWN: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "Invalid API request"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.NOT_FOUND: (404, "Not found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "Resource conflict"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "Not authorized"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "Too many requests"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "Resource conflict"),
    grpc.StatusCode.ABORTED: (409, "Resource conflict"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "Invalid API request"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "Not implemented"),
    grpc.StatusCode.INTERNAL: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.UNAVAILABLE: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.DATA_LOSS: (503, TITLE_UNAVAILABLE),
    grpc.StatusCode.UNAUTHENTICATED: (401, "Unauthorized"),
}

MESSAGE_ITEM: Final = "/v2/queues/{queue_name}/messages/{message_id}"

# Per-route overrides, keyed by "<METHOD> <uri template>", then by ErrorInfo reason. Zaqar
# answers 400 when a claim id is given for a message that is not (or no longer) claimed,
# and 403 when a claimed message is deleted without its live claim's id.
ROUTE_OVERRIDES: Final[Mapping[str, Mapping[str, int]]] = {
    f"DELETE {MESSAGE_ITEM}": {
        "MESSAGE_NOT_CLAIMED": 400,
        "CLAIM_NOT_FOUND": 400,
        "MESSAGE_CLAIMED": 403,
        "MESSAGE_NOT_CLAIMED_BY": 403,
    },
}

# Reasons answered alike on every route, whatever their code's row says. An exceeded quota is
# RESOURCE_EXHAUSTED (gRPC's code for it) but not a 429: waiting does not lift it, and Zaqar
# clients take a 429 for a success; 403 is what OpenStack services answer for it.
REASON_STATUS: Final[Mapping[str, int]] = {"QUOTA_EXCEEDED": 403}

CREDENTIALS_REFUSED: Final = (
    "The request could not be completed: a backing service refused the gateway's credentials. "
    "Please try again later."
)

# Codes for which the status text comes from the transport rather than from a service.
_TRANSPORT_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def api_error_from_rpc(exc: grpc.RpcError, route: str | None = None) -> ApiError:
    """Translate a failed call into the answer of ``route`` ("<METHOD> <template>")."""
    info = decode_rpc_error(exc)
    if info.reason in SERVICE_CREDENTIALS_REFUSED:
        # A service refused the gateway's own credentials (its service token, or its user's
        # roles): the operator's to fix, not the caller's, whose token was fine.
        log.error("a backing service refused the gateway's credentials (%s): %s", info.reason,
                  info.description)
        return unavailable(CREDENTIALS_REFUSED)
    status, default_title = STATUS_TABLE.get(info.code, (503, TITLE_UNAVAILABLE))
    status = REASON_STATUS.get(info.reason, status)
    if route is not None:
        status = ROUTE_OVERRIDES.get(route, {}).get(info.reason, status)
    title = info.title or default_title
    description = info.description
    if not info.title and info.code in _TRANSPORT_CODES:
        # No service answered: the details are the channel's, not meant for clients.
        log.warning("upstream call failed: %s %s", info.code.name, info.description)
        description = (
            f"A backing service did not answer ({info.code.name})."
            " Please try again in a few seconds."
        )
    return ApiError(status, title, description)


# HTTP rendering --------------------------------------------------------------------------------


def render(resp: falcon.asgi.Response, err: ApiError) -> None:
    resp.status = err.status
    resp.content_type = JSON
    resp.data = err.body()
    if err.headers:
        resp.set_headers(err.headers)


def _route_of(req: falcon.asgi.Request) -> str | None:
    template = req.uri_template
    return None if template is None else f"{req.method} {template}"


async def _handle_api_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: ApiError, params: Any
) -> None:
    render(resp, ex)


async def _handle_http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: falcon.HTTPError, params: Any
) -> None:
    # Falcon's own errors (unknown route, wrong method, invalid query parameter).
    render(resp, ApiError(ex.status_code, ex.title, ex.description, ex.headers))


async def _handle_rpc_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: grpc.RpcError, params: Any
) -> None:
    render(resp, api_error_from_rpc(ex, _route_of(req)))


async def _handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any
) -> None:
    log.exception("unexpected failure on %s %s", req.method, req.path, exc_info=ex)
    render(
        resp,
        unavailable("The request could not be completed. Please try again in a few seconds."),
    )


def register_error_handlers(app: App) -> None:
    """The one place where errors become answers; the most specific type wins."""
    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(grpc.RpcError, _handle_rpc_error)
    app.add_error_handler(falcon.HTTPError, _handle_http_error)
    app.add_error_handler(ApiError, _handle_api_error)
