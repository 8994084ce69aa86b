"""Keystone authentication of the gateway (``auth_strategy = "keystone"``, contract §1, §6, §7).

:class:`KeystoneAuth` validates an ``X-Auth-Token`` with ``GET /v3/auth/tokens``
(``X-Subject-Token``) under the gateway's own service token, which it obtains with the service
credentials and renews before it expires. Valid tokens are cached (bounded, least recently
used first out) until their expiry, or ``token_cache_seconds`` when that comes sooner. One
aiohttp session is reused for every call to Keystone.

HTTP: :func:`with_auth` wraps the ASGI app. On ``/v2/...`` a request needs a valid token; its
``X-Project-ID`` and ``X-Roles`` headers are replaced by the token's project and role names
before the app sees it (so tenancy and the admin check work as in no-auth mode), the way
keystonemiddleware hands a request on. A missing, invalid or expired token is answered 401
``{"error": {"code": 401, "title": "Unauthorized", "message": ...}}`` with
``WWW-Authenticate: Keystone uri="<keystone_url>"``; Keystone unreachable is 503 with Zaqar's
body. A pre-signed request (``URL-Signature`` whose signature verifies and has not expired)
skips Keystone; the app's own header middleware then checks what it grants. The WebSocket
server uses :meth:`KeystoneAuth.validate` for its ``authenticate`` action.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import orjson

from services.api_gateway.errors import TITLE_UNAVAILABLE
from services.common import signing
from services.common.config import ConfigurationError, Settings

log = logging.getLogger(__name__)

STRATEGIES: Final = ("noauth", "keystone")
CACHE_SIZE: Final = 10_000
KEYSTONE_TIMEOUT: Final = 5.0
UNAUTHORIZED_MESSAGE: Final = "The request you have made requires authentication."
UNAVAILABLE_MESSAGE: Final = "The identity service cannot be reached. Please try again later."
# Headers the token decides; a caller's own values are dropped.
_TOKEN_HEADERS: Final = frozenset({b"x-project-id", b"x-roles"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Unauthorized(Exception):
    """The token is missing, unknown, revoked, expired or not scoped to a project."""


class KeystoneUnavailable(Exception):
    """Keystone cannot be reached, or refuses the gateway's own credentials."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a valid token says about its bearer."""

    project: str
    roles: tuple[str, ...]
    user: str
    expires_at: float  # epoch seconds

    @property
    def roles_header(self) -> str:
        return ",".join(self.roles)


def _epoch(value: str) -> float:
    """A Keystone timestamp (``2026-11-26T22:31:05.000000Z``) as epoch seconds."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check_settings(settings: Settings) -> None:
    if settings.auth_strategy not in STRATEGIES:
        raise ConfigurationError(
            f"auth_strategy must be one of {', '.join(STRATEGIES)}, not {settings.auth_strategy!r}"
        )
    if settings.auth_strategy == "keystone" and not (
        settings.keystone_url and settings.keystone_username
    ):
        raise ConfigurationError(
            "auth_strategy keystone needs keystone_url and the service credentials "
            "(keystone_username, keystone_password, keystone_project)"
        )


class KeystoneAuth:
    """Token validation against Keystone's identity API v3, with a bounded cache."""

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.url = settings.keystone_url.rstrip("/")
        self.settings = settings
        self.cache_seconds = max(0.0, settings.token_cache_seconds)
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._service_token: str | None = None
        self._service_renew_at = 0.0
        self._service_lock = asyncio.Lock()

    @property
    def www_authenticate(self) -> str:
        return f'Keystone uri="{self.settings.keystone_url}"'

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=KEYSTONE_TIMEOUT),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # The gateway's own token -------------------------------------------------------------

    async def service_token(self, renew: bool = False) -> str:
        async with self._service_lock:
            if not renew and self._service_token and time.time() < self._service_renew_at:
                return self._service_token
            s = self.settings
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": s.keystone_username,
                                "domain": {"name": s.keystone_user_domain},
                                "password": s.keystone_password,
                            }
                        },
                    },
                    "scope": {
                        "project": {
                            "name": s.keystone_project,
                            "domain": {"name": s.keystone_project_domain},
                        }
                    },
                }
            }
            try:
                async with self._http().post(
                    self.url + "/auth/tokens", data=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as answer:
                    payload = await answer.read()
                    if answer.status != 201:
                        log.error("Keystone refused the service credentials: %s %s",
                                  answer.status, payload[:200])
                        raise KeystoneUnavailable(f"service token refused ({answer.status})")
                    token = answer.headers["X-Subject-Token"]
            except (aiohttp.ClientError, TimeoutError, KeyError) as exc:
                raise KeystoneUnavailable(str(exc)) from exc
            doc = orjson.loads(payload)["token"]
            issued, expires = _epoch(doc["issued_at"]), _epoch(doc["expires_at"])
            # Renew when a quarter of its life (at most a minute) is left.
            self._service_renew_at = expires - min(60.0, (expires - issued) / 4)
            self._service_token = token
            return token

    # Validation ----------------------------------------------------------------------------

    async def validate(self, token: str | None) -> Identity:
        """The identity of a valid project-scoped token; raises :class:`Unauthorized` or
        :class:`KeystoneUnavailable`."""
        if not token:
            raise Unauthorized("no token")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            until, identity = cached
            if now < until:
                self._cache.move_to_end(token)
                return identity
            del self._cache[token]
            if now >= identity.expires_at:
                raise Unauthorized("expired")
        identity = await self._ask(token)
        if identity.expires_at <= time.time():
            raise Unauthorized("expired")
        if self.cache_seconds > 0:
            self._cache[token] = (min(identity.expires_at, now + self.cache_seconds), identity)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return identity

    async def _ask(self, token: str) -> Identity:
        for attempt in range(2):
            service = await self.service_token(renew=attempt > 0)
            try:
                async with self._http().get(
                    self.url + "/auth/tokens",
                    headers={"X-Auth-Token": service, "X-Subject-Token": token},
                ) as answer:
                    payload = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KeystoneUnavailable(str(exc)) from exc
            if status == 200:
                return self._identity(payload)
            if status in (400, 404):
                raise Unauthorized(f"Keystone answered {status}")
            if status == 401 and attempt == 0:
                continue  # our own token was refused: renew it once
            log.error("Keystone answered %s to a token validation: %s", status, payload[:200])
            raise KeystoneUnavailable(f"token validation answered {status}")
        raise KeystoneUnavailable("the service token is refused")

    @staticmethod
    def _identity(payload: bytes) -> Identity:
        try:
            doc = orjson.loads(payload)["token"]
            project = doc.get("project")
            if not project or not project.get("id"):
                raise Unauthorized("the token is not scoped to a project")
            roles = tuple(str(role["name"]) for role in doc.get("roles", ()))
            return Identity(
                project=str(project["id"]),
                roles=roles,
                user=str(doc.get("user", {}).get("id", "")),
                expires_at=_epoch(doc["expires_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise KeystoneUnavailable(f"unexpected token document: {exc}") from exc


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
