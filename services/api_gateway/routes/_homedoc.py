"""The v2 JSON-home document (draft-nottingham-json-home), laid out like Zaqar's v2 home doc.

It lists the resources this gateway routes.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

_JSON: Final[dict[str, Any]] = {"application/json": {}}
_QUEUE: Final = {"queue_name": "param/queue_name"}


def _resource(
    template: str,
    allow: list[str],
    href_vars: dict[str, str] | None = None,
    accept_post: bool = False,
) -> dict[str, Any]:
    hints: dict[str, Any] = {"allow": allow, "formats": _JSON}
    if accept_post:
        hints["accept-post"] = ["application/json"]
    doc: dict[str, Any] = {"href-template": template}
    if href_vars is not None:
        doc["href-vars"] = href_vars
    doc["hints"] = hints
    return doc


def _queue_vars(**extra: str) -> dict[str, str]:
    return {**_QUEUE, **extra}


HOME_DOC: Final[dict[str, Any]] = {
    "resources": {
        # Queues -----------------------------------------------------------------------------
        "rel/queues": _resource(
            "/v2/queues{?marker,limit,detailed,name,with_count}",
            ["GET"],
            {
                "marker": "param/marker",
                "limit": "param/queue_limit",
                "detailed": "param/detailed",
                "name": "param/name",
                "with_count": "param/with_count",
            },
        ),
        "rel/queue": _resource(
            "/v2/queues/{queue_name}", ["GET", "PUT", "DELETE", "PATCH"], _queue_vars()
        ),
        "rel/queue_stats": _resource("/v2/queues/{queue_name}/stats", ["GET"], _queue_vars()),
        "rel/queue_purge": _resource(
            "/v2/queues/{queue_name}/purge", ["POST"], _queue_vars(), accept_post=True
        ),
        # Messages ---------------------------------------------------------------------------
        "rel/messages": _resource(
            "/v2/queues/{queue_name}/messages{?marker,limit,echo,include_claimed,include_delayed}",
            ["GET"],
            _queue_vars(
                marker="param/marker",
                limit="param/messages_limit",
                echo="param/echo",
                include_claimed="param/include_claimed",
                include_delayed="param/include_delayed",
            ),
        ),
        "rel/post_messages": _resource(
            "/v2/queues/{queue_name}/messages", ["POST"], _queue_vars(), accept_post=True
        ),
        "rel/messages_get": _resource(
            "/v2/queues/{queue_name}/messages{?ids}", ["GET"], _queue_vars(ids="param/ids")
        ),
        "rel/messages_delete": _resource(
            "/v2/queues/{queue_name}/messages{?ids,claim_ids,pop}",
            ["DELETE"],
            _queue_vars(ids="param/ids", claim_ids="param/claim_ids", pop="param/pop"),
        ),
        "rel/message_get": _resource(
            "/v2/queues/{queue_name}/messages/{message_id}",
            ["GET"],
            _queue_vars(message_id="param/message_id"),
        ),
        "rel/message_delete": _resource(
            "/v2/queues/{queue_name}/messages/{message_id}{?claim_id}",
            ["DELETE"],
            _queue_vars(message_id="param/message_id", claim_id="param/claim_id"),
        ),
        # Claims -----------------------------------------------------------------------------
        "rel/post_claim": _resource(
            "/v2/queues/{queue_name}/claims{?limit}",
            ["POST"],
            _queue_vars(limit="param/claim_limit"),
            accept_post=True,
        ),
        "rel/claim": _resource(
            "/v2/queues/{queue_name}/claims/{claim_id}",
            ["GET"],
            _queue_vars(claim_id="param/claim_id"),
        ),
        "rel/patch_claim": _resource(
            "/v2/queues/{queue_name}/claims/{claim_id}",
            ["PATCH"],
            _queue_vars(claim_id="param/claim_id"),
            accept_post=True,
        ),
        "rel/delete_claim": _resource(
            "/v2/queues/{queue_name}/claims/{claim_id}",
            ["DELETE"],
            _queue_vars(claim_id="param/claim_id"),
        ),
        # Subscriptions ----------------------------------------------------------------------
        "rel/subscriptions_get": _resource(
            "/v2/queues/{queue_name}/subscriptions{?marker,limit}",
            ["GET"],
            _queue_vars(marker="param/marker", limit="param/subscription_limit"),
        ),
        "rel/subscriptions_post": _resource(
            "/v2/queues/{queue_name}/subscriptions",
            ["POST"],
            _queue_vars(),
            accept_post=True,
        ),
        "rel/subscription": _resource(
            "/v2/queues/{queue_name}/subscriptions/{subscription_id}",
            ["GET", "PATCH", "DELETE"],
            _queue_vars(subscription_id="param/subscription_id"),
        ),
        "rel/subscription_confirm": _resource(
            "/v2/queues/{queue_name}/subscriptions/{subscription_id}/confirm",
            ["PUT"],
            _queue_vars(subscription_id="param/subscription_id"),
        ),
        # Health -----------------------------------------------------------------------------
        "rel/ping": _resource("/v2/ping", ["GET", "HEAD"]),
        "rel/health": _resource("/v2/health", ["GET"]),
    }
}

HOME_DOC_BYTES: Final = orjson.dumps(HOME_DOC)
