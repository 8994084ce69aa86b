"""``trust+http(s)://`` delivery (contract §5, Zaqar's trust task): a webhook POST to the URL
without ``trust+``, with ``X-Auth-Token: <token>`` where the token is scoped to the
subscription's trust (``options.trust_id``, made at subscribe time by ``trusts.py``).

Trust-scoped tokens are cached by the Keystone client until shortly before they expire. A
subscription without a trust, a trust Keystone refuses (deleted, expired) or Keystone
unreachable is a failed attempt, retried on the subscription's policy; nothing is ever sent
to a ``trust+`` subscriber without its token.
"""

from __future__ import annotations

import logging

from services.common.keystone import KeystoneAuth, KeystoneUnavailable, TrustRefused
from services.notifier_svc.delivery.webhook import WebhookSender
from services.notifier_svc.storage.base import Delivery
from services.notifier_svc.trusts import OPTION, TRUST_PREFIX

log = logging.getLogger(__name__)


class TrustSender:
    """Webhook delivery with a trust-scoped token; ``keystone`` None = no-auth mode."""

    def __init__(self, webhook: WebhookSender, keystone: KeystoneAuth | None) -> None:
        self._webhook = webhook
        self._keystone = keystone

    async def send(self, delivery: Delivery) -> bool:
        trust_id = delivery.options.get(OPTION)
        if self._keystone is None or not isinstance(trust_id, str) or not trust_id:
            log.warning("%s has no Keystone trust; delivery %s not sent", delivery.subscriber,
                        delivery.id)
            return False
        try:
            token = await self._keystone.trust_token(trust_id)
        except (TrustRefused, KeystoneUnavailable) as exc:
            log.warning("no trust-scoped token for %s (trust %s): %s", delivery.subscriber,
                        trust_id, exc)
            return False
        url = delivery.subscriber.removeprefix(TRUST_PREFIX)
        return await self._webhook.post(url, delivery, {"X-Auth-Token": token})
