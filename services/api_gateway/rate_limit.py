"""Requests per project at the gateway: the limit of ``services/common/rate_limit.py``, whose
refusals are the gateway's 429 ``Too Many Requests`` with ``Retry-After`` (the gate in
``middleware.py`` and the WebSocket server take one request of a known project's before it
goes on, so a refused request reaches no service)."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.api_gateway.errors import ApiError
from services.common import rate_limit as common
from services.common.config import Settings
from services.common.rate_limit import TITLE, RateLimit, refusal

__all__ = [
    "ProjectRateLimit", "RateLimit", "SharedProjectRateLimit", "TooManyRequests", "from_settings",
]


class TooManyRequests(ApiError):
    """429, with the whole seconds until the project's next request is allowed."""

    def __init__(self, rate: float, retry_after: int) -> None:
        super().__init__(429, TITLE, refusal(rate, retry_after),
                         {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class _Refusing429(common.Refusing):
    def refused(self, retry_after: int) -> Exception:
        return TooManyRequests(self.rate, retry_after)


class ProjectRateLimit(_Refusing429, common.ProjectRateLimit):
    """Token buckets by project in this gateway process; a refusal is a 429."""


class SharedProjectRateLimit(_Refusing429, common.SharedProjectRateLimit):
    """Token buckets by project in Redis, shared by every replica; a refusal is a 429."""


def from_settings(
    settings: Settings, clock: Callable[[], float] = time.monotonic
) -> RateLimit | None:
    """The gateway's limit as the settings describe it (``common.from_settings``)."""
    return common.from_settings(settings, clock, local=ProjectRateLimit,
                                shared=SharedProjectRateLimit)
