"""Keystone authentication of the gateway (``auth_strategy = "keystone"``, contract §1, §6, §7).

Tokens are validated by the shared Keystone client (``services/common/keystone.py``: service
token, bounded cache until expiry or ``token_cache_seconds``, one aiohttp session).

HTTP: :func:`with_auth` wraps the ASGI app. On ``/v2/...`` a request needs a valid token; its
``X-Project-ID`` and ``X-Roles`` headers are replaced by the token's project and role names
before the app sees it (so tenancy and the admin check work as in no-auth mode), the way
keystonemiddleware hands a request on. A missing, invalid or expired token is answered 401
``{"error": {"code": 401, "title": "Unauthorized", "message": ...}}`` with
``WWW-Authenticate: Keystone uri="<keystone_url>"``; Keystone unreachable is 503 with Zaqar's
body. A pre-signed request (``URL-Signature`` whose signature verifies and has not expired)
skips Keystone; the app's own header middleware then checks what it grants. The WebSocket
server uses :meth:`KeystoneAuth.validate` for its ``authenticate`` action.

Behind the gateway, its calls to the services carry its own service token
(``services/common/grpc_auth.py``): the services take the project the gateway sends, which
came from the token validated here. The user's token goes along (``x-auth-token``) only where
a service acts as the user: creating the Keystone trust of a ``trust+`` subscriber.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson

from services.api_gateway.errors import TITLE_UNAVAILABLE
from services.common import signing
from services.common.config import Settings
from services.common.keystone import (
    KeystoneAuth,
    KeystoneUnavailable,
    Unauthorized,
    check_settings,
)

log = logging.getLogger(__name__)

UNAUTHORIZED_MESSAGE: Final = "The request you have made requires authentication."
UNAVAILABLE_MESSAGE: Final = "The identity service cannot be reached. Please try again later."
# Headers the token decides; a caller's own values are dropped.
_TOKEN_HEADERS: Final = frozenset({b"x-project-id", b"x-roles"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def signed_request(secret: str, method: str, path: str, headers: dict[bytes, bytes]) -> bool:
    """Whether a request is pre-signed (contract §6) with a signature that verifies and grants
    its method and path before an expiry still ahead; such a request skips Keystone."""
    given = headers.get(b"url-signature")
    if not secret or given is None:
        return False

    def text(name: bytes) -> str:
        return headers.get(name, b"").decode("latin-1")

    expires = headers.get(b"url-expires")
    return signing.verify_request(
        secret,
        method=method,
        path=path,
        project=text(b"x-project-id"),
        given=given.decode("latin-1"),
        methods=text(b"url-methods"),
        paths=text(b"url-paths"),
        expires=None if expires is None else expires.decode("latin-1"),
    )


def _request_id_header() -> tuple[bytes, bytes]:
    return (b"x-openstack-request-id", ("req-" + str(uuid.uuid4())).encode())


class KeystoneMiddleware:
    """ASGI wrapper: authenticates every ``/v2/...`` request before the app sees it."""

    def __init__(self, app: ASGIApp, auth: KeystoneAuth, owned: bool, signed_url_secret: str):
        self.app = app
        self.auth = auth
        self.owned = owned
        self.signed_url_secret = signed_url_secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send) if self.owned else send)
            return
        if scope["type"] != "http" or not scope["path"].startswith("/v2/"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        kept = [(n, v) for n, v in scope["headers"] if n.lower() not in _TOKEN_HEADERS]
        if signed_request(self.signed_url_secret, scope["method"], scope["path"], headers):
            project = headers.get(b"x-project-id")
            if project is not None:
                kept.append((b"x-project-id", project))
            await self.app({**scope, "headers": kept}, receive, send)
            return
        token = headers.get(b"x-auth-token")
        try:
            identity = await self.auth.validate(token.decode("latin-1") if token else None)
        except Unauthorized:
            await self._unauthorized(send)
            return
        except KeystoneUnavailable as exc:
            log.warning("token validation failed: %s", exc)
            await self._answer(send, 503, orjson.dumps(
                {"title": TITLE_UNAVAILABLE, "description": UNAVAILABLE_MESSAGE}
            ))
            return
        kept.append((b"x-project-id", identity.project.encode()))
        kept.append((b"x-roles", identity.roles_header.encode()))
        await self.app({**scope, "headers": kept}, receive, send)

    async def _unauthorized(self, send: Send) -> None:
        body = {"error": {"code": 401, "title": "Unauthorized", "message": UNAUTHORIZED_MESSAGE}}
        await self._answer(
            send, 401, orjson.dumps(body),
            [(b"www-authenticate", self.auth.www_authenticate.encode())],
        )

    @staticmethod
    async def _answer(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            _request_id_header(),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _closing(self, send: Send) -> Send:
        async def closing_send(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await self.auth.aclose()
            await send(message)

        return closing_send


def with_auth(app: Any, settings: Settings, auth: KeystoneAuth | None = None) -> Any:
    """``app`` behind the configured auth strategy (unchanged in no-auth mode). ``auth``: a
    validator shared with the WebSocket server, closed by its owner; else the wrapper makes
    one and closes it at the end of the ASGI lifespan."""
    check_settings(settings)
    if settings.auth_strategy != "keystone":
        return app
    owned = auth is None
    return KeystoneMiddleware(
        app, KeystoneAuth(settings) if auth is None else auth, owned, settings.signed_url_secret
    )
