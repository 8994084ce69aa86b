"""The fair-queue settings (fair_share_percent, fair_min_in_flight, fair_lookahead): a value
out of its range is refused when message_svc starts, with a line that names the setting and
the value, whether fairness is on or off, and before the store is opened."""

from __future__ import annotations

import pytest

from services.common.config import ConfigurationError, Settings
from services.common.startup import failure
from services.message_svc import server as message_server
from services.message_svc.server import fair_policy
from services.message_svc.storage.base import FairPolicy


def test_the_defaults_are_the_policy_defaults() -> None:
    assert fair_policy(Settings.load(environ={})) == FairPolicy(
        share_percent=25, min_in_flight=8, lookahead=100, backoff=0.0
    )


def test_values_from_the_environment_make_the_policy() -> None:
    settings = Settings.load(environ={
        "ZAQAR_FAIR_SHARE_PERCENT": "50", "ZAQAR_FAIR_MIN_IN_FLIGHT": "3",
        "ZAQAR_FAIR_LOOKAHEAD": "20",
    })
    assert fair_policy(settings) == FairPolicy(share_percent=50, min_in_flight=3, lookahead=20)


@pytest.mark.parametrize("name, value", [
    ("fair_share_percent", 1), ("fair_share_percent", 100), ("fair_min_in_flight", 1),
    ("fair_min_in_flight", 10_000), ("fair_lookahead", 0), ("fair_lookahead", 100_000),
])
def test_the_bounds_are_accepted(name: str, value: int) -> None:
    assert fair_policy(Settings.load(environ={}, overrides={name: value})) is not None


BAD = [
    ("fair_share_percent", 0, "fair_share_percent must be 1 to 100, not 0."),
    ("fair_share_percent", 101, "fair_share_percent must be 1 to 100, not 101."),
    ("fair_share_percent", -25, "fair_share_percent must be 1 to 100, not -25."),
    ("fair_min_in_flight", 0, "fair_min_in_flight must be at least 1, not 0."),
    ("fair_min_in_flight", -1, "fair_min_in_flight must be at least 1, not -1."),
    ("fair_lookahead", -1, "fair_lookahead must be 0 to 100000, not -1."),
    ("fair_lookahead", 100_001, "fair_lookahead must be 0 to 100000, not 100001."),
]


@pytest.mark.parametrize("name, value, message", BAD)
@pytest.mark.parametrize("on", [True, False])
def test_a_value_out_of_range_is_refused(name: str, value: int, message: str, on: bool) -> None:
    # Given from the environment, as a deployment sets it (fairness on or off)
    settings = Settings.load(environ={
        f"ZAQAR_{name.upper()}": str(value), "ZAQAR_FAIR_QUEUES": "true" if on else "false",
    })
    with pytest.raises(ConfigurationError) as refused:
        fair_policy(settings)
    assert str(refused.value) == message


def test_fairness_off_is_no_policy() -> None:
    assert fair_policy(Settings.load(environ={"ZAQAR_FAIR_QUEUES": "false"})) is None


@pytest.mark.parametrize("name, value, message", BAD[::3])
async def test_message_svc_refuses_to_start_before_opening_its_store(
    name: str, value: int, message: str
) -> None:
    # Given a message store nobody listens on: a start that reached it would fail otherwise
    settings = Settings.load(environ={}, overrides={
        name: value, "message_store": "redis://127.0.0.1:1/0", "message_port": 0,
        "metrics": False,
    })
    with pytest.raises(ConfigurationError) as refused:
        await message_server.start(settings)
    # Then the process's one line on stderr, and exit status 2
    assert failure(refused.value, "message_svc") == (2, f"configuration error: {message}")


@pytest.mark.parametrize("value", [0.0, 0.25, 60.0])
def test_the_back_off_bounds_are_accepted(value: float) -> None:
    policy = fair_policy(Settings.load(environ={"ZAQAR_FAIR_BACKOFF": str(value)}))
    assert policy is not None and policy.backoff == value


def test_the_default_back_off_is_none() -> None:
    # With the group index a fair claim is futile only when no quiet group has a claimable
    # message; a back-off after it would delay the next quiet message (docs/benchmarks.md)
    policy = fair_policy(Settings.load(environ={}))
    assert policy is not None and policy.backoff == 0.0


@pytest.mark.parametrize("value, message", [
    ("-1", "fair_backoff must be 0 to 60, not -1."),
    ("60.5", "fair_backoff must be 0 to 60, not 60.5."),
    ("nan", "fair_backoff must be 0 to 60, not nan."),
])
@pytest.mark.parametrize("on", [True, False])
def test_a_back_off_out_of_range_is_refused(value: str, message: str, on: bool) -> None:
    settings = Settings.load(environ={
        "ZAQAR_FAIR_BACKOFF": value, "ZAQAR_FAIR_QUEUES": "true" if on else "false",
    })
    with pytest.raises(ConfigurationError) as refused:
        fair_policy(settings)
    assert str(refused.value) == message
