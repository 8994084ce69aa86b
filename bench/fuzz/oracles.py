"""The oracles every case is judged by, and the canary a run ends with."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from bench.fuzz.wire import Connection, call

if TYPE_CHECKING:
    from bench.fuzz.engine import Target


def judge(status: int | None, error: str | None, allowed: frozenset[int] = frozenset()) -> (
        str | None):
    """The failure kind of one answer, or None."""
    if status is None:
        return "hang" if error == "timeout" else "dropped"
    if status >= 500 and status not in allowed:
        return "503" if status == 503 else "5xx"
    return None


def show(data: bytes, limit: int = 3000) -> str:
    text = repr(data[:limit])
    return text + (f" ... ({len(data)} bytes in all)" if len(data) > limit else "")


async def canary(target: Target, bound: float) -> str:
    conn = Connection(target.host, target.http_port, bound)
    h = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "fz-canary"}
    try:
        ping = await call(conn, "GET", "/v2/ping", h)
        if ping.status != 204:
            return f"GET /v2/ping -> {ping.describe()}"
        queue = f"/v2/queues/canary-{uuid.uuid4().hex[:8]}"
        put = await call(conn, "PUT", queue, h, {"fz": 1})
        post = await call(conn, "POST", queue + "/messages", h,
                          {"messages": [{"body": "canary", "ttl": 60}]})
        listed = await call(conn, "GET", queue + "/messages?echo=true", h)
        if (put.status, post.status, listed.status) != (201, 201, 200) or (
                b"canary" not in listed.body):
            return f"canary round trip: {put.status} {post.status} {listed.describe()}"
        return "ok"
    finally:
        conn.close()
