"""The Redis store edge: redis-py failing on a connection closed under it is a 503, an
AttributeError of our own code is not hidden."""

from __future__ import annotations

import os
from typing import Any

import pytest

from services.common.errors import Unavailable
from services.common.redis_store import redis_edge

# A function compiled as if it were part of redis-py: it fails as redis-py does when the
# stream of a connection closed by another task is gone.
_DRIVER: dict[str, Any] = {}
exec(compile(
    "def send(writer):\n    writer.writelines([b'PING'])\n",
    os.sep.join(["", "venv", "site-packages", "redis", "asyncio", "connection.py"]), "exec",
), _DRIVER)

edge = redis_edge("message store")


class Store:
    address = "127.0.0.1:1"

    @edge("claim messages")
    async def claim_on_closed_connection(self) -> None:
        _DRIVER["send"](None)

    @edge("claim messages")
    async def claim_with_a_bug_of_ours(self) -> None:
        writer: Any = None
        writer.writelines([b"PING"])


async def test_redis_py_failing_on_a_closed_connection_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="connection to Redis was lost"):
        await Store().claim_on_closed_connection()


async def test_an_attribute_error_of_our_own_code_is_not_translated() -> None:
    with pytest.raises(AttributeError):
        await Store().claim_with_a_bug_of_ours()
