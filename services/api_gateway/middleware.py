"""The one request middleware: request id, input limits, canonical paths, Accept and
Content-Type, then (deny by default) the caller of every routed request.

Before routing (``process_request``), on every request: its request id, the caller's
``X-OpenStack-Request-ID`` when well formed (``req-`` and a lower-case UUID, as oslo.middleware
takes it) or else a new ``req-<uuid4>``, sent back as ``x-openstack-request-id`` on every answer
and passed on with every gRPC call made for the request (``services/common/logs.py``); the input
limits (``limits.py``); a path that
is not in canonical form (``paths.py``) is refused with 400, so the router and every check
below see one spelling of it; ``Accept`` must allow JSON (406) and a form-encoded body is
refused (400).

After routing (``process_resource``), on every request the router matched: a URI template
field matched to an empty segment (``/v2/pools/``) is no route (404); then, unless its URI
template is on :data:`PUBLIC_ROUTES`, the request is authenticated by the configured strategy
(``auth.py``: no-auth headers, a Keystone token, or a pre-signed URL) and must carry valid
Zaqar headers (``Client-ID``; ``X-Project-ID`` unless a token names the project), and, with
``project_rate_limit`` set, takes one of its project's requests (``rate_limit.py``: 429 when
none is left). What that yields lands on ``req.context``:

- ``project``: the tenant (``X-Project-ID``, or the token's project);
- ``roles``: comma-separated role names (``X-Roles`` in no-auth mode, the token's);
- ``client_id``: ``Client-ID`` normalised to a lower-case dashed UUID, so that dashed and
  undashed spellings of one id are the same client for ``echo`` filtering;
- ``token``: the caller's ``X-Auth-Token``, passed on where a service acts as the caller.

The decision is taken on the route the router resolved, never on the spelling of the path: a
route added to the app is private until it is added to :data:`PUBLIC_ROUTES`.

After the answer (``process_response``): the request's metrics and, unless ``access_log`` is
off, one line of the access log (logger ``zaqar.access``): method, path with the keys of its
query but never their values, status, milliseconds, request id and project.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final

import falcon.asgi

from services.api_gateway.auth import Authenticator
from services.api_gateway.errors import ApiError
from services.api_gateway.limits import CUT_OFF, check_request
from services.api_gateway.operations import Caller
from services.api_gateway.paths import non_canonical
from services.api_gateway.rate_limit import RateLimit
from services.common import metrics, tracing
from services.common.limits import PROJECT_ID_MAX
from services.common.logs import ACCESS_LOGGER, REQUEST_ID, request_id_from

HOME_PATH: Final = "/v2/"
REQUEST_ID_HEADER: Final = "x-openstack-request-id"

access_log = logging.getLogger(ACCESS_LOGGER)

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
NON_CANONICAL: Final = (400, "Invalid API request")
NO_ROUTE: Final = (404, "404 Not Found")
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
    The caller's token is not read here: only a token Keystone validated is passed on.

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
    return Caller(project=project, client_id=normalised)


def _accepts_json(req: falcon.asgi.Request) -> bool:
    accept = req.accept
    if accept in _ACCEPT_FAST:
        return True
    if req.client_accepts("application/json"):
        return True
    return req.path == HOME_PATH and req.client_accepts("application/json-home")


# URI templates of the routes that need neither a token nor Zaqar headers. Every other route
# the router can reach is authenticated and needs the headers.
PUBLIC_ROUTES: Final = frozenset({"/", "/healthz", "/readyz", "/metrics"})
# The Prometheus exposition, the one route whose answer is not JSON (``routes/probes.py``).
METRICS_PATH: Final = "/metrics"


class RequestMetrics:
    """Counts and times every answered request by route template, method and status
    (``services/common/metrics.py``); the labelled series are looked up once each."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def done(
        self, template: str | None, method: str, status: int, started: float | None
    ) -> None:
        route = template or metrics.NO_ROUTE
        if method not in metrics.HTTP_METHODS:
            method = metrics.OTHER
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = self._counters[route, method, status] = metrics.HTTP_REQUESTS.labels(
                route, method, str(status)
            )
        counter.inc()
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[route, method] = metrics.HTTP_SECONDS.labels(route, method)
        if started is not None:
            timer.observe(time.perf_counter() - started)


def _query_keys(query: str) -> str:
    """``?a=1&b=secret`` -> ``?a&b``: which parameters a request had, never their values."""
    return "?" + "&".join(part.partition("=")[0] for part in query.split("&"))


def log_access(req: falcon.asgi.Request, status: int, started: float | None) -> None:
    """The access-log line of an answered request."""
    ctx = req.context
    raw = req.scope.get("raw_path")
    # The path as sent (percent-encoded, so nothing in it can break the line).
    path = raw.decode("latin-1") if raw else req.path
    query = req.query_string
    if query:
        path += _query_keys(query)
    ms = round((time.perf_counter() - started) * 1000, 2) if started is not None else 0.0
    project = getattr(ctx, "project", None)
    request_id = getattr(ctx, "request_id", None)
    # makeRecord and handle rather than info(): the caller's file and line (a stack walk that
    # is most of what info() costs) mean nothing here.
    access_log.handle(access_log.makeRecord(
        ACCESS_LOGGER, logging.INFO, "", 0, "%s %s %d %.2fms project=%s",
        (req.method, path, status, ms, project or "-"), None, None,
        {
            "request_id": request_id,
            "fields": {"method": req.method, "path": path, "status": status,
                       "duration_ms": ms, "project": project},
        },
    ))


class Gate:
    """Checks every request before its resource sees it (see the module docstring)."""

    def __init__(
        self,
        authenticator: Authenticator,
        access_log: bool = True,
        limit: RateLimit | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.limit = limit
        """Requests per project (``rate_limit.py``); None: no limit."""
        self.requests = RequestMetrics()
        # Whether to write the access log: off, or its logger does not take INFO lines.
        self._access_log = access_log

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ctx = req.context
        ctx.started = time.perf_counter()
        ctx.request_id = request_id_from(req.get_header(REQUEST_ID_HEADER))
        REQUEST_ID.set(ctx.request_id)
        if tracing.ENABLED:  # the caller's traceparent continues here (tracing.py)
            ctx.span = tracing.server_span(req.method, req.headers.items())
        check_request(req)
        problem = non_canonical(req.path, req.scope.get("raw_path"))
        if problem is not None:
            raise ApiError(*NON_CANONICAL, f"The request path is not in canonical form: {problem}.")
        if not _accepts_json(req) and req.path != METRICS_PATH:
            raise ApiError(406, None)
        if req.content_length is not None:
            content_type = req.content_type
            if content_type is not None and content_type.startswith(_FORM):
                raise ApiError(*FORM_BODY)

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        if "" in params.values():
            # Falcon matches a field to an empty segment ("/v2/pools/"): no route has one.
            raise ApiError(*NO_ROUTE)
        if req.uri_template in PUBLIC_ROUTES:
            return
        principal = await self.authenticator.identify(req.method, req.path, req.get_header)

        def header(name: str) -> str | None:
            # A token names the project; the caller's X-Project-ID is ignored.
            if principal.project is not None and name == "X-Project-ID":
                return principal.project
            return req.get_header(name)

        caller = read_caller(header)
        ctx = req.context
        ctx.client_id = caller.client_id
        ctx.project = caller.project
        ctx.roles = principal.roles
        ctx.token = principal.token
        if self.limit is not None:
            await self.limit.take(caller.project)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        ctx = req.context
        resp.set_header(REQUEST_ID_HEADER, ctx.request_id)
        started = getattr(ctx, "started", None)
        # The HTTP protocol (http_protocol.py) may have cut the request off and answered it
        # itself: what the app made of its partial body never went out.
        status = req.scope.get(CUT_OFF) or resp.status_code
        self.requests.done(req.uri_template, req.method, status, started)
        if self._access_log and access_log.isEnabledFor(logging.INFO):
            log_access(req, status, started)
        span = getattr(ctx, "span", None)
        if span is not None:
            ctx.span = None
            span.rename(f"{req.method} {req.uri_template or metrics.NO_ROUTE}")
            span.end(f"HTTP {status}" if status >= 500 else None,
                     **{"http.response.status_code": status})
