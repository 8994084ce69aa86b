"""Odd values that fuzz cases put where valid ones were: texts, integers, JSON values and
changes to JSON documents. Every function draws from the ``random.Random`` it is given, so a
case is the same for the same seed."""

from __future__ import annotations

import random
from typing import Any

# Integers around the edges of the types stores and protobuf use, and past 64 bits.
INTS: tuple[int, ...] = (
    0, -1, 1, 59, 60, 61, 20, 21, 100, 900, 901, 43200, 43201, 1209600, 1209601,
    2**15, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1,
    2**64, 2**64 + 1, -(2**31), -(2**63), -(2**63) - 1, -(2**64), 10**30, -(10**30),
)
FLOATS: tuple[float, ...] = (0.5, -0.0, 1.5, 60.0, 1e20, 1e308, -1e308, 5e-324)

UNICODE: tuple[str, ...] = (
    "\u00e9", "e\u0301", "\u65e5\u672c", "\U0001f600", "\u202e", "\u200b", "\uff21", "\u00df",
    "\u0130", "\ufeff", "\U0010ffff",
    "\u0430", "\u03bf", "\u00a0", "\u2028", "\ufb01", "\u0000", "\x7f", "\x1b[31m",
    "\ud800", "\udfff",
)
CONTROL: tuple[str, ...] = ("\x00", "\x01", "\t", "\n", "\r", "\r\n", "\x0b", "\x7f", "\x85")
# Texts that mean something to a store or a parser somewhere.
SPECIAL: tuple[str, ...] = (
    "", " ", "*", "?", "%", "_", "[a-z]", ".*", "$where", "$gt", "a.b", "{}", "[]", "null",
    "' OR '1'='1", '"; DROP TABLE queues; --', "%s%n%x", "{0}", "../..", "/", "\\", "..",
    ".", "~", "-1", "1e309", "NaN", "true", "__proto__", "_id", "zq:", "\\u0000", "0x10",
)


def text(rng: random.Random, base: str = "") -> str:
    """An odd text, sometimes built on ``base``."""
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice("ab.-_Z9") * rng.choice((65, 256, 257, 1025, 4097, 70000))
    if kind == 1:
        return base + rng.choice(UNICODE)
    if kind == 2:
        return rng.choice(UNICODE) * rng.randint(1, 40)
    if kind == 3:
        at = rng.randint(0, len(base))
        return base[:at] + rng.choice(CONTROL) + base[at:]
    if kind == 4:
        return rng.choice(SPECIAL)
    if kind == 5:
        return base.upper() if base != base.upper() else base.lower() + "x"
    if kind == 6:
        return base[: rng.randint(0, max(0, len(base) - 1))]
    if kind == 7:
        return " " + base + " "
    return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 24)))


def integer(rng: random.Random) -> int:
    return rng.choice(INTS)


def number(rng: random.Random) -> int | float:
    return rng.choice(INTS) if rng.random() < 0.7 else rng.choice(FLOATS)


def scalar(rng: random.Random) -> Any:
    """A JSON value of any type, nested at most one level."""
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return integer(rng)
    if kind == 3:
        return rng.choice(FLOATS)
    if kind == 4:
        return text(rng, "fz")
    if kind == 5:
        return []
    if kind == 6:
        return {}
    return [text(rng), integer(rng)] if rng.random() < 0.5 else {text(rng): integer(rng)}


def nested(depth: int, leaf: Any = 1) -> Any:
    """A document nesting arrays and objects ``depth`` levels deep."""
    doc = leaf
    for level in range(depth):
        doc = [doc] if level % 2 else {"k": doc}
    return doc


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _nodes(value, (*path, i))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    copy = list(doc)
    copy[head] = _replace(copy[head], rest, value)
    return copy


def _remove(doc: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != path[0]}
        return [v for i, v in enumerate(doc) if i != path[0]]
    head = path[0]
    if isinstance(doc, dict):
        return {**doc, head: _remove(doc[head], path[1:])}
    copy = list(doc)
    copy[head] = _remove(copy[head], path[1:])
    return copy


def mutate_doc(doc: Any, rng: random.Random) -> tuple[Any, str]:
    """One change to a JSON document at a random node; the label says which."""
    paths = _nodes(doc)
    path = rng.choice(paths)
    where = "/".join(str(p) for p in path) or "<root>"
    kind = rng.randrange(7)
    if kind == 0:
        value = scalar(rng)
        return _replace(doc, path, value), f"type swap at {where}"
    if kind == 1:
        return _replace(doc, path, number(rng)), f"odd number at {where}"
    if kind == 2:
        return _replace(doc, path, nested(rng.choice((31, 32, 33, 200)))), f"deep at {where}"
    if kind == 3 and path:
        return _remove(doc, path), f"removed {where}"
    if kind == 4:
        node: Any = doc
        for p in path:
            node = node[p]
        if isinstance(node, dict):
            key = text(rng, "k")
            return _replace(doc, path, {**node, key: scalar(rng)}), f"extra key at {where}"
        if isinstance(node, list):
            return _replace(doc, path, node * rng.choice((2, 21, 300)) or [scalar(rng)]), (
                f"longer list at {where}"
            )
    if kind == 5:
        node = doc
        for p in path:
            node = node[p]
        base = node if isinstance(node, str) else "fz"
        return _replace(doc, path, text(rng, base)), f"odd text at {where}"
    return _replace(doc, path, scalar(rng)), f"odd value at {where}"
