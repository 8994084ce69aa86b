"""Webhook delivery: POST the document to ``http(s)://`` and ``trust+http(s)://`` subscribers.

As Zaqar's webhook task: ``Content-Type: application/json`` plus ``options.post_headers``; the
body is the document, or ``options.post_data`` with the literal ``"$zaqar_message$"`` (quotes
included) replaced by the document. Any answer 200-499 counts as delivered (a 4xx will not get
better by retrying); a transport error, a timeout or any other status is a failed attempt.

``trust+http(s)`` subscribers are posted to by ``trust.py``, through :meth:`WebhookSender.post`
with the trust-scoped token added.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from services.common import tracing
from services.notifier_svc.storage.base import Delivery

log = logging.getLogger(__name__)

TEMPLATE_MARK = '"$zaqar_message$"'


def request_body(options: dict[str, Any] | Any, document: bytes) -> bytes:
    """What is POSTed: the document, or ``post_data`` with the document put in."""
    post_data = options.get("post_data") if isinstance(options, dict) else None
    if post_data is None:
        return document
    template = post_data if isinstance(post_data, str) else orjson.dumps(post_data).decode()
    return template.replace(TEMPLATE_MARK, document.decode()).encode()


def request_headers(options: dict[str, Any] | Any) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    extra = options.get("post_headers") if isinstance(options, dict) else None
    if isinstance(extra, dict):
        headers.update({str(k): str(v) for k, v in extra.items()})
    return headers


class WebhookSender:
    """POSTs over one reused HTTP client session (a bounded connection pool)."""

    def __init__(self, timeout: float, connections: int) -> None:
        self._timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            # A delivery that starts while the process stops must not open a session that
            # nobody closes; it fails and its lease brings it back after the restart.
            raise aiohttp.ClientConnectionError("notifier_svc is stopping")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._connections),
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, delivery: Delivery) -> bool:
        return await self.post(delivery.subscriber, delivery)

    async def post(
        self, url: str, delivery: Delivery, headers: Mapping[str, str] | None = None
    ) -> bool:
        """One attempt at POSTing the delivery to ``url``; ``headers`` win over the
        subscription's ``post_headers``."""
        options = dict(delivery.options)
        sent = {**request_headers(options), **(headers or {})}
        span = None
        if tracing.ENABLED:
            traceparent = options.get(tracing.DELIVERY_KEY)
            span, carrier = tracing.client_span(
                f"POST {delivery.kind.value}", traceparent if isinstance(traceparent, str) else None
            )
            sent.update(carrier)
        status: int | None = None
        problem: str | None = None
        try:
            async with self._client().post(
                url, data=request_body(options, delivery.document), headers=sent,
            ) as response:
                await response.read()
                status = response.status
                if 200 <= response.status < 500:
                    return True
                problem = f"answered {response.status}"
                log.info("webhook %s answered %d", url, response.status)
                return False
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            log.info("webhook %s failed: %s: %s", url, type(exc).__name__, exc)
            return False
        finally:
            if span is not None:
                span.end(problem, **({"http.response.status_code": status} if status else {}))
