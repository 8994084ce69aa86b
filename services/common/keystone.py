"""The one Keystone client of every process (``auth_strategy = "keystone"``): token validation
with a bounded cache, the process's own service token, and OS-TRUST trusts.

:class:`KeystoneAuth` validates a token with ``GET /v3/auth/tokens`` (``X-Subject-Token``)
under the process's own service token, which it obtains with the service credentials
(``keystone_username`` …) and renews before it expires. Valid tokens are cached (bounded,
least recently used first out) until their expiry, or ``token_cache_seconds`` when that comes
sooner; concurrent validations of one token make one request. One aiohttp session is reused
for every call to Keystone.

The gateway validates ``X-Auth-Token`` with it (``services/api_gateway/auth.py``), every
service checks the tokens of its gRPC callers with it (``services/common/grpc_auth.py``) and
sends its own token on its calls to the others, and notifier_svc creates trusts and gets
trust-scoped tokens with it (``trust+http(s)`` subscribers).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from services.common.config import ConfigurationError, Settings

if TYPE_CHECKING:
    import aiohttp

    from services.common.secret_files import Part

log = logging.getLogger(__name__)

STRATEGIES: Final = ("noauth", "keystone")
CACHE_SIZE: Final = 10_000
# What a token can be: visible ASCII (Keystone's fernet and JWS tokens are base64url text), as
# HTTP headers and gRPC metadata carry it.
TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]{1,8192}")
# A token obtained here is renewed when this share of its life (at most a minute) is left.
RENEW_SHARE: Final = 0.25
RENEW_AT_MOST: Final = 60.0

# Answers of a Keystone that failed on its side (a worker crashed, a database locked, a proxy
# in front without a backend), after which a request that changes nothing is made once more,
# this many seconds later.
RETRIED_STATUSES: Final = frozenset({500, 502, 503, 504})
RETRY_AFTER: Final = 0.2

T = TypeVar("T")


class Unauthorized(Exception):
    """The token is missing, unknown, revoked, expired or not scoped to a project."""


class KeystoneUnavailable(Exception):
    """Keystone cannot be reached, or refuses the process's own credentials."""


class TrustRefused(Exception):
    """Keystone refused to create, read or use a trust; the message says why."""


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


@dataclass(frozen=True, slots=True)
class Trust:
    """A trust as Keystone describes it."""

    id: str
    trustor: str
    trustee: str
    project: str
    expires_at: float | None  # epoch seconds; None = never


def epoch(value: str) -> float:
    """A Keystone timestamp (``2026-11-26T22:31:05.000000Z``) as epoch seconds."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def timestamp(seconds: float) -> str:
    """Epoch seconds as Keystone writes them: ``2026-11-26T22:31:05.000000Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _renew_at(issued: float, expires: float) -> float:
    return expires - min(RENEW_AT_MOST, (expires - issued) * RENEW_SHARE)


def check_settings(settings: Settings) -> None:
    """Raises: ConfigurationError for an unknown strategy, keystone without credentials, or
    keystone with ``admin_mode``."""
    if settings.auth_strategy not in STRATEGIES:
        raise ConfigurationError(
            f"auth_strategy must be one of {', '.join(STRATEGIES)}, not {settings.auth_strategy!r}"
        )
    if settings.auth_strategy == "keystone" and settings.admin_mode:
        raise ConfigurationError(
            "admin_mode makes every caller an admin and is for development with "
            "auth_strategy noauth only; it cannot be set with auth_strategy keystone"
        )
    if settings.auth_strategy == "keystone" and not (
        settings.keystone_url and settings.keystone_username
    ):
        raise ConfigurationError(
            "auth_strategy keystone needs keystone_url and the service credentials "
            "(keystone_username, keystone_password, keystone_project)"
        )


def keystone_parts(auth: KeystoneAuth | None) -> list[Part]:
    """The secret a process's Keystone client takes anew from its file, if it has one
    (``secret_files.SecretFiles.of``)."""
    return [] if auth is None else [auth.secret_part()]


def keystone_for(settings: Settings) -> KeystoneAuth | None:
    """A Keystone client in keystone mode, None in no-auth mode (settings checked)."""
    check_settings(settings)
    return KeystoneAuth(settings) if settings.auth_strategy == "keystone" else None


class _SingleFlight:
    """Concurrent requests for one key share one call."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is not None:
            result: T = await asyncio.shield(running)
            return result
        future: asyncio.Future[Any] = asyncio.ensure_future(call())
        # Its outcome is read even when every waiter was cancelled meanwhile.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._running[key] = future
        try:
            result = await asyncio.shield(future)
            return result
        finally:
            if self._running.get(key) is future:
                del self._running[key]

    async def cancel(self) -> None:
        """Cancel the calls in flight and wait for them to end."""
        running = list(self._running.values())
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)


class KeystoneAuth:
    """Keystone's identity API v3, as one process uses it."""

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.url = settings.keystone_url.rstrip("/")
        self.settings = settings
        self.cache_seconds = max(0.0, settings.token_cache_seconds)
        self.timeout = settings.keystone_timeout
        self.service_roles = frozenset(
            r.strip() for r in settings.keystone_service_roles.split(",") if r.strip()
        )
        # Round trips made to validate tokens (the cache's misses): for tests and metrics.
        self.validations = 0
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._asking = _SingleFlight()
        self._session: aiohttp.ClientSession | None = None
        self._service_token: str | None = None
        self._refusal_renewed_at = -float("inf")  # time.monotonic() of the last one
        self._service_user = ""
        self._service_renew_at = 0.0
        self._service_lock = asyncio.Lock()
        self._password = settings.keystone_password
        self._trust_tokens: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._trust_flight = _SingleFlight()
        self._closed = False
        # Why Keystone is taken as down (a request waited out the timeout), "" while it answers;
        # and whether a request is trying it meanwhile (_send).
        self._down = ""
        self._trying = False

    @property
    def www_authenticate(self) -> str:
        return f'Keystone uri="{self.settings.keystone_url}"'

    def _http(self) -> aiohttp.ClientSession:
        # Imported on first use: it costs a process about 0.2 s of CPU and 9 MB at start, and
        # only keystone mode needs it (tests/unit/test_start_imports.py).
        import aiohttp

        if self._closed:
            raise KeystoneUnavailable("the Keystone client is closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session; later calls fail with KeystoneUnavailable (a validation still
        running, left by a cancelled caller, cannot open a new one)."""
        self._closed = True
        await asyncio.gather(self._asking.cancel(), self._trust_flight.cancel())
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, headers: dict[str, str], body: Any = None,
        *, safe: bool = False,
    ) -> tuple[int, bytes, Any]:
        """(status, body, response headers); raises KeystoneUnavailable when unreachable.

        ``safe``: the request changes nothing in Keystone (a validation, a token issued), so
        an answer in :data:`RETRIED_STATUSES` is followed by one more try, :data:`RETRY_AFTER`
        seconds later."""
        answer = await self._send(method, path, headers, body)
        if safe and answer[0] in RETRIED_STATUSES:
            log.warning("Keystone answered %s to %s %s; once more in %.1f s: %s",
                        answer[0], method, path, RETRY_AFTER, answer[1][:200])
            await asyncio.sleep(RETRY_AFTER)
            answer = await self._send(method, path, headers, body)
        return answer

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[int, bytes, Any]:
        import aiohttp  # (see _http)

        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        data = None if body is None else orjson.dumps(body)
        # While Keystone is taken as down, one request at a time tries it (and so finds it as
        # soon as it answers again), and the others fail at once instead of each waiting out
        # the timeout.
        trying = bool(self._down)
        if trying:
            if self._trying:
                raise KeystoneUnavailable(self._down)
            self._trying = True
        try:
            for attempt in range(2):
                try:
                    async with self._http().request(
                        method, self.url + path, headers=headers, data=data
                    ) as answer:
                        answered = answer.status, await answer.read(), answer.headers
                except aiohttp.ServerDisconnectedError as exc:
                    # A pooled connection the server had closed (its keep-alive ran out)
                    # fails before the request is read: once more on a new connection.
                    if attempt == 0:
                        continue
                    raise KeystoneUnavailable(f"{type(exc).__name__}: {exc}") from exc
                except TimeoutError as exc:
                    self._went_down(f"Keystone did not answer within {self.timeout:g} s")
                    raise KeystoneUnavailable(f"{type(exc).__name__}: {exc}") from exc
                except aiohttp.ClientError as exc:
                    raise KeystoneUnavailable(f"{type(exc).__name__}: {exc}") from exc
                if self._down:
                    self._down = ""
                    log.warning("Keystone at %s answers again", self.url)
                return answered
        finally:
            if trying:
                self._trying = False
        raise AssertionError("unreachable")

    def _went_down(self, why: str) -> None:
        if not self._down:
            log.warning("%s at %s: until it does, one request at a time waits for it and the "
                        "others fail at once", why, self.url)
        self._down = why

    # The process's own token ---------------------------------------------------------------

    def _password_identity(self) -> dict[str, Any]:
        s = self.settings
        return {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": s.keystone_username,
                    "domain": {"name": s.keystone_user_domain},
                    "password": self._password,
                }
            },
        }

    def take(self, values: Mapping[str, str]) -> None:
        """Authenticate with ``values["keystone_password"]`` from now on (its file changed:
        ``secret_files.py``). The tokens in hand are kept while Keystone accepts them; the
        next one refused is renewed at once, with the new password, however recently one
        was (Keystone revokes a user's tokens when its password changes).

        Raises:
            ConfigurationError: the password is empty (a Secret emptied by mistake); the one
                in use stays.
        """
        password = values["keystone_password"]
        if not password:
            raise ConfigurationError(
                "keystone_password is empty: the service user cannot log in without one"
            )
        self._password = password
        self._refusal_renewed_at = -float("inf")

    def secret_part(self) -> Part:
        """The secret this client takes anew from its file (:meth:`take`)."""
        return ("keystone_password",), self.take

    async def service_token(self, renew: bool = False) -> str:
        """This process's own project-scoped token (``keystone_project``), renewed before it
        expires; raises :class:`KeystoneUnavailable`."""
        token = self._service_token
        if not renew and token and time.time() < self._service_renew_at:
            return token
        async with self._service_lock:
            if not renew and self._service_token and time.time() < self._service_renew_at:
                return self._service_token
            s = self.settings
            project = {"name": s.keystone_project, "domain": {"name": s.keystone_project_domain}}
            status, payload, headers = await self._request(
                "POST", "/auth/tokens", {},
                {"auth": {"identity": self._password_identity(), "scope": {"project": project}}},
                safe=True,
            )
            if status != 201 or "X-Subject-Token" not in headers:
                log.error("Keystone refused the service credentials: %s %s", status, payload[:200])
                raise KeystoneUnavailable(f"service token refused ({status})")
            doc = orjson.loads(payload)["token"]
            self._service_renew_at = _renew_at(epoch(doc["issued_at"]), epoch(doc["expires_at"]))
            self._service_user = str(doc.get("user", {}).get("id", ""))
            self._service_token = str(headers["X-Subject-Token"])
            return self._service_token

    async def service_token_refused(self, refused: str, every: float) -> str:
        """A service refused ``refused``, this process's token: a new one. The token in use
        when it is not ``refused`` (another call renewed it already), or when the last
        renewal on a refusal was less than ``every`` seconds ago; raises
        :class:`KeystoneUnavailable`."""
        async with self._service_lock:
            current = self._service_token
            now = time.monotonic()
            if current and (current != refused or now < self._refusal_renewed_at + every):
                return current
            self._refusal_renewed_at = now
        return await self.service_token(renew=True)

    async def service_user_id(self) -> str:
        """The id of this process's service user (the trustee of the trusts it creates)."""
        if not self._service_user:
            await self.service_token()
        return self._service_user

    # Validation ----------------------------------------------------------------------------

    async def validate(self, token: str | None) -> Identity:
        """The identity of a valid project-scoped token; raises :class:`Unauthorized` or
        :class:`KeystoneUnavailable`."""
        if not token:
            raise Unauthorized("no token")
        if not TOKEN_CHARS.fullmatch(token):
            # Keystone issues none like it, and it cannot travel as gRPC metadata.
            raise Unauthorized("not a token")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            until, identity = cached
            if now < until:
                self._cache.move_to_end(token)
                return identity
            self._cache.pop(token, None)
            if now >= identity.expires_at:
                raise Unauthorized("expired")
        identity = await self._asking.run(token, lambda: self._ask(token))
        if identity.expires_at <= time.time():
            raise Unauthorized("expired")
        if self.cache_seconds > 0:
            self._cache[token] = (min(identity.expires_at, now + self.cache_seconds), identity)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return identity

    async def _ask(self, token: str) -> Identity:
        self.validations += 1
        for attempt in range(2):
            service = await self.service_token(renew=attempt > 0)
            status, payload, _ = await self._request(
                "GET", "/auth/tokens", {"X-Auth-Token": service, "X-Subject-Token": token},
                safe=True,
            )
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
                expires_at=epoch(doc["expires_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise KeystoneUnavailable(f"unexpected token document: {exc}") from exc

    def is_service(self, identity: Identity) -> bool:
        """Whether the token carries one of ``keystone_service_roles``."""
        return not self.service_roles.isdisjoint(identity.roles)

    # Trusts (OS-TRUST) ---------------------------------------------------------------------

    async def create_trust(
        self, user_token: str, trustor: Identity, expires_at: float | None
    ) -> str:
        """A trust from the bearer of ``user_token`` (``trustor``, its validated identity) to
        this process's service user, on the trustor's project with the trustor's roles,
        impersonating the trustor (Zaqar's trust), until ``expires_at`` (None = never).

        Raises:
            TrustRefused: Keystone refused it (e.g. a trust-scoped caller token).
            KeystoneUnavailable: Keystone cannot be reached.
        """
        trust: dict[str, Any] = {
            "trustor_user_id": trustor.user,
            "trustee_user_id": await self.service_user_id(),
            "project_id": trustor.project,
            "impersonation": True,
            "roles": [{"name": role} for role in trustor.roles],
        }
        if expires_at is not None:
            trust["expires_at"] = timestamp(expires_at)
        status, payload, _ = await self._request(
            "POST", "/OS-TRUST/trusts", {"X-Auth-Token": user_token}, {"trust": trust}
        )
        if status != 201:
            raise TrustRefused(f"Keystone answered {status} to the trust creation: "
                               f"{_error_text(payload)}")
        return str(orjson.loads(payload)["trust"]["id"])

    async def get_trust(self, user_token: str, trust_id: str) -> Trust:
        """A trust as its trustor (or trustee) sees it; raises TrustRefused when the bearer of
        ``user_token`` cannot see it (unknown, or not theirs)."""
        if not trust_id or "/" in trust_id:
            raise TrustRefused("malformed trust id")
        status, payload, _ = await self._request(
            "GET", f"/OS-TRUST/trusts/{trust_id}", {"X-Auth-Token": user_token}, safe=True
        )
        if status != 200:
            raise TrustRefused(f"Keystone answered {status}: {_error_text(payload)}")
        doc = orjson.loads(payload)["trust"]
        expires = doc.get("expires_at")
        return Trust(
            id=str(doc["id"]), trustor=str(doc["trustor_user_id"]),
            trustee=str(doc["trustee_user_id"]), project=str(doc.get("project_id") or ""),
            expires_at=None if not expires else epoch(expires),
        )

    async def delete_trust(self, user_token: str, trust_id: str) -> bool:
        """Delete a trust as its trustor; False when Keystone refuses (best effort)."""
        try:
            status, _, _ = await self._request(
                "DELETE", f"/OS-TRUST/trusts/{trust_id}", {"X-Auth-Token": user_token}
            )
        except KeystoneUnavailable:
            return False
        return status == 204

    async def trust_token(self, trust_id: str) -> str:
        """A trust-scoped token of this process's service user for ``trust_id``, cached until
        shortly before it expires.

        Raises:
            TrustRefused: the trust is unknown, expired or deleted.
            KeystoneUnavailable: Keystone cannot be reached.
        """
        cached = self._trust_tokens.get(trust_id)
        if cached is not None and time.time() < cached[0]:
            self._trust_tokens.move_to_end(trust_id)
            return cached[1]
        return await self._trust_flight.run(trust_id, lambda: self._new_trust_token(trust_id))

    async def _new_trust_token(self, trust_id: str) -> str:
        scope = {"OS-TRUST:trust": {"id": trust_id}}
        status, payload, headers = await self._request(
            "POST", "/auth/tokens", {},
            {"auth": {"identity": self._password_identity(), "scope": scope}}, safe=True,
        )
        if status != 201 or "X-Subject-Token" not in headers:
            self._trust_tokens.pop(trust_id, None)
            if status >= 500:
                raise KeystoneUnavailable(f"trust-scoped token: Keystone answered {status}")
            raise TrustRefused(f"Keystone answered {status} to a token for trust {trust_id}: "
                               f"{_error_text(payload)}")
        doc = orjson.loads(payload)["token"]
        token = str(headers["X-Subject-Token"])
        self._trust_tokens[trust_id] = (
            _renew_at(epoch(doc["issued_at"]), epoch(doc["expires_at"])), token
        )
        while len(self._trust_tokens) > CACHE_SIZE:
            self._trust_tokens.popitem(last=False)
        return token


def _error_text(payload: bytes) -> str:
    try:
        doc = orjson.loads(payload)
        return str(doc["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return payload[:200].decode(errors="replace")
