"""Requests per project (extension): ``project_rate_limit`` requests per second (0: no limit,
the default) with ``project_rate_burst`` at once (docs/architecture.md, "Requests per project").
The gateway's gate (``middleware.py``) and WebSocket server take one request of a known
project's before it goes on (429 ``Too Many Requests`` with ``Retry-After`` when none is left:
``services/api_gateway/rate_limit.py``); in keystone mode each service takes one for every call
a project makes with its own token (``grpc_auth.TokenInterceptor``: RESOURCE_EXHAUSTED, reason
``RATE_LIMITED``), but not for the gateways' calls, which carry their service token and which
the gateway counted.

Two ways of counting, the same limit:

- :class:`ProjectRateLimit` (the default): a token bucket per project in each process. With
  N replicas a project may make up to N times the rate. The map of buckets stays bounded: a
  bucket idle long enough to be full again is the same as no bucket and is dropped, and
  beyond :data:`MAX_PROJECTS` the least recently used goes first (which only gives a project
  back its burst early).
- :class:`SharedProjectRateLimit` (``project_rate_store``, a Redis URI): the same bucket kept
  in Redis, one key per project, so that every replica (gateways and services alike) counts
  against it. It is the generic cell rate algorithm (a token bucket written as the time at
  which the bucket will be full again), in one script call per request, on the Redis
  server's clock. When Redis cannot
  answer within :data:`STORE_TIMEOUT`, requests go through unlimited (the limit protects the
  services; it must not take them down with it): the failure is logged once per kind until
  Redis answers again, and counted in ``zaqar_rate_limit_store_errors_total``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

import grpc

from services.common.config import ConfigurationError, Settings
from services.common.errors import ServiceError
from services.common.metrics import RATE_STORE_ERRORS

if TYPE_CHECKING:
    from services.common.redis_link import Command, Link
    from services.common.redis_store import RedisOptions

log = logging.getLogger(__name__)

MAX_PROJECTS: Final = 100_000
# Every this many new buckets, the idle ones are dropped.
SWEEP_EVERY: Final = 1024
TITLE: Final = "Too Many Requests"


def refusal(rate: float, retry_after: int) -> str:
    """What a refused request is told."""
    return (f"This project makes requests faster than the {rate:g} per second allowed. "
            f"Please retry in {retry_after} s.")


class RateLimited(ServiceError):
    """A project's call refused by its rate limit, with the whole seconds until its next call
    is allowed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"
    title = TITLE

    def __init__(self, rate: float, retry_after: int) -> None:
        super().__init__(refusal(rate, retry_after))
        self.retry_after = retry_after


class Refusing:
    """What both limits raise for a refused request: :class:`RateLimited` (a subclass may say
    otherwise, as the gateway's 429)."""

    rate: float

    def refused(self, retry_after: int) -> Exception:
        return RateLimited(self.rate, retry_after)


class ProjectRateLimit(Refusing):
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

    async def take(self, project: str) -> None:
        """Take one request of ``project``'s; raises :meth:`refused` (:class:`RateLimited`)
        when it has none left (and takes nothing)."""
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
            raise self.refused(max(1, math.ceil((1.0 - tokens) / self.rate)))
        self._buckets[project] = (tokens - 1.0, now)

    async def close(self) -> None:
        """Nothing to close: the buckets are this process's."""

    def _sweep(self, now: float) -> None:
        """Drop the buckets that are full again by now: the same as none."""
        full = [project for project, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for project in full:
            del self._buckets[project]


def from_settings(
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
    *,
    local: type[ProjectRateLimit] = ProjectRateLimit,
    shared: type[SharedProjectRateLimit] | None = None,
    client_name: str = "zaqar-gateway-rate",
) -> RateLimit | None:
    """The limit ``project_rate_limit`` and ``project_rate_burst`` describe, counted where
    ``project_rate_store`` says (as ``local`` or ``shared``, which say what a refusal raises;
    ``client_name`` names the Redis connection); None when off. Makes no connection.

    Raises:
        ConfigurationError: a rate that is negative or not a number, a negative burst, a
            burst or a store without a rate, or a store URI that is not one of Redis.
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
        for name, value in (("burst", burst), ("store", settings.project_rate_store)):
            if value:
                raise ConfigurationError(
                    f"project_rate_{name} (ZAQAR_PROJECT_RATE_{name.upper()}) is set without "
                    "project_rate_limit (ZAQAR_PROJECT_RATE_LIMIT)"
                )
        return None
    burst = burst or max(1, math.ceil(rate))
    if settings.project_rate_store:
        # Imported here: a process that counts in itself never loads the Redis client.
        from services.common.redis_store import RedisOptions

        options = RedisOptions.parse(settings.project_rate_store, store=STORE, prefix="zr",
                                     max_connections=16)
        # A request waits STORE_TIMEOUT at most for Redis, unless the URI says otherwise.
        given = parse_qs(urlsplit(settings.project_rate_store).query)
        options = dataclasses.replace(
            options,
            socket_timeout=options.socket_timeout if "socket_timeout" in given
            else STORE_TIMEOUT,
            socket_connect_timeout=options.socket_connect_timeout
            if "socket_connect_timeout" in given else STORE_TIMEOUT,
        )
        return (shared or SharedProjectRateLimit)(rate, burst, options, client_name)
    return local(rate, burst, clock)


class RateLimit(Protocol):
    """What the gateway's gate and WebSocket server, and the services' token check, take a
    request from."""

    rate: float

    async def take(self, project: str) -> None: ...

    async def close(self) -> None: ...


STORE: Final = "rate limit store"
# Seconds a request waits for Redis's answer at most before it goes through unlimited.
STORE_TIMEOUT: Final = 0.25

# The generic cell rate algorithm on one key per project: the key holds the theoretical
# arrival time (TAT) of the project's next request, in seconds of the server's clock; a request
# conforms unless it comes more than the burst's tolerance before it. Answers "0" (taken) or
# the seconds until the next request would conform (as text: Lua numbers come back as integers).
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local early = tat - tolerance - now
if early > 0 then
  return string.format('%.6f', early)
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000))
return '0'
"""


class SharedProjectRateLimit(Refusing):
    """A token bucket per project in Redis, shared by every process that uses the same Redis
    (module docstring): ``burst`` requests at once, ``rate`` per second. ``client_name`` names
    its connections."""

    def __init__(self, rate: float, burst: int, options: RedisOptions,
                 client_name: str = "zaqar-gateway-rate") -> None:
        # Imported here, as RedisOptions in from_settings: only a process that counts in Redis
        # loads the Redis client.
        from redis.exceptions import RedisClusterException, RedisError

        from services.common.redis_link import Command, Link, pack
        from services.common.redis_store import describe

        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"rate {rate!r} and burst {burst!r}: both must be positive")
        self.rate = rate
        self.burst = burst
        self.options = options
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) / rate
        self._command, self._pack, self._describe = Command, pack, describe
        # What a failed call raises (an unexpected reply: ValueError): the request goes on.
        self._errors = (RedisError, RedisClusterException, OSError, TimeoutError, ValueError)
        self._client = options.connect(client_name, decode_responses=False)
        self._script = self._client.register_script(_GCRA)
        self._failing = ""
        # One Redis server (not a cluster, nor the master Sentinels name): the calls of each
        # event-loop turn go together on one pipelined connection (services/common/
        # redis_link.py), whose own reply timeout bounds the wait. Otherwise redis-py's client.
        self._link: Link | None = None
        self._turn: list[Command] = []
        if not options.cluster and not options.sentinels:
            self._link = Link(options, client_name)

    def key(self, project: str) -> str:
        # One hash tag per project: a cluster places each project's key on its own slot.
        return f"{self.options.prefix}:rate:{{{project}}}"

    async def take(self, project: str) -> None:
        args = (repr(self._interval), repr(self._tolerance))
        try:
            if self._link is not None:
                # EVAL, not EVALSHA: nothing to reload after a restart of Redis, which keeps
                # the script compiled by its hash (the text costs it one SHA-1).
                future = asyncio.get_running_loop().create_future()
                if not self._turn:
                    asyncio.get_running_loop().call_soon(self._send)
                command: tuple[Any, ...] = ("EVAL", _GCRA, 1, self.key(project), *args)
                self._turn.append(self._command(self._pack(command), future))
                early = float(await future)
            else:
                async with asyncio.timeout(self.options.socket_timeout):
                    early = float(await self._script(keys=[self.key(project)], args=args))
        except self._errors as exc:
            self._failed(exc)
            return
        if self._failing:
            self._failing = ""
            log.info("the %s at %s answers again: requests per project are limited again",
                     STORE, self.options.address)
        if early > 0:
            raise self.refused(max(1, math.ceil(early)))

    def _send(self) -> None:
        assert self._link is not None
        turn, self._turn = self._turn, []
        self._link.send(turn)

    def _failed(self, exc: Exception) -> None:
        kind = type(exc).__name__
        RATE_STORE_ERRORS.labels(kind).inc()
        if kind != self._failing:
            self._failing = kind
            if isinstance(exc, TimeoutError) and not isinstance(exc, self._errors[0]):
                reason = f"no answer within {self.options.socket_timeout:g} s"
            else:
                reason = f"{self._describe(exc)} ({kind}: {exc})"
            log.warning("the %s at %s failed: %s; requests per project go through unlimited "
                        "until it answers", STORE, self.options.address, reason)

    async def check(self) -> None:
        """Say in the log, once at start, when Redis does not answer (requests then go
        through unlimited until it does)."""
        try:
            async with asyncio.timeout(
                self.options.socket_connect_timeout + self.options.socket_timeout
            ):
                await self._client.ping()
        except self._errors as exc:
            self._failed(exc)

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
        await self._client.aclose()


def for_service(settings: Settings, process: str) -> RateLimit | None:
    """The limit a service applies to a project's own calls: in keystone mode only (in no-auth
    mode a service's callers are trusted, and the gateway counts its own); None when off.

    Raises:
        ConfigurationError: as :func:`from_settings`.
    """
    if settings.auth_strategy != "keystone":
        return None
    return from_settings(settings, client_name=f"zaqar-{process}-rate")

