"""No coroutine of the suite asks the test Keystone for a token synchronously.

A synchronous request from a coroutine blocks the event loop it runs on. When a service the
test runs on that loop has connected to the same Keystone to check a token but not written its
request yet, Keystone's worker waits on that connection while the loop, blocked, cannot write
it: the test waits out a timeout (a deadlock with a one-worker Keystone, docs/benchmarks.md,
"The suite's time at the trees of 2026-12-07, morning"). Coroutines use the ``a``-prefixed
methods of :class:`tests.keystone.Keystone`, which run the request in a thread.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.keystone import Keystone

TESTS = Path(__file__).resolve().parents[1]
BLOCKING = {"token", "short_token", "short_token_until", "revoke"}


def blocking_calls(source: str) -> list[tuple[int, str]]:
    """(line, method) of each call ``<x>.token(...)`` (or another of ``BLOCKING``) made
    directly in the body of an ``async def`` of ``source``."""
    found: list[tuple[int, str]] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.in_coroutine = [False]

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            self._inside(node, False)

        def visit_Lambda(self, node: ast.Lambda) -> None:
            self._inside(node, False)

        def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
            self._inside(node, True)

        def _inside(self, node: ast.AST, coroutine: bool) -> None:
            self.in_coroutine.append(coroutine)
            self.generic_visit(node)
            self.in_coroutine.pop()

        def visit_Call(self, node: ast.Call) -> None:
            called = node.func
            if (self.in_coroutine[-1] and isinstance(called, ast.Attribute)
                    and called.attr in BLOCKING and isinstance(called.value, ast.Name)
                    and called.value.id == "keystone"):
                found.append((node.lineno, called.attr))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def test_the_check_finds_a_blocking_call_in_a_coroutine_and_not_elsewhere() -> None:
    source = (
        "async def test_a(keystone):\n"
        "    first = keystone.token('user-a')\n"
        "    second = await keystone.atoken('user-a')\n"
        "    def later():\n"
        "        return keystone.revoke(first)\n"
        "def test_b(keystone):\n"
        "    keystone.short_token('user-b')\n"
    )
    assert blocking_calls(source) == [(2, "token")]


def test_every_blocking_method_has_a_coroutine_twin() -> None:
    for name in BLOCKING:
        assert callable(getattr(Keystone, "a" + name)), name


def test_no_coroutine_of_the_suite_asks_keystone_synchronously() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}: keystone.{name}(…) in a coroutine; "
        f"use await keystone.a{name}(…)"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in blocking_calls(path.read_text())
    ]
    assert not found, "\n".join(found)
