"""Keystone tokens on the gRPC API (``auth_strategy = "keystone"``).

Two kinds of caller, told apart by call metadata:

- **A project's caller** (an OpenStack service or a user) sends its own project-scoped token
  in ``x-auth-token``. The token is validated (``services/common/keystone.py``, cached) and
  the request's ``project`` field is replaced by the token's project, whatever the caller put
  there: a token of project B can only ever reach B's queues. Only the public services
  (``zaqar.v2.Queues``, ``zaqar.v2.Messages``, ``zaqar.v2.Subscriptions``, flavor reads) take
  such calls; the admin ones (``zaqar.v2.Pools``, ``zaqar.v2.StoreHealth``, flavor writes)
  take them when the token carries the ``admin`` role, Zaqar's admin check.
- **One of our services** (the gateway, or a service calling another) sends its own token in
  ``x-service-token``. A valid token that carries one of ``keystone_service_roles`` may name
  any project in its requests and call the internal services (``MessagesInternal``,
  ``NotifierInternal``); the gateway vouches for the project it took from the user's token (or
  a pre-signed URL). A valid token without such a role is refused (PERMISSION_DENIED).

The process's own token changes only when it is renewed, so after the first call a service
token costs a cache lookup: a request through the gateway makes no Keystone round trip in the
services. Health and reflection need no token. A missing, unknown, revoked or expired token is
UNAUTHENTICATED; Keystone unreachable is UNAVAILABLE. In no-auth mode none of this is installed.

With ``project_rate_limit`` set, each call a project's caller makes with its own token takes one
of the project's requests (``services/common/rate_limit.py``) once the token is checked, before
the method runs: past them it is RESOURCE_EXHAUSTED, reason ``RATE_LIMITED``, "Please retry in
N s". Calls with a service token are not counted: those of the gateway were, by the gateway.

:class:`ServiceTokenInterceptor` (and its stream twin) is the client side: every channel a
process opens in keystone mode sends the process's token as ``x-service-token`` on every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Final

import grpc
from grpc_status import rpc_status

from services.common.errors import (
    Forbidden,
    ServiceError,
    Unauthenticated,
    Unavailable,
    decode_rpc_error,
    error_info,
    to_status,
)
from services.common.grpc_types import (
    Context,
    MethodHandler,
    aio_stream_stream,
    aio_unary_stream,
    aio_unary_unary,
)
from services.common.keystone import Identity, KeystoneAuth, KeystoneUnavailable, Unauthorized
from services.common.rate_limit import RateLimit

log = logging.getLogger(__name__)

# Request fields only our services may set (a project's caller has them cleared): where a new
# queue is placed, and whether an answer shows pools' store URIs, which may hold credentials.
SERVICE_ONLY_FIELDS: Final = ("place_on", "with_placement")

TOKEN_KEY: Final = "x-auth-token"
SERVICE_TOKEN_KEY: Final = "x-service-token"
OPEN_SERVICES: Final = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

MISSING_TOKEN: Final = (
    "This call needs a Keystone token: send a project-scoped token in the x-auth-token metadata."
)
REFUSED_TOKEN: Final = "Keystone refused the token in {key}: it is invalid, revoked or expired."
INTERNAL_ONLY: Final = (
    "{service} is internal to zaqar-grpc: calls need a service token (x-service-token)."
)
NOT_A_SERVICE: Final = (
    "The token in x-service-token has none of the service roles ({roles})."
)


class ServiceTokenRefused(Unauthenticated):
    """Keystone refused the token in ``x-service-token``: the calling service's own."""

    reason = "SERVICE_TOKEN_REFUSED"


class NotAService(Forbidden):
    """The token in ``x-service-token`` is valid but carries no service role."""

    reason = "NOT_A_SERVICE"


# The reasons with which a service refuses the calling service's own credentials: never the
# fault of whoever the calling service acts for (the gateway answers them 503, not 401/403).
SERVICE_CREDENTIALS_REFUSED: Final = frozenset(
    {ServiceTokenRefused.reason, NotAService.reason}
)
# A process renews its service token on a refusal at most this often (seconds): a service
# that refuses every token (configured with another Keystone) must not make each call ask
# Keystone for a new one.
RENEW_ON_REFUSAL_EVERY: Final = 10.0
ADMIN_ROLE: Final = "admin"
NOT_AN_ADMIN: Final = "{method} is an admin call: the token needs the admin role."
KEYSTONE_DOWN: Final = "The identity service cannot be reached. Please try again later."


def metadata_value(context: Context, key: str) -> str | None:
    """The first value of ``key`` in the call's metadata."""
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            value = item[1]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def caller_token(context: Context) -> str | None:
    """The caller's own Keystone token (``x-auth-token``), e.g. to create a trust as them.

    On a call from the gateway it was validated by the gateway, not here."""
    return metadata_value(context, TOKEN_KEY)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call to a non-open service (see the module docstring).

    Args:
        auth: the process's Keystone client.
        public: services (``zaqar.v2.Queues``) or methods (``/zaqar.v2.Flavors/GetFlavor``)
            projects may call with their own token.
        admin: those of them that need the ``admin`` role in that token.
        limit: requests per project, taken from a project's caller (None: no limit).
    """

    def __init__(
        self, auth: KeystoneAuth, public: Collection[str], admin: Collection[str] = (),
        limit: RateLimit | None = None,
    ) -> None:
        self._auth = auth
        self._public = frozenset(public)
        self._admin = frozenset(admin)
        self._limit = limit
        self._wrapped: dict[str, MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        service = method.lstrip("/").split("/", 1)[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        wrapped = self._wrap(handler, service, method)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: MethodHandler, service: str, method: str) -> MethodHandler:
        check = self._checker(service, method)
        unary = aio_unary_unary(handler)
        if unary is not None:

            async def unary_unary(request: Any, context: Context) -> Any:
                await check(request, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        stream = aio_unary_stream(handler)
        if stream is not None:

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(request, context)
                async for item in stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        bidi = aio_stream_stream(handler)
        if bidi is not None and self._public.isdisjoint((service, method)):
            # An internal stream (MessagesInternal.Exchange): the service token is checked
            # once, when the stream opens; its requests carry no project to override.

            async def stream_stream(requests: Any, context: Context) -> None:
                try:
                    await self._authorise(context, service, False)
                except ServiceError as err:
                    await context.abort_with_status(rpc_status.to_status(to_status(err)))
                await bidi(requests, context)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{service}: only unary requests and internal streams are served")

    def _checker(
        self, service: str, method: str
    ) -> Callable[[Any, Context], Awaitable[None]]:
        public = not self._public.isdisjoint((service, method))
        admin = not self._admin.isdisjoint((service, method))

        async def check(request: Any, context: Context) -> None:
            try:
                identity = await self._authorise(context, service, public)
                if identity is not None and admin and ADMIN_ROLE not in identity.roles:
                    raise Forbidden(NOT_AN_ADMIN.format(method=method.lstrip("/")))
                if identity is not None and self._limit is not None:
                    await self._limit.take(identity.project)
            except ServiceError as err:
                await context.abort_with_status(rpc_status.to_status(to_status(err)))
            if identity is not None and "project" in request.DESCRIPTOR.fields_by_name:
                request.project = identity.project
                for name in SERVICE_ONLY_FIELDS:
                    if name in request.DESCRIPTOR.fields_by_name:
                        request.ClearField(name)

        return check

    async def _authorise(
        self, context: Context, service: str, public: bool
    ) -> Identity | None:
        """None for a service caller (the request's project stands), else the identity whose
        project the request is scoped to; raises ServiceError."""
        service_token = metadata_value(context, SERVICE_TOKEN_KEY)
        if service_token is not None:
            identity = await self._validate(service_token, SERVICE_TOKEN_KEY)
            if not self._auth.is_service(identity):
                roles = ", ".join(sorted(self._auth.service_roles))
                raise NotAService(NOT_A_SERVICE.format(roles=roles))
            return None
        if not public:
            raise Unauthenticated(INTERNAL_ONLY.format(service=service))
        token = metadata_value(context, TOKEN_KEY)
        if not token:
            raise Unauthenticated(MISSING_TOKEN)
        return await self._validate(token, TOKEN_KEY)

    async def _validate(self, token: str, key: str) -> Identity:
        try:
            return await self._auth.validate(token)
        except Unauthorized:
            refused = ServiceTokenRefused if key == SERVICE_TOKEN_KEY else Unauthenticated
            raise refused(REFUSED_TOKEN.format(key=key)) from None
        except KeystoneUnavailable as exc:
            log.warning("token validation failed: %s", exc)
            raise Unavailable(KEYSTONE_DOWN) from None


class _ServiceToken:
    """Adds the process's own token as ``x-service-token`` to a call's metadata.

    Keystone unreachable fails the call as UNAVAILABLE, as an unreachable upstream would. A
    token the called service refuses (revoked, say, while this process still had it cached)
    is renewed (at most every :data:`RENEW_ON_REFUSAL_EVERY` seconds): a unary call is then
    made once more with the new token; a stream fails, and the next one opened carries it."""

    def __init__(self, auth: KeystoneAuth) -> None:
        self._auth = auth

    async def _token(self) -> str:
        try:
            return await self._auth.service_token()
        except KeystoneUnavailable as exc:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                details=f"no service token: {exc}",
            ) from None

    async def _renewed(self, refused: str) -> str | None:
        """A new token in place of ``refused``; None when none is to be had now."""
        try:
            return await self._auth.service_token_refused(refused, RENEW_ON_REFUSAL_EVERY)
        except KeystoneUnavailable:
            return None

    @staticmethod
    def _details(
        details: grpc.aio.ClientCallDetails, token: str, started: float
    ) -> grpc.aio.ClientCallDetails:
        """``details`` with ``token``, and its timeout less the time gone since ``started``
        (the monotonic time the caller made the call): the wait for a token and a first try
        refused count against the caller's one deadline (0 when it is past: gRPC's
        DEADLINE_EXCEEDED)."""
        metadata = grpc.aio.Metadata(
            *(item for item in (details.metadata or ()) if item[0] != SERVICE_TOKEN_KEY),
            (SERVICE_TOKEN_KEY, token),
        )
        timeout = details.timeout
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - started))
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials,
            details.wait_for_ready,
        )

    def _renew_if_refused(self, call: Any, token: str) -> None:
        """When the stream ``call`` ends refused for ``token``, renew it for the next one."""

        async def check() -> None:
            if await call.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
            try:
                status = await rpc_status.aio.from_call(call)
            except ValueError:
                return
            info = error_info(status)
            if info is not None and info.reason == ServiceTokenRefused.reason:
                log.warning("a service refused this process's service token on a stream; "
                            "renewing it")
                await self._renewed(token)

        def done(_: object) -> None:
            task = asyncio.ensure_future(check())
            _CHECKS.add(task)
            task.add_done_callback(_CHECKS.discard)

        call.add_done_callback(done)


# Tasks checking how streams ended (kept referenced until done).
_CHECKS: set[asyncio.Future[None]] = set()


# One class per call kind: a channel files each interceptor under the first kind it is.
class ServiceTokenInterceptor(_ServiceToken, grpc.aio.UnaryUnaryClientInterceptor):
    """The service token on unary calls; a refused one is renewed and the call made again."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.monotonic()
        token = await self._token()
        call = await continuation(self._details(client_call_details, token, started), request)
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if decode_rpc_error(exc).reason != ServiceTokenRefused.reason:
                raise
            renewed = await self._renewed(token)
            if renewed is None or renewed == token:
                raise
            log.warning("a service refused this process's service token; renewed it, and "
                        "making the call %s again", client_call_details.method)
        # Within the caller's deadline: the time the refusal and the renewal took is gone.
        return await continuation(
            self._details(client_call_details, renewed, started), request
        )


class ServiceTokenStreamInterceptor(_ServiceToken, grpc.aio.UnaryStreamClientInterceptor):
    """The service token on server-streaming calls (``NotifierInternal.Watch``)."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.monotonic()
        token = await self._token()
        call = await continuation(self._details(client_call_details, token, started), request)
        self._renew_if_refused(call, token)
        return call


class ServiceTokenBidiInterceptor(_ServiceToken, grpc.aio.StreamStreamClientInterceptor):
    """The service token on bidirectional streams (``MessagesInternal.Exchange``)."""

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        started = time.monotonic()
        token = await self._token()
        call = await continuation(
            self._details(client_call_details, token, started), request_iterator
        )
        self._renew_if_refused(call, token)
        return call


def server_interceptors(
    auth: KeystoneAuth | None, public: Collection[str], admin: Collection[str] = (),
    limit: RateLimit | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The token check in keystone mode (``auth`` given), with requests per project when
    ``limit`` is given; nothing in no-auth mode."""
    return [] if auth is None else [TokenInterceptor(auth, public, admin, limit)]


def client_interceptors(auth: KeystoneAuth | None) -> list[Any]:
    """What a channel of this process needs: its service token in keystone mode."""
    if auth is None:
        return []
    return [
        ServiceTokenInterceptor(auth), ServiceTokenStreamInterceptor(auth),
        ServiceTokenBidiInterceptor(auth),
    ]
