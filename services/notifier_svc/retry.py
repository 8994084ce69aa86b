"""Webhook retry policies (contract §5): the schedule is a pure function of the policy.

After a failed attempt (a transport error, a timeout, or a status outside 200-499), Zaqar's
webhook task retries in four phases:

1. ``retries_with_no_delay`` retries at once;
2. ``minimum_delay_retries`` retries, each after ``minimum_delay`` seconds;
3. the backoff phase: one retry after each delay of the ``retry_backoff_function`` from
   ``minimum_delay`` towards ``maximum_delay`` in steps of :data:`LINEAR_INTERVAL` (the four
   functions below reproduce Zaqar's formulas, integer seconds included);
4. ``maximum_delay_retries`` retries, each after ``maximum_delay`` seconds;

then it gives up. :func:`retry_delay` says how long to wait before the n-th retry without
building the whole list, so a large policy costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument

LINEAR_INTERVAL = 5
BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")
_COUNTS = (
    "retries_with_no_delay", "minimum_delay_retries", "minimum_delay", "maximum_delay",
    "maximum_delay_retries",
)
MIN_DELAY_SPREAD = 10


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A ``_retry_policy``; the defaults are Zaqar's."""

    retries_with_no_delay: int = 3
    minimum_delay_retries: int = 3
    minimum_delay: int = 5
    maximum_delay: int = 30
    maximum_delay_retries: int = 3
    retry_backoff_function: str = "linear"
    ignore_subscription_override: bool = False


DEFAULT = RetryPolicy()


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_policy(raw: Any) -> None:
    """Validate a ``_retry_policy`` given by a caller (subscription options).

    Raises:
        InvalidArgument: not an object; a count or delay that is not a non-negative integer;
            an unknown backoff function; ``maximum_delay`` less than ``minimum_delay`` + 10;
            ``minimum_delay`` 0 with the geometric or exponential function (they divide by it).
    """
    if not isinstance(raw, dict):
        raise InvalidArgument("_retry_policy must be a dict.")
    for key in _COUNTS:
        if key in raw and not _count(raw[key]):
            raise InvalidArgument(f"Retry policy: {key} must be a non-negative integer.")
    function = raw.get("retry_backoff_function", DEFAULT.retry_backoff_function)
    if function not in BACKOFF_FUNCTIONS:
        raise InvalidArgument(
            "retry_backoff_function must be one of: " + ", ".join(BACKOFF_FUNCTIONS) + "."
        )
    override = raw.get("ignore_subscription_override", False)
    if not isinstance(override, bool):
        raise InvalidArgument("ignore_subscription_override must be a boolean.")
    minimum = raw.get("minimum_delay", DEFAULT.minimum_delay)
    maximum = raw.get("maximum_delay", DEFAULT.maximum_delay)
    if maximum - minimum < MIN_DELAY_SPREAD:
        raise InvalidArgument(
            f"Retry policy: maximum_delay must be at least minimum_delay + {MIN_DELAY_SPREAD}."
        )
    if function in ("geometric", "exponential") and minimum < 1:
        raise InvalidArgument(
            f"Retry policy: minimum_delay must be at least 1 for the {function} function."
        )


def parse_policy(raw: Any) -> RetryPolicy | None:
    """A stored policy (subscription options or queue metadata), read leniently: a key that
    is missing or ill-typed keeps its default; not an object means no policy at all."""
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {k: raw[k] for k in _COUNTS if k in raw and _count(raw[k])}
    if raw.get("retry_backoff_function") in BACKOFF_FUNCTIONS:
        values["retry_backoff_function"] = raw["retry_backoff_function"]
    if isinstance(raw.get("ignore_subscription_override"), bool):
        values["ignore_subscription_override"] = raw["ignore_subscription_override"]
    return RetryPolicy(**values)


def effective_policy(subscription: Any, queue: Any) -> RetryPolicy:
    """The policy a delivery follows, as Zaqar chooses it: the queue's when either sets
    ``ignore_subscription_override``, else the subscription's, else the queue's, else the
    defaults. (Policies are taken whole, never merged key by key.)"""
    own, queue_policy = parse_policy(subscription), parse_policy(queue)
    if (own is not None and own.ignore_subscription_override) or (
        queue_policy is not None and queue_policy.ignore_subscription_override
    ):
        return queue_policy or DEFAULT
    return own or queue_policy or DEFAULT


# The backoff phase ---------------------------------------------------------------------------


def _steps(minimum: int, maximum: int) -> int:
    return int((maximum - minimum) / LINEAR_INTERVAL)


def backoff_length(function: str, minimum: int, maximum: int) -> int:
    """How many retries the backoff phase makes."""
    if function == "linear" or not _usable(function, minimum, maximum):
        return len(range(minimum, maximum, LINEAR_INTERVAL))
    return _steps(minimum, maximum)


def _usable(function: str, minimum: int, maximum: int) -> bool:
    """Whether Zaqar's formula for ``function`` is defined for these delays; when not (a
    policy that was never validated, e.g. queue metadata), the linear function is used."""
    steps = _steps(minimum, maximum)
    if function == "arithmetic":
        return steps >= 2
    return steps >= 2 and minimum >= 1 and maximum >= 1


def backoff_delay(function: str, minimum: int, maximum: int, index: int) -> int:
    """The delay before backoff retry ``index`` (0-based), by Zaqar's formula.

    * linear: ``minimum + 5 * i``, i.e. ``range(minimum, maximum, 5)``;
    * geometric: ``int(minimum * k ** i)`` with ``k = 10 ** (log10(maximum / minimum) /
      (n - 1))`` and ``n = int((maximum - minimum) / 5)``;
    * exponential: ``int(minimum / k * k ** (i + 1))`` with the same ``k``;
    * arithmetic: ``int(minimum + i * (i + 1) * d / 2)`` with
      ``d = 2 * (maximum - minimum) / (n * (n - 1))``.
    """
    if function == "linear" or not _usable(function, minimum, maximum):
        return minimum + LINEAR_INTERVAL * index
    steps = _steps(minimum, maximum)
    a = index + 1
    if function == "arithmetic":
        d = 2.0 * (maximum - minimum) / (steps * (steps - 1))
        return int(minimum + (a - 1) * a * d / 2)
    k = math.pow(10, math.log10(maximum / minimum) / (steps - 1))
    if function == "geometric":
        return int(minimum * math.pow(k, a - 1))
    return int(minimum / k * math.pow(k, a))


def retry_delay(policy: RetryPolicy, retry: int) -> float | None:
    """Seconds to wait before retry number ``retry`` (0 = the first retry, after the first
    attempt failed); ``None`` once the policy has no retries left (give up)."""
    if retry < 0:
        raise ValueError("retry numbers start at 0")
    phase = retry
    if phase < policy.retries_with_no_delay:
        return 0.0
    phase -= policy.retries_with_no_delay
    if phase < policy.minimum_delay_retries:
        return float(policy.minimum_delay)
    phase -= policy.minimum_delay_retries
    function, low, high = policy.retry_backoff_function, policy.minimum_delay, policy.maximum_delay
    length = backoff_length(function, low, high)
    if phase < length:
        return float(backoff_delay(function, low, high, phase))
    phase -= length
    if phase < policy.maximum_delay_retries:
        return float(policy.maximum_delay)
    return None


def schedule(policy: RetryPolicy) -> list[float]:
    """Every retry delay of the policy in order (for logs and tests; may be long)."""
    delays: list[float] = []
    while (delay := retry_delay(policy, len(delays))) is not None:
        delays.append(delay)
    return delays
