"""``/v2/queues/{queue_name}/subscriptions[/{subscription_id}[/confirm]]``.

notifier_svc is not deployed yet, so every subscription route answers 503: an empty list
would tell clients that a queue has no subscribers, which nothing here can promise.
"""

from __future__ import annotations

import falcon.asgi

from services.api_gateway.errors import unavailable

NOT_DEPLOYED = "Subscriptions are not available: notifier_svc is not deployed."


async def _answer(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str) -> None:
    raise unavailable(NOT_DEPLOYED)


class SubscriptionCollection:
    on_get = staticmethod(_answer)
    on_post = staticmethod(_answer)


class SubscriptionItem:
    on_get = staticmethod(_answer)
    on_patch = staticmethod(_answer)
    on_delete = staticmethod(_answer)


class SubscriptionConfirm:
    on_put = staticmethod(_answer)
