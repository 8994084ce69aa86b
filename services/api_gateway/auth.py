"""Who is asking, per HTTP request: no-auth headers, a Keystone token or a pre-signed URL.

The gateway's one request middleware (``middleware.py``) calls :meth:`Authenticator.identify`
on every routed request that is not on its public allow-list; nothing else reads the
tenant or the roles of a request.

- **no-auth** (``auth_strategy = "noauth"``): the project is ``X-Project-ID`` and the roles are
  ``X-Roles``, as the caller sends them; with ``admin_mode`` (development only), ``admin`` is
  added to them (:func:`with_admin`).
- **keystone**: ``X-Auth-Token`` is validated by the shared Keystone client
  (``services/common/keystone.py``: service token, bounded cache until expiry or
  ``token_cache_seconds``, one aiohttp session); the project and roles are the token's, and
  the caller's ``X-Project-ID`` and ``X-Roles`` are ignored, as keystonemiddleware does. A
  missing, invalid or expired token is answered 401
  ``{"error": {"code": 401, "title": "Unauthorized", "message": ...}}`` with
  ``WWW-Authenticate: Keystone uri="<keystone_url>"``; Keystone unreachable is 503 with Zaqar's
  body.
- **pre-signed** (``URL-Signature`` present, either mode, contract §6): the request goes ahead
  only when the signature verifies and grants its method and (canonical) path before an expiry
  still ahead, as the project of its ``X-Project-ID``, with no roles; it needs no token. Any
  other is answered 404 (in keystone mode, 401 first when it has no valid token either).

Behind the gateway, its calls to the services carry its own service token
(``services/common/grpc_auth.py``): the services take the project the gateway sends, which
came from the token validated here. The user's token goes along (``x-auth-token``) only where
a service acts as the user: creating the Keystone trust of a ``trust+`` subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import orjson

from services.api_gateway.errors import TITLE_UNAVAILABLE, ApiError
from services.common import signing
from services.common.keystone import KeystoneAuth, KeystoneUnavailable, Unauthorized

log = logging.getLogger(__name__)

UNAUTHORIZED_MESSAGE: Final = "The request you have made requires authentication."
UNAVAILABLE_MESSAGE: Final = "The identity service cannot be reached. Please try again later."
SIGNATURE_REFUSED: Final = (404, "404 Not Found")

Header = Callable[[str], str | None]


class Unauthenticated(ApiError):
    """Keystone's 401: its own body (not Zaqar's) and a ``WWW-Authenticate`` challenge."""

    def __init__(self, www_authenticate: str) -> None:
        super().__init__(
            401, "Unauthorized", UNAUTHORIZED_MESSAGE, {"WWW-Authenticate": www_authenticate}
        )

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"code": 401, "title": self.title, "message": self.description}}
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The tenant a request acts for (None: take ``X-Project-ID``, checked by the caller of
    :meth:`Authenticator.identify`), its roles and the caller's own token."""

    project: str | None
    roles: str
    token: str


def with_admin(roles: str) -> str:
    """``roles`` (comma-separated) with ``admin`` added: every no-auth caller's roles in
    ``admin_mode``, as Zaqar's ``admin_mode`` makes every caller an admin."""
    return f"admin,{roles}" if roles else "admin"


class Authenticator:
    """The configured auth strategy, applied to one request's headers. ``admin_mode`` (no-auth
    only; ``keystone.check_settings`` refuses it with Keystone) makes every no-auth caller an
    admin; a pre-signed request keeps no roles."""

    def __init__(
        self,
        keystone: KeystoneAuth | None,
        keys: signing.Keys,
        admin_mode: bool = False,
    ) -> None:
        self.keystone = keystone
        self.keys = keys
        """The pre-signed URL secrets, read at each request (they may be replaced)."""
        self.admin_mode = admin_mode and keystone is None

    async def identify(self, method: str, path: str, header: Header) -> Principal:
        """The principal of a request to ``method path`` (a canonical path), or raises
        :class:`ApiError`: 401 (keystone) for a missing or invalid token, 503 when Keystone
        cannot be reached, 404 for a signature that does not grant the request (in keystone
        mode, after the token: a signature that does not verify is no way around it)."""
        given = header("URL-Signature")
        if given is not None and signing.verify_request(
            self.keys.verifying,
            method=method,
            path=path,
            project=header("X-Project-ID") or "",
            given=given,
            methods=header("URL-Methods") or "",
            paths=header("URL-Paths") or "",
            expires=header("URL-Expires"),
        ):
            return Principal(None, "", "")
        if self.keystone is None:
            if given is not None:
                raise ApiError(*SIGNATURE_REFUSED)
            # No Keystone: a token is nobody's, and is not passed on.
            roles = header("X-Roles") or ""
            return Principal(None, with_admin(roles) if self.admin_mode else roles, "")
        token = header("X-Auth-Token") or ""
        # A signature that does not verify is no way around Keystone.
        try:
            identity = await self.keystone.validate(token or None)
        except Unauthorized:
            raise Unauthenticated(self.keystone.www_authenticate) from None
        except KeystoneUnavailable as exc:
            log.warning("token validation failed: %s", exc)
            raise ApiError(503, TITLE_UNAVAILABLE, UNAVAILABLE_MESSAGE) from None
        if given is not None:
            raise ApiError(*SIGNATURE_REFUSED)
        return Principal(identity.project, identity.roles_header, token)
