"""Subscription filter policies: ``options.filter_policy`` in Amazon SNS's filter policy syntax,
matched against the message body (SNS's ``FilterPolicyScope: MessageBody``).

:func:`compile_policy` checks a policy once (raising :class:`InvalidArgument` with the path of
the offending part, e.g. ``options.filter_policy.price[0]: …``) and turns it into a
:class:`Policy` whose :meth:`Policy.matches` takes a decoded message body. The matcher knows
nothing of queues: a subscription of any kind of source can hold one.

Semantics (docs/api.md, "Filter policies"):

* keys are AND; the values in a key's array are OR; a key whose value is an object matches
  the body's object at that key (nested keys); ``$or`` (an array of at least two objects, none
  with an operator keyword as key) is OR of its objects, anywhere a key may be;
* a body value that is an array matches when any of its elements does;
* values: strings and ``true``/``false``/``null`` match equal values, numbers match equal
  numbers (``100`` matches ``1e2``, never ``"100"``); operators ``prefix``, ``suffix``,
  ``equals-ignore-case``, ``anything-but`` (a value, an array of strings or of numbers, or
  ``{"prefix": …}`` / ``{"suffix": …}``), ``numeric`` (``["=", 5]``, ``[">", 0, "<=", 150]``),
  ``exists`` (``false`` matches a key with no value: absent, an empty array or an object);
* a body that is not a JSON object matches no policy with keys; ``{}`` is no filter at all.

Limits are SNS's: 256 KiB of JSON, 5 top-level keys, 150 combinations (the product of the
number of values of each key, summed over the branches of an ``$or``), numbers within ±10⁹
compared to 5 decimal places. Nesting is limited to 16 levels (SNS states none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)

OPTION: Final = "filter_policy"
MAX_BYTES: Final = 256 * 1024
MAX_TOP_LEVEL_KEYS: Final = 5
MAX_COMBINATIONS: Final = 150
MAX_DEPTH: Final = 16
NUMBER_LIMIT: Final = 1_000_000_000
DECIMALS: Final = 5
OPERATORS: Final = (
    "prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists",
)
_ROOT = f"options.{OPTION}"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")
_LOWER = (">", ">=")
_UPPER = ("<", "<=")
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_NUMERIC_USAGE = (
    'numeric needs ["=", n], one comparison such as [">", n], or a range such as '
    '[">", 0, "<=", 150] (lower bound first, then upper)'
)

Test = Callable[[Any], bool]
"""A test of one leaf value of the body."""


# matching -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A key with an array of values: any value matches any of the key's leaf values."""

    key: str
    exact: frozenset[tuple[str, Any]]
    tests: tuple[Test, ...]
    if_absent: bool
    if_present: bool

    def matches(self, body: dict[str, Any]) -> bool:
        values = _leaf_values(body, self.key)
        if not values:
            return self.if_absent
        if self.if_present:
            return True
        for value in values:
            if self.exact and _tag(value) in self.exact:
                return True
            for test in self.tests:
                if test(value):
                    return True
        return False


@dataclass(frozen=True, slots=True)
class _Nested:
    """A key whose policy is an object: it matches the body's object at that key (any one of
    them when the body has an array of objects there)."""

    key: str
    policy: Policy

    def matches(self, body: dict[str, Any]) -> bool:
        value = body.get(self.key)
        if isinstance(value, dict):
            return self.policy.matches_object(value)
        if isinstance(value, list):
            objects = [item for item in _flatten(value) if isinstance(item, dict)]
            if objects:
                return any(self.policy.matches_object(item) for item in objects)
        # Nothing to descend into: only keys that may be absent can match.
        return self.policy.matches_object({})


@dataclass(frozen=True, slots=True)
class _Or:
    branches: tuple[Policy, ...]

    def matches(self, body: dict[str, Any]) -> bool:
        return any(branch.matches_object(body) for branch in self.branches)


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled filter policy: conditions that must all hold."""

    conditions: tuple[_Leaf | _Nested | _Or, ...]

    def matches(self, body: Any) -> bool:
        """Whether a message with this decoded JSON ``body`` passes."""
        if not self.conditions:
            return True
        return isinstance(body, dict) and self.matches_object(body)

    def matches_object(self, body: dict[str, Any]) -> bool:
        return all(condition.matches(body) for condition in self.conditions)


def _flatten(values: list[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def _leaf_values(body: dict[str, Any], key: str) -> list[Any]:
    if key not in body:
        return []
    value = body[key]
    if isinstance(value, list):
        return [item for item in _flatten(value) if not isinstance(item, dict)]
    if isinstance(value, dict):
        return []
    return [value]


def _number(value: Any) -> float | None:
    """A body value as SNS compares numbers (5 decimal places), or None if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return round(float(value), DECIMALS)
    except OverflowError:
        return None


def _tag(value: Any) -> tuple[str, Any]:
    """A value's identity for exact matching: ``True``, ``1`` and ``"1"`` stay apart."""
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, bool) or value is None:
        return ("c", value)
    number = _number(value)
    return ("n", number) if number is not None else ("?", None)


# compiling ------------------------------------------------------------------------------------


def compile_policy(raw: Any) -> Policy | None:
    """Check ``options.filter_policy`` (a JSON object, or a string holding one, as SNS takes
    it) and compile it; None when it asks for nothing (``null`` or ``{}``).

    Raises:
        InvalidArgument: the policy breaks a rule; the message starts with the path of the
            offending part, e.g. ``options.filter_policy.price[0]: …``.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        size = len(raw.encode())
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _error(_ROOT, "a string policy must hold a JSON object") from None
    else:
        size = len(orjson.dumps(raw))
    if size > MAX_BYTES:
        raise _error(_ROOT, f"the policy is {size} bytes of JSON, at most {MAX_BYTES}")
    if not isinstance(raw, dict):
        raise _error(_ROOT, "must be a JSON object")
    if not raw:
        return None
    policy, combinations = _object(raw, _ROOT, 1)
    keys = sorted(_top_level_keys(raw))
    if len(keys) > MAX_TOP_LEVEL_KEYS:
        raise _error(_ROOT, (
            f"at most {MAX_TOP_LEVEL_KEYS} top-level keys, found {len(keys)}: "
            + ", ".join(keys)
        ))
    if combinations > MAX_COMBINATIONS:
        raise _error(_ROOT, (
            f"{combinations} combinations of values, at most {MAX_COMBINATIONS} (the product "
            "of the number of values of each key, summed over the branches of $or)"
        ))
    return policy


def _error(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {reason}.")


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{orjson.dumps(key).decode()}]"


def _is_or(value: Any) -> bool:
    """SNS reads ``$or`` as OR only for an array of at least two objects none of which has an
    operator keyword as key; otherwise it is a key like any other."""
    return (
        isinstance(value, list) and len(value) >= 2
        and all(isinstance(item, dict) for item in value)
        and not any(key in OPERATORS for item in value for key in item)
    )


def _top_level_keys(policy: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for key, value in policy.items():
        if key == "$or" and _is_or(value):
            for branch in value:
                keys |= _top_level_keys(branch)
        else:
            keys.add(key)
    return keys


def _object(policy: dict[str, Any], path: str, depth: int) -> tuple[Policy, int]:
    """A policy object and its number of combinations."""
    if depth > MAX_DEPTH:
        raise _error(path, f"policies nest at most {MAX_DEPTH} objects deep")
    if not policy:
        raise _error(path, "an object needs at least one key")
    conditions: list[_Leaf | _Nested | _Or] = []
    combinations = 1
    for key, value in policy.items():
        if key == "$or" and _is_or(value):
            branches = [
                _object(branch, f"{path}.$or[{i}]", depth) for i, branch in enumerate(value)
            ]
            conditions.append(_Or(tuple(branch for branch, _ in branches)))
            combinations *= sum(count for _, count in branches)
            continue
        at = _key_path(path, key)
        if isinstance(value, dict):
            nested, count = _object(value, at, depth + 1)
            conditions.append(_Nested(key, nested))
            combinations *= count
        elif isinstance(value, list):
            if key in OPERATORS:
                raise _error(at, (
                    f"{key} is an operator: write it inside the key's array, "
                    f'as "key": [{{"{key}": …}}]'
                ))
            conditions.append(_leaf(key, value, at))
            combinations *= len(value)
        else:
            raise _error(at, "must be an array of values or an object of keys")
    return Policy(tuple(conditions)), combinations


def _leaf(key: str, values: list[Any], path: str) -> _Leaf:
    if not values:
        raise _error(path, "needs at least one value")
    exact: set[tuple[str, Any]] = set()
    tests: list[Test] = []
    exists: set[bool] = set()
    for i, value in enumerate(values):
        at = f"{path}[{i}]"
        if isinstance(value, dict):
            if len(value) != 1:
                raise _error(at, (
                    f"an operator object has exactly one key ({', '.join(OPERATORS)}), "
                    f"found {len(value)}"
                ))
            [(operator, operand)] = value.items()
            if operator == "exists":
                if not isinstance(operand, bool):
                    raise _error(at, "exists needs true or false")
                exists.add(operand)
            else:
                tests.append(_operator(operator, operand, at))
        elif isinstance(value, list):
            raise _error(at, (
                "a value is a string, a number, true, false, null or an operator object, "
                "not an array"
            ))
        else:
            exact.add(_tag(_checked_scalar(value, at)))
    return _Leaf(key, frozenset(exact), tuple(tests), False in exists, True in exists)


def _checked_scalar(value: Any, path: str) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        _checked_number(value, path)
    return value


def _checked_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(path, f"{value!r} is not a number")
    if not -NUMBER_LIMIT <= value <= NUMBER_LIMIT:
        raise _error(path, f"numbers must be between -{NUMBER_LIMIT} and {NUMBER_LIMIT}")
    return round(float(value), DECIMALS)


def _string(operator: str, operand: Any, path: str) -> str:
    if not isinstance(operand, str):
        raise _error(path, f"{operator} needs a string")
    return operand


def _operator(operator: str, operand: Any, path: str) -> Test:
    if operator == "prefix":
        prefix = _string(operator, operand, path)
        return lambda v: isinstance(v, str) and v.startswith(prefix)
    if operator == "suffix":
        suffix = _string(operator, operand, path)
        return lambda v: isinstance(v, str) and v.endswith(suffix)
    if operator == "equals-ignore-case":
        folded = _string(operator, operand, path).casefold()
        return lambda v: isinstance(v, str) and v.casefold() == folded
    if operator == "anything-but":
        return _anything_but(operand, path)
    if operator == "numeric":
        return _numeric(operand, path)
    raise _error(path, f"unknown operator {operator!r}, expected one of {', '.join(OPERATORS)}")


def _anything_but(operand: Any, path: str) -> Test:
    if isinstance(operand, dict):
        if len(operand) != 1 or next(iter(operand)) not in ("prefix", "suffix"):
            raise _error(path, 'anything-but takes an object only as {"prefix": …} or '
                               '{"suffix": …}')
        [(operator, text)] = operand.items()
        affix = _string(f"anything-but {operator}", text, path)
        if operator == "prefix":
            return lambda v: isinstance(v, str) and not v.startswith(affix)
        return lambda v: isinstance(v, str) and not v.endswith(affix)
    listed = operand if isinstance(operand, list) else [operand]
    if not listed:
        raise _error(path, "anything-but needs at least one value")
    if all(isinstance(v, str) for v in listed):
        excluded = frozenset(("s", v) for v in listed)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in listed):
        excluded = frozenset(("n", _checked_number(v, path)) for v in listed)
    else:
        raise _error(path, "anything-but needs a string, a number, an array of strings or an "
                           'array of numbers, or {"prefix": …} or {"suffix": …}')
    return lambda v: _tag(v) not in excluded


def _numeric(operand: Any, path: str) -> Test:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise _error(path, _NUMERIC_USAGE)
    first, bound = operand[0], operand[1]
    if first not in _COMPARE or (len(operand) == 4 and first not in _LOWER):
        raise _error(path, _NUMERIC_USAGE)
    low = _checked_number(bound, path)
    compare_low = _COMPARE[first]
    if len(operand) == 2:
        return lambda v: (n := _number(v)) is not None and compare_low(n, low)
    second = operand[2]
    if second not in _UPPER:
        raise _error(path, _NUMERIC_USAGE)
    high = _checked_number(operand[3], path)
    if not low < high:
        raise _error(path, f"numeric range needs its lower bound ({low:g}) below its upper "
                           f"bound ({high:g})")
    compare_high = _COMPARE[second]
    return lambda v: (
        (n := _number(v)) is not None and compare_low(n, low) and compare_high(n, high)
    )


# compiled once --------------------------------------------------------------------------------


class Policies:
    """Compiled policies by their JSON text: the fan-out of a post compiles each distinct
    policy once per process, whatever the number of subscriptions or posts holding it.

    A stored policy that no longer compiles (stored before these rules, or by another version)
    filters nothing, as it did when it was accepted, and is logged once.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._compiled: dict[str | bytes, Policy | None] = {}

    def of(self, options: Mapping[str, Any]) -> Policy | None:
        """The policy of a subscription's ``options``; None when it filters nothing."""
        raw = options.get(OPTION)
        if raw is None:
            return None
        key = raw if isinstance(raw, str) else orjson.dumps(raw)
        try:
            return self._compiled[key]
        except KeyError:
            pass
        try:
            policy = compile_policy(raw)
        except InvalidArgument as error:
            log.warning(
                "a stored filter policy is not valid, it filters nothing: %s", error.description
            )
            policy = None
        if len(self._compiled) >= self._limit:
            self._compiled.clear()
        self._compiled[key] = policy
        return policy
