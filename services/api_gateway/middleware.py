"""The one request middleware: request id, Accept, Content-Type and the Zaqar v2 headers.

Runs once per request, before routing. What it extracts lands on ``req.context``:

- ``request_id``: ``req-<uuid4>``, sent back as ``x-openstack-request-id`` on every answer;
- ``project``: ``X-Project-ID`` (no-auth mode);
- ``client_id``: ``Client-ID`` normalised to a lower-case dashed UUID, so that dashed and
  undashed spellings of one id are the same client for ``echo`` filtering.

A request carrying ``URL-Signature`` is a pre-signed one (contract §6): it goes ahead only when
the signature verifies (``URL-Methods``, ``URL-Paths``, ``URL-Expires``, ``X-Project-ID``)
and grants its method and path before an expiry still ahead; any other is answered 404.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, Final

import falcon.asgi

from services.api_gateway.errors import ApiError
from services.api_gateway.limits import check_request
from services.api_gateway.operations import Caller
from services.common import signing
from services.common.limits import PROJECT_ID_MAX

V2_PREFIX: Final = "/v2/"
HOME_PATH: Final = "/v2/"
REQUEST_ID_HEADER: Final = "x-openstack-request-id"

_CLIENT_ID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}"
)
_ACCEPT_FAST: Final = frozenset({"*/*", "application/json"})
_FORM: Final = "application/x-www-form-urlencoded"

# (status, title, description) of each header error; raised as fresh ApiError instances.
MISSING_CLIENT_ID: Final = (400, "Missing header value", 'The "Client-Id" header is required.')
BAD_CLIENT_ID: Final = (400, "Wrong UUID value", "Malformed hexadecimal UUID.")
MISSING_PROJECT: Final = (400, "Project-Id Missing", "The header X-PROJECT-ID was missing")
EMPTY_PROJECT: Final = (
    400,
    "Empty project header not allowed",
    "X-PROJECT-ID cannot be an empty string. Specify the right header X-PROJECT-ID and retry.",
)
LONG_PROJECT: Final = (
    400,
    "Invalid project id",
    f"The header X-PROJECT-ID may not be longer than {PROJECT_ID_MAX} characters.",
)
SIGNATURE_REFUSED: Final = (404, "404 Not Found")
FORM_BODY: Final = (
    400,
    "Invalid Content-Type",
    "Endpoint does not accept `application/x-www-form-urlencoded` content; currently supported"
    " media type is `application/json`; specify proper client-side media type with the"
    ' "Content-Type" header.',
)


def normalise_client_id(value: str) -> str:
    """A lower-case dashed UUID; 400 "Wrong UUID value" when it is not a UUID."""
    match = _CLIENT_ID_RE.fullmatch(value)
    if match is None:
        raise ApiError(*BAD_CLIENT_ID)
    if match.group(1):
        return value.lower()
    v = value.lower()
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"


def read_caller(header: Callable[[str], str | None]) -> Caller:
    """``Client-ID`` and ``X-Project-ID`` checked by the contract's rules (HTTP and WebSocket).

    ``header`` looks a header up by name, case-insensitively; raises :class:`ApiError` 400.
    """
    client_id = header("Client-ID")
    if client_id is None:
        raise ApiError(*MISSING_CLIENT_ID)
    normalised = normalise_client_id(client_id)
    project = header("X-Project-ID")
    if project is None:
        raise ApiError(*MISSING_PROJECT)
    if not project:
        raise ApiError(*EMPTY_PROJECT)
    if len(project) > PROJECT_ID_MAX:
        raise ApiError(*LONG_PROJECT)
    return Caller(project=project, client_id=normalised, token=header("X-Auth-Token") or "")


def _accepts_json(req: falcon.asgi.Request) -> bool:
    accept = req.accept
    if accept in _ACCEPT_FAST:
        return True
    if req.client_accepts("application/json"):
        return True
    return req.path == HOME_PATH and req.client_accepts("application/json-home")


class ZaqarHeaders:
    """Validates the transport headers once and stamps every answer with the request id."""

    def __init__(self, signed_url_secret: str = "") -> None:
        self.signed_url_secret = signed_url_secret

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ctx = req.context
        ctx.request_id = "req-" + str(uuid.uuid4())
        check_request(req)
        if not _accepts_json(req):
            raise ApiError(406, None)
        if req.content_length is not None:
            content_type = req.content_type
            if content_type is not None and content_type.startswith(_FORM):
                raise ApiError(*FORM_BODY)
        if not req.path.startswith(V2_PREFIX):
            return
        caller = read_caller(req.get_header)
        given = req.get_header("URL-Signature")
        if given is not None and not signing.verify_request(
            self.signed_url_secret,
            method=req.method,
            path=req.path,
            project=caller.project,
            given=given,
            methods=req.get_header("URL-Methods", default=""),
            paths=req.get_header("URL-Paths", default=""),
            expires=req.get_header("URL-Expires"),
        ):
            raise ApiError(*SIGNATURE_REFUSED)
        ctx.client_id = caller.client_id
        ctx.project = caller.project
        ctx.token = caller.token

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)
