"""Requests per project: the token buckets and their settings, on an injected clock."""

from __future__ import annotations

import pytest

from services.api_gateway.rate_limit import ProjectRateLimit, TooManyRequests, from_settings
from services.common.config import ConfigurationError, Settings
from services.testing.fixtures import Clock


async def refused(limit: ProjectRateLimit, project: str) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as raised:
        await limit.take(project)
    return raised.value


async def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limit = ProjectRateLimit(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        await limit.take("a")
    too_many = await refused(limit, "a")
    assert too_many.status == 429
    assert too_many.title == "Too Many Requests"
    assert too_many.retry_after == 1  # half a second to the next token, in whole seconds
    assert dict(too_many.headers or {}) == {"Retry-After": "1"}
    assert too_many.description == (
        "This project makes requests faster than the 2 per second allowed. Please retry in 1 s."
    )
    # A refusal takes nothing: half a second later one request goes, then none.
    clock.now += 0.5
    await limit.take("a")
    await refused(limit, "a")
    # Idle for long, the bucket holds the burst again, never more.
    clock.now += 3600
    for _ in range(3):
        await limit.take("a")
    await refused(limit, "a")


async def test_projects_are_apart() -> None:
    limit = ProjectRateLimit(rate=1.0, burst=1, clock=Clock())
    await limit.take("a")
    await refused(limit, "a")
    await limit.take("b")
    await refused(limit, "b")


async def test_retry_after_counts_whole_seconds() -> None:
    clock = Clock()
    limit = ProjectRateLimit(rate=0.1, burst=1, clock=clock)
    await limit.take("a")
    assert (await refused(limit, "a")).retry_after == 10
    clock.now += 7.5
    assert (await refused(limit, "a")).retry_after == 3


async def test_the_map_of_buckets_stays_bounded() -> None:
    clock = Clock()
    limit = ProjectRateLimit(rate=1.0, burst=5, clock=clock, max_projects=64)
    # Many projects at once: never more buckets than the bound.
    for i in range(1000):
        await limit.take(f"p{i}")
        assert len(limit) <= 64
    # A project dropped as the least recently used gets its burst back, nothing more.
    await limit.take("busy")
    for i in range(1000, 1100):
        await limit.take(f"p{i}")
    for _ in range(5):
        await limit.take("busy")
    await refused(limit, "busy")


async def test_idle_buckets_are_swept() -> None:
    clock = Clock()
    limit = ProjectRateLimit(rate=10.0, burst=10, clock=clock)
    for i in range(1000):
        await limit.take(f"p{i}")
    assert len(limit) == 1000
    # A second later those are full again: the sweep at the 1024th new project drops them,
    # not the 24 just used.
    clock.now += 1.0
    for i in range(1000, 1024):
        await limit.take(f"p{i}")
    assert len(limit) == 24


def test_settings() -> None:
    assert from_settings(Settings()) is None
    limit = from_settings(Settings(project_rate_limit=2.5))
    assert limit is not None and (limit.rate, limit.burst) == (2.5, 3.0)
    limit = from_settings(Settings(project_rate_limit=0.2))
    assert limit is not None and limit.burst == 1.0
    limit = from_settings(Settings(project_rate_limit=100, project_rate_burst=500))
    assert limit is not None and limit.burst == 500.0
    loaded = Settings.load(environ={"ZAQAR_PROJECT_RATE_LIMIT": "50",
                                    "ZAQAR_PROJECT_RATE_BURST": "80"})
    assert (loaded.project_rate_limit, loaded.project_rate_burst) == (50.0, 80)


@pytest.mark.parametrize(("changes", "message"), [
    ({"project_rate_limit": -1.0}, "project_rate_limit (ZAQAR_PROJECT_RATE_LIMIT) must be 0"),
    ({"project_rate_limit": float("nan")}, "not nan"),
    ({"project_rate_limit": float("inf")}, "not inf"),
    ({"project_rate_limit": 5.0, "project_rate_burst": -1},
     "project_rate_burst (ZAQAR_PROJECT_RATE_BURST) must be 0"),
    ({"project_rate_burst": 10}, "is set without project_rate_limit"),
])
def test_bad_settings_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_settings(Settings(**changes))  # type: ignore[arg-type]
