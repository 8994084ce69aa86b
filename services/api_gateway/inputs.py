"""Reading HTTP request input: size-limited JSON bodies and typed query parameters.

Body size limits are enforced before parsing: a declared ``Content-Length`` over the limit is
refused without reading, a chunked body is read only up to the limit; then the nesting depth is
checked on the raw bytes (``limits.py``) before the JSON parser sees them.

=====================================  =========  ==========================================
Body                                   Limit      Why
=====================================  =========  ==========================================
``POST …/messages``                    262144     Zaqar's ``max_messages_post_size``; the
                                                  queue's own ``_max_messages_post_size`` is
                                                  enforced by message_svc
``PUT /v2/queues/{q}``                 65536      Zaqar's ``max_queue_metadata``
``PATCH /v2/queues/{q}``               131072     room for a patch carrying a full 64 KiB
                                                  value; the result is checked by queue_svc
claims, claim renew, purge             65536      small documents
=====================================  =========  ==========================================
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import falcon.asgi
import orjson

from services.api_gateway.errors import ApiError, bad_body, bad_request
from services.api_gateway.limits import check_json_depth
from services.common.limits import MESSAGE_POST_SIZE_MAX, METADATA_SIZE_MAX

MESSAGES_BODY_MAX: Final = MESSAGE_POST_SIZE_MAX
QUEUE_BODY_MAX: Final = METADATA_SIZE_MAX
PATCH_BODY_MAX: Final = 2 * METADATA_SIZE_MAX
SMALL_BODY_MAX: Final = 65_536

NO_BODY: Final[Any] = None


def _too_large(limit: int, what: str) -> ApiError:
    return bad_request(f"{what} is too large. Max size: {limit} bytes.")


async def read_json(req: falcon.asgi.Request, limit: int, what: str = "Request body") -> Any:
    """The parsed JSON body, or :data:`NO_BODY` (``None``) when the request has none.

    Raises :class:`ApiError` 400 when the body is over ``limit`` bytes or is not JSON.
    """
    length = req.content_length
    if length is not None:
        if length > limit:
            raise _too_large(limit, what)
        if length == 0:
            return NO_BODY
        data = await req.stream.readall()
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in req.stream:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, what)
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            return NO_BODY
    if len(data) > limit:
        raise _too_large(limit, what)
    check_json_depth(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise bad_body("Request body could not be parsed.") from None


def int_param(req: falcon.asgi.Request, name: str) -> int | None:
    """An integer query parameter; 400 "Invalid parameter" when it is not one."""
    return req.get_param_as_int(name)


async def disconnected(req: falcon.asgi.Request) -> None:
    """Returns once the client has closed the connection (ASGI ``http.disconnect``): for a
    request that waits (long polling), called after its body was read."""
    # Falcon has no public API for it: read the ASGI channel the request stream reads from.
    receive = req._receive
    while (await receive())["type"] != "http.disconnect":
        pass


def bool_param(req: falcon.asgi.Request, name: str) -> bool:
    """A Zaqar-style boolean (true/false, also yes/no, 1/0, on/off); absent is false."""
    return bool(req.get_param_as_bool(name, default=False))


def csv_param(req: falcon.asgi.Request, name: str) -> list[str] | None:
    """A list given comma-separated (``ids=a,b``), repeated (``ids=a&ids=b``, as
    python-zaqarclient sends it) or both; None when the parameter is absent."""
    values = req.get_param_as_list(name)
    if values is None:
        return None
    return [item for value in values for item in value.split(",") if item]


def next_href(req: falcon.asgi.Request, marker: str) -> str:
    """The request's path and original query with ``marker`` replaced (or appended)."""
    encoded = "marker=" + quote(marker, safe="")
    pairs = []
    replaced = False
    if req.query_string:
        for pair in req.query_string.split("&"):
            if pair == "marker" or pair.startswith("marker="):
                if not replaced:
                    pairs.append(encoded)
                    replaced = True
            elif pair:
                pairs.append(pair)
    if not replaced:
        pairs.append(encoded)
    return req.path + "?" + "&".join(pairs)
