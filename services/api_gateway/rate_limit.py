"""Requests per project: a token bucket per project in each gateway process (extension).

``project_rate_limit`` requests per second (0: no limit, the default) with ``project_rate_burst``
at once. The gate (``middleware.py``) and the WebSocket server take one token per request of a
known project; a request that finds none is answered 429 ``Too Many Requests`` with
``Retry-After`` and reaches no service (docs/architecture.md, "Requests per project").

The buckets are this process's: with N gateway replicas a project may make up to N times the
rate. The map of buckets stays bounded: a bucket idle long enough to be full again is the same
as no bucket and is dropped, and beyond :data:`MAX_PROJECTS` the least recently used goes
first (which only gives a project back its burst early).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from itertools import islice
from typing import Final

from services.api_gateway.errors import ApiError
from services.common.config import ConfigurationError, Settings

MAX_PROJECTS: Final = 100_000
# Every this many new buckets, the idle ones are dropped.
SWEEP_EVERY: Final = 1024
TITLE: Final = "Too Many Requests"


class TooManyRequests(ApiError):
    """429, with the whole seconds until the project's next request is allowed."""

    def __init__(self, rate: float, retry_after: int) -> None:
        super().__init__(
            429, TITLE,
            f"This project makes requests faster than the {rate:g} per second allowed. "
            f"Please retry in {retry_after} s.",
            {"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class ProjectRateLimit:
    """Token buckets by project: ``burst`` requests at once, refilled at ``rate`` per second
    of ``clock`` (monotonic seconds)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_projects: int = MAX_PROJECTS,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"rate {rate!r} and burst {burst!r}: both must be positive")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max = max_projects
        # project -> (tokens, when they were counted); in order of last use.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._added = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, project: str) -> None:
        """Take one request of ``project``'s; raises :class:`TooManyRequests` when it has
        none left (and takes nothing)."""
        now = self._clock()
        bucket = self._buckets.pop(project, None)
        if bucket is None:
            tokens = self.burst
            self._added += 1
            if self._added % SWEEP_EVERY == 0:
                self._sweep(now)
            if len(self._buckets) >= self._max:
                # The least recently used, a sixteenth of the bound at a time.
                for project_ in list(islice(self._buckets, max(1, self._max // 16))):
                    del self._buckets[project_]
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens < 1.0:
            self._buckets[project] = (tokens, now)
            raise TooManyRequests(self.rate, max(1, math.ceil((1.0 - tokens) / self.rate)))
        self._buckets[project] = (tokens - 1.0, now)

    def _sweep(self, now: float) -> None:
        """Drop the buckets that are full again by now: the same as none."""
        full = [project for project, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for project in full:
            del self._buckets[project]


def from_settings(
    settings: Settings, clock: Callable[[], float] = time.monotonic
) -> ProjectRateLimit | None:
    """The limit ``project_rate_limit`` and ``project_rate_burst`` describe; None when off.

    Raises:
        ConfigurationError: a rate that is negative or not a number, a negative burst, or a
            burst without a rate.
    """
    rate, burst = settings.project_rate_limit, settings.project_rate_burst
    if not (rate >= 0 and math.isfinite(rate)):
        raise ConfigurationError(
            f"project_rate_limit (ZAQAR_PROJECT_RATE_LIMIT) must be 0 (no limit) or a number "
            f"of requests per second above 0, not {rate!r}"
        )
    if burst < 0:
        raise ConfigurationError(
            f"project_rate_burst (ZAQAR_PROJECT_RATE_BURST) must be 0 (one second's worth) or "
            f"more, not {burst!r}"
        )
    if rate == 0:
        if burst:
            raise ConfigurationError(
                "project_rate_burst (ZAQAR_PROJECT_RATE_BURST) is set without "
                "project_rate_limit (ZAQAR_PROJECT_RATE_LIMIT)"
            )
        return None
    return ProjectRateLimit(rate, burst or max(1, math.ceil(rate)), clock)
