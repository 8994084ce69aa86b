"""Subscription filter policies (``services/notifier_svc/filter_policy.py``): SNS's syntax
matched against message bodies, its limits, and the path each refusal names."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from services.common.errors import InvalidArgument
from services.notifier_svc import validation
from services.notifier_svc.filter_policy import MAX_BYTES, Policies, compile_policy

# (policy, body, matches)
MATCHING: list[tuple[dict[str, Any], Any, bool]] = [
    # exact strings: case-sensitive; a key's values are OR
    ({"sport": ["rugby", "tennis"]}, {"sport": "rugby"}, True),
    ({"sport": ["rugby", "tennis"]}, {"sport": "tennis"}, True),
    ({"sport": ["rugby", "tennis"]}, {"sport": "Rugby"}, False),
    ({"sport": ["rugby"]}, {"other": "rugby"}, False),
    # exact numbers: equal numbers, never strings; 5 decimal places
    ({"price": [301.5]}, {"price": 3.015e2}, True),
    ({"price": [100]}, {"price": 100.0}, True),
    ({"price": [100]}, {"price": "100"}, False),
    ({"price": ["100"]}, {"price": 100}, False),
    ({"price": [0.123456]}, {"price": 0.123459}, True),
    ({"price": [0.12345]}, {"price": 0.12346}, False),
    # true, false, null stay apart from 1, 0 and absence
    ({"flag": [True]}, {"flag": True}, True),
    ({"flag": [True]}, {"flag": 1}, False),
    ({"n": [1]}, {"n": True}, False),
    ({"flag": [False]}, {"flag": 0}, False),
    ({"v": [None]}, {"v": None}, True),
    ({"v": [None]}, {}, False),
    # a body array matches when any element does
    ({"sport": ["rugby"]}, {"sport": ["baseball", "rugby"]}, True),
    ({"sport": ["rugby"]}, {"sport": ["baseball"]}, False),
    ({"sport": ["rugby"]}, {"sport": [["rugby"]]}, True),
    # prefix, suffix, equals-ignore-case
    ({"code": [{"prefix": "eu-"}]}, {"code": "eu-west"}, True),
    ({"code": [{"prefix": "eu-"}]}, {"code": "us-east"}, False),
    ({"code": [{"prefix": "1"}]}, {"code": 12}, False),
    ({"file": [{"suffix": ".png"}]}, {"file": "a.png"}, True),
    ({"file": [{"suffix": ".png"}]}, {"file": "a.jpg"}, False),
    ({"name": [{"equals-ignore-case": "ReD"}]}, {"name": "red"}, True),
    ({"name": [{"equals-ignore-case": "red"}]}, {"name": "reds"}, False),
    ({"name": [{"equals-ignore-case": "1"}]}, {"name": 1}, False),
    # anything-but: a value, a list, a prefix, a suffix; the key must be there
    ({"sport": [{"anything-but": "rugby"}]}, {"sport": "tennis"}, True),
    ({"sport": [{"anything-but": "rugby"}]}, {"sport": "rugby"}, False),
    ({"sport": [{"anything-but": ["rugby", "tennis"]}]}, {"sport": "golf"}, True),
    ({"sport": [{"anything-but": ["rugby", "tennis"]}]}, {"sport": "tennis"}, False),
    ({"sport": [{"anything-but": ["rugby", "tennis"]}]}, {"sport": ["rugby", "golf"]}, True),
    ({"sport": [{"anything-but": ["rugby", "tennis"]}]}, {"sport": ["rugby", "tennis"]}, False),
    ({"sport": [{"anything-but": "rugby"}]}, {}, False),
    ({"sport": [{"anything-but": "rugby"}, {"exists": False}]}, {}, True),
    ({"price": [{"anything-but": [100, 500]}]}, {"price": 100.1}, True),
    ({"price": [{"anything-but": [100, 500]}]}, {"price": 1e2}, False),
    ({"price": [{"anything-but": [100]}]}, {"price": "100"}, True),
    ({"code": [{"anything-but": {"prefix": "eu-"}}]}, {"code": "us-east"}, True),
    ({"code": [{"anything-but": {"prefix": "eu-"}}]}, {"code": "eu-west"}, False),
    ({"file": [{"anything-but": {"suffix": ".tmp"}}]}, {"file": "a.txt"}, True),
    ({"file": [{"anything-but": {"suffix": ".tmp"}}]}, {"file": "a.tmp"}, False),
    # numeric: equality, one comparison, ranges; only numbers
    ({"price": [{"numeric": ["=", 301.5]}]}, {"price": 301.5}, True),
    ({"price": [{"numeric": ["=", 301.5]}]}, {"price": 301.6}, False),
    ({"price": [{"numeric": [">", 0, "<=", 150]}]}, {"price": 150}, True),
    ({"price": [{"numeric": [">", 0, "<=", 150]}]}, {"price": 0}, False),
    ({"price": [{"numeric": [">", 0, "<=", 150]}]}, {"price": 150.00001}, False),
    ({"price": [{"numeric": [">=", 0, "<", 150]}]}, {"price": 0}, True),
    ({"price": [{"numeric": [">=", 0, "<", 150]}]}, {"price": 150}, False),
    ({"price": [{"numeric": ["<", 0]}]}, {"price": -0.5}, True),
    ({"price": [{"numeric": [">", 10]}]}, {"price": "20"}, False),
    ({"price": [{"numeric": [">", 10]}]}, {"price": True}, False),
    ({"price": [{"numeric": [">", 10]}]}, {"price": [1, 20]}, True),
    ({"price": [{"numeric": [">", 10]}]}, {"price": 10**400}, False),
    # exists: a value is there (null too), or none is (absent, empty array, an object)
    ({"k": [{"exists": True}]}, {"k": "x"}, True),
    ({"k": [{"exists": True}]}, {"k": None}, True),
    ({"k": [{"exists": True}]}, {}, False),
    ({"k": [{"exists": True}]}, {"k": []}, False),
    ({"k": [{"exists": True}]}, {"k": {"a": 1}}, False),
    ({"k": [{"exists": False}]}, {}, True),
    ({"k": [{"exists": False}]}, {"k": 0}, False),
    ({"k": [{"exists": False}]}, {"k": []}, True),
    # keys are AND
    ({"a": ["x"], "b": [{"numeric": [">", 1]}]}, {"a": "x", "b": 2}, True),
    ({"a": ["x"], "b": [{"numeric": [">", 1]}]}, {"a": "x", "b": 1}, False),
    ({"a": ["x"], "b": [{"numeric": [">", 1]}]}, {"b": 2}, False),
    # nested keys match nested objects (any object of an array)
    ({"order": {"price": [{"numeric": [">", 10]}]}}, {"order": {"price": 11}}, True),
    ({"order": {"price": [{"numeric": [">", 10]}]}}, {"order": {"price": 9}}, False),
    ({"order": {"price": [{"numeric": [">", 10]}]}}, {"price": 11}, False),
    ({"order": {"price": [{"numeric": [">", 10]}]}}, {"order": 11}, False),
    ({"a": {"b": {"c": ["deep"]}}}, {"a": {"b": {"c": "deep"}}}, True),
    ({"a": {"b": {"c": ["deep"]}}}, {"a": {"b": {"c": "shallow"}}}, False),
    ({"items": {"sku": ["x"]}}, {"items": [{"sku": "y"}, {"sku": "x"}]}, True),
    ({"items": {"sku": ["x"], "n": [1]}}, {"items": [{"sku": "x"}, {"n": 1}]}, False),
    ({"a": {"b": [{"exists": False}]}}, {}, True),
    ({"a": {"b": [{"exists": False}]}}, {"a": {"b": 1}}, False),
    # $or: OR of its objects, at the top or nested, next to AND keys
    ({"source": ["cw"], "$or": [{"metric": ["cpu"]}, {"ns": ["ec2"]}]},
     {"source": "cw", "ns": "ec2"}, True),
    ({"source": ["cw"], "$or": [{"metric": ["cpu"]}, {"ns": ["ec2"]}]},
     {"source": "cw", "metric": "cpu"}, True),
    ({"source": ["cw"], "$or": [{"metric": ["cpu"]}, {"ns": ["ec2"]}]},
     {"source": "cw", "ns": "s3"}, False),
    ({"source": ["cw"], "$or": [{"metric": ["cpu"]}, {"ns": ["ec2"]}]},
     {"metric": "cpu"}, False),
    ({"o": {"$or": [{"a": [1]}, {"b": [2]}]}}, {"o": {"b": 2}}, True),
    ({"o": {"$or": [{"a": [1]}, {"b": [2]}]}}, {"o": {"b": 3}}, False),
    ({"$or": [{"a": [1]}, {"$or": [{"b": [2]}, {"c": [3]}]}]}, {"c": 3}, True),
    # "$or" that is not an OR is a key like any other
    ({"$or": ["x"]}, {"$or": "x"}, True),
    ({"$or": [{"prefix": "x"}]}, {"$or": "xy"}, True),
    # bodies that are not objects match no policy with keys
    ({"k": [{"exists": False}]}, "text", False),
    ({"k": [{"exists": False}]}, [{"k": 1}], False),
    ({"k": [{"exists": False}]}, None, False),
    ({"k": ["x"]}, 42, False),
    # keys with dots are keys, not paths
    ({"a.b": ["x"]}, {"a.b": "x"}, True),
    ({"a.b": ["x"]}, {"a": {"b": "x"}}, False),
]


@pytest.mark.parametrize(("policy", "body", "expected"), MATCHING)
def test_matching(policy: dict[str, Any], body: Any, expected: bool) -> None:
    compiled = compile_policy(policy)
    assert compiled is not None
    assert compiled.matches(body) is expected


def test_a_policy_given_as_a_json_string_is_the_same_policy() -> None:
    compiled = compile_policy('{"price": [{"numeric": [">", 10]}]}')
    assert compiled is not None
    assert compiled.matches({"price": 11}) and not compiled.matches({"price": 10})


@pytest.mark.parametrize("policy", [None, {}, "{}"])
def test_an_empty_policy_filters_nothing(policy: Any) -> None:
    assert compile_policy(policy) is None


def deep(levels: int) -> dict[str, Any]:
    policy: dict[str, Any] = {"leaf": ["x"]}
    for _ in range(levels - 1):
        policy = {"n": policy}
    return policy


# (policy, the message of the 400)
REFUSED: list[tuple[Any, str]] = [
    ([], "options.filter_policy: must be a JSON object."),
    ("nope", "options.filter_policy: a string policy must hold a JSON object."),
    ('["a"]', "options.filter_policy: must be a JSON object."),
    ({"a": "x"}, "options.filter_policy.a: must be an array of values or an object of keys."),
    ({"a": 1}, "options.filter_policy.a: must be an array of values or an object of keys."),
    ({"a": []}, "options.filter_policy.a: needs at least one value."),
    ({"a": {}}, "options.filter_policy.a: an object needs at least one key."),
    ({"a": [["x"]]}, "options.filter_policy.a[0]: a value is a string, a number, true, false, "
                     "null or an operator object, not an array."),
    ({"a": ["x", {"prefix": "a", "suffix": "b"}]},
     "options.filter_policy.a[1]: an operator object has exactly one key (prefix, suffix, "
     "equals-ignore-case, anything-but, numeric, exists), found 2."),
    ({"a": [{}]}, "options.filter_policy.a[0]: an operator object has exactly one key (prefix, "
                  "suffix, equals-ignore-case, anything-but, numeric, exists), found 0."),
    ({"a": [{"wildcard": "x*"}]},
     "options.filter_policy.a[0]: unknown operator 'wildcard', expected one of prefix, suffix, "
     "equals-ignore-case, anything-but, numeric, exists."),
    ({"a": [{"prefix": 1}]}, "options.filter_policy.a[0]: prefix needs a string."),
    ({"a": [{"suffix": None}]}, "options.filter_policy.a[0]: suffix needs a string."),
    ({"a": [{"equals-ignore-case": ["x"]}]},
     "options.filter_policy.a[0]: equals-ignore-case needs a string."),
    ({"a": [{"exists": "yes"}]}, "options.filter_policy.a[0]: exists needs true or false."),
    ({"a": [{"anything-but": []}]},
     "options.filter_policy.a[0]: anything-but needs at least one value."),
    ({"a": [{"anything-but": ["x", 1]}]},
     "options.filter_policy.a[0]: anything-but needs a string, a number, an array of strings "
     'or an array of numbers, or {"prefix": …} or {"suffix": …}.'),
    ({"a": [{"anything-but": {"numeric": [">", 1]}}]},
     'options.filter_policy.a[0]: anything-but takes an object only as {"prefix": …} or '
     '{"suffix": …}.'),
    ({"a": [{"anything-but": {"prefix": 1}}]},
     "options.filter_policy.a[0]: anything-but prefix needs a string."),
    ({"a": [{"anything-but": [1, 2e9]}]},
     "options.filter_policy.a[0]: numbers must be between -1000000000 and 1000000000."),
    ({"price": [{"numeric": [">", 0, "<=", 150]}, {"numeric": [">", 5, ">", 10]}]},
     'options.filter_policy.price[1]: numeric needs ["=", n], one comparison such as [">", n], '
     'or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    ({"price": [{"numeric": ["<", 5, ">", 1]}]},
     'options.filter_policy.price[0]: numeric needs ["=", n], one comparison such as [">", n], '
     'or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    ({"price": [{"numeric": ["!=", 5]}]},
     'options.filter_policy.price[0]: numeric needs ["=", n], one comparison such as [">", n], '
     'or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    ({"price": [{"numeric": 5}]},
     'options.filter_policy.price[0]: numeric needs ["=", n], one comparison such as [">", n], '
     'or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    ({"price": [{"numeric": [">", "5"]}]}, "options.filter_policy.price[0]: '5' is not a number."),
    ({"price": [{"numeric": [">", 10, "<", 10]}]},
     "options.filter_policy.price[0]: numeric range needs its lower bound (10) below its upper "
     "bound (10)."),
    ({"price": [{"numeric": [">", -1e10]}]},
     "options.filter_policy.price[0]: numbers must be between -1000000000 and 1000000000."),
    ({"price": [1000000001]},
     "options.filter_policy.price[0]: numbers must be between -1000000000 and 1000000000."),
    ({"order": {"lines": {"price": [{"numeric": [">"]}]}}},
     'options.filter_policy.order.lines.price[0]: numeric needs ["=", n], one comparison such '
     'as [">", n], or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    ({"a b": [{"prefix": 1}]}, 'options.filter_policy["a b"][0]: prefix needs a string.'),
    ({"$or": [{"a": ["x"]}, {"b": [{"exists": 1}]}]},
     "options.filter_policy.$or[1].b[0]: exists needs true or false."),
    ({"price": {"numeric": [">", 1]}},
     'options.filter_policy.price.numeric: numeric is an operator: write it inside the key\'s '
     'array, as "key": [{"numeric": …}].'),
    # not an OR ("numeric" and "prefix" are operators): a key whose values are operators
    ({"$or": [{"numeric": 123}, {"prefix": "abc"}]},
     'options.filter_policy.$or[0]: numeric needs ["=", n], one comparison such as [">", n], '
     'or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'),
    # limits
    ({k: ["x"] for k in "abcdef"},
     "options.filter_policy: at most 5 top-level keys, found 6: a, b, c, d, e, f."),
    ({"a": ["x"], "b": ["x"], "$or": [{"c": ["x"], "d": ["x"]}, {"e": ["x"], "f": ["x"]}]},
     "options.filter_policy: at most 5 top-level keys, found 6: a, b, c, d, e, f."),
    ({"a": [str(i) for i in range(10)], "b": [str(i) for i in range(16)]},
     "options.filter_policy: 160 combinations of values, at most 150 (the product of the "
     "number of values of each key, summed over the branches of $or)."),
    ({"a": ["1", "2"], "$or": [{"b": [str(i) for i in range(40)]}, {"c": ["x"] * 36}]},
     "options.filter_policy: 152 combinations of values, at most 150 (the product of the "
     "number of values of each key, summed over the branches of $or)."),
    (deep(17), "options.filter_policy" + ".n" * 16 + ": policies nest at most 16 objects deep."),
    ({"a": ["x" * (MAX_BYTES - 9)]},
     f"options.filter_policy: the policy is {MAX_BYTES + 1} bytes of JSON, at most {MAX_BYTES}."),
]


@pytest.mark.parametrize(("policy", "message"), REFUSED)
def test_refusals_name_the_offending_part(policy: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        compile_policy(policy)
    assert raised.value.description == message


ACCEPTED: list[dict[str, Any]] = [
    {k: ["x"] for k in "abcde"},
    # nested keys do not count as top-level keys
    {"a": {"b": ["x"], "c": ["x"], "d": ["x"], "e": ["x"], "f": ["x"], "g": ["x"]}},
    {"a": [str(i) for i in range(10)], "b": [str(i) for i in range(15)]},
    {"a": ["1", "2"], "$or": [{"b": [str(i) for i in range(40)]}, {"c": ["x"] * 35}]},
    deep(16),
    {"a": ["x" * (MAX_BYTES - 10)]},
    {"price": [{"numeric": [">=", -1e9, "<=", 1e9]}]},
]


@pytest.mark.parametrize("policy", ACCEPTED)
def test_policies_at_the_limits_are_accepted(policy: dict[str, Any]) -> None:
    assert compile_policy(policy) is not None


def test_subscription_options_check_the_filter_policy() -> None:
    with pytest.raises(InvalidArgument, match=r"^options\.filter_policy\.a: needs at least"):
        validation.options(orjson.dumps({"filter_policy": {"a": []}}))
    assert validation.options(orjson.dumps({"filter_policy": {"a": ["x"]}})) == {
        "filter_policy": {"a": ["x"]}
    }


def test_policies_are_compiled_once_per_policy(caplog: pytest.LogCaptureFixture) -> None:
    policies = Policies()
    first = policies.of({"filter_policy": {"a": ["x"]}})
    assert first is not None
    assert policies.of({"filter_policy": {"a": ["x"]}, "other": 1}) is first
    assert policies.of({}) is None
    with caplog.at_level(logging.WARNING):
        # a stored policy that does not compile filters nothing, logged once
        assert policies.of({"filter_policy": {"a": []}}) is None
        assert policies.of({"filter_policy": {"a": []}}) is None
    assert [r.getMessage() for r in caplog.records] == [
        "a stored filter policy is not valid, it filters nothing: "
        "options.filter_policy.a: needs at least one value."
    ]
