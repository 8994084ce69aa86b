"""Keystone trusts of ``trust+http(s)://`` subscribers (contract §5), made as Zaqar makes them.

When a subscription gets a ``trust+`` subscriber, the caller's own token (``x-auth-token``)
creates a trust (OS-TRUST) from the caller to notifier_svc's service user, on the
subscription's project, with the caller's roles, impersonating the caller, expiring with the
subscription. Its id is stored in the subscription's options as ``trust_id`` (where Zaqar keeps
it, and shown back by GET as Zaqar does). Deliveries then POST to the URL without ``trust+``
with ``X-Auth-Token: <a trust-scoped token>`` (``delivery/trust.py``).

A caller may bring its own ``trust_id`` (Zaqar takes one given in the options): it is kept only
when Keystone shows it to the caller as a trust from the caller, to our service user, on the
subscription's project; any other is refused, so no caller can make deliveries use a trust
that is not theirs.

In no-auth mode there is no token to create a trust from: ``trust+`` subscribers are refused
(400) rather than delivered without a token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from services.common.errors import Forbidden, InvalidArgument, Unauthenticated, Unavailable
from services.common.keystone import (
    Identity,
    KeystoneAuth,
    KeystoneUnavailable,
    TrustRefused,
    Unauthorized,
)

log = logging.getLogger(__name__)

TRUST_PREFIX: Final = "trust+"
OPTION: Final = "trust_id"

NEEDS_KEYSTONE: Final = (
    "trust+ subscribers need Keystone authentication: with auth_strategy noauth there is no "
    "token to create the trust from. Use an http(s) subscriber."
)
NEEDS_TOKEN: Final = (
    "A trust+ subscriber's trust is created with the caller's Keystone token (x-auth-token), "
    "which this request does not carry."
)
REFUSED_TOKEN: Final = "Keystone refused the caller's token: it is invalid, revoked or expired."
OTHER_PROJECT: Final = "The caller's token is scoped to another project than the subscription's."
KEYSTONE_DOWN: Final = "The identity service cannot be reached. Please try again later."
BAD_TRUST_ID: Final = (
    "options.trust_id must be the id of a trust from the caller to the messaging service's "
    "user on this project: {why}"
)


def is_trust(subscriber: str) -> bool:
    return subscriber.startswith(TRUST_PREFIX)


class Trusts:
    """Creates and checks the trusts of ``trust+`` subscriptions; ``keystone`` None = no-auth
    mode (every registration is refused)."""

    def __init__(self, keystone: KeystoneAuth | None) -> None:
        self._keystone = keystone

    async def register(
        self, token: str | None, project: str, options: Mapping[str, Any], expires_at: float
    ) -> tuple[dict[str, Any], str | None]:
        """The options to store, holding a ``trust_id``, and the id of the trust created by this
        call (None when the caller's own ``trust_id`` was kept).

        Raises:
            InvalidArgument: no-auth mode, no caller token, or a ``trust_id`` not the caller's.
            Unauthenticated: Keystone refuses the caller's token.
            Forbidden: the token is another project's, or Keystone refuses to create the trust.
            Unavailable: Keystone cannot be reached.
        """
        keystone = self._keystone
        if keystone is None:
            raise InvalidArgument(NEEDS_KEYSTONE)
        if not token:
            raise InvalidArgument(NEEDS_TOKEN)
        try:
            caller = await keystone.validate(token)
            if caller.project != project:
                raise Forbidden(OTHER_PROJECT)
            given = options.get(OPTION)
            if given is not None:
                await self._check(keystone, token, caller, given)
                return dict(options), None
            trust_id = await keystone.create_trust(token, caller, expires_at)
        except Unauthorized:
            raise Unauthenticated(REFUSED_TOKEN) from None
        except KeystoneUnavailable as exc:
            log.warning("trust registration failed: %s", exc)
            raise Unavailable(KEYSTONE_DOWN) from None
        except TrustRefused as exc:
            raise Forbidden(f"Keystone refused to create the subscriber's trust: {exc}") from None
        return {**options, OPTION: trust_id}, trust_id

    async def _check(
        self, keystone: KeystoneAuth, token: str, caller: Identity, given: Any
    ) -> None:
        if not isinstance(given, str) or not given:
            raise InvalidArgument(BAD_TRUST_ID.format(why="not a non-empty string"))
        try:
            trust = await keystone.get_trust(token, given)
        except TrustRefused as exc:
            raise InvalidArgument(BAD_TRUST_ID.format(why=str(exc))) from None
        if trust.trustor != caller.user:
            raise InvalidArgument(BAD_TRUST_ID.format(why="the caller is not its trustor"))
        if trust.trustee != await keystone.service_user_id():
            raise InvalidArgument(BAD_TRUST_ID.format(why="its trustee is another user"))
        if trust.project != caller.project:
            raise InvalidArgument(BAD_TRUST_ID.format(why="it is for another project"))

    async def discard(self, token: str | None, trust_id: str | None) -> None:
        """Delete a trust no subscription uses, as its trustor; best effort (it expires with
        the subscription it was made for anyway)."""
        if self._keystone is None or not token or not trust_id:
            return
        if not await self._keystone.delete_trust(token, trust_id):
            log.info("unused trust %s not deleted; it expires on its own", trust_id)
