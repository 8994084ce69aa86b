"""The gateway's own cost per request, in process and without sockets: the real ASGI app
(Falcon, the request gate, the routes, the coalescer), called directly, with message_svc's
answers made up at the ``Exchange`` stream. What it leaves out is what every HTTP server and
gRPC client pays (uvicorn's parsing and writes, gRPC's framing and hand-offs), so the number
is the part of the gateway's CPU per request that its own code decides.

    PYTHONPATH=.:services/common/gen .venv/bin/python -m bench.gateway_inprocess \\
        [--requests 20000] [--kind post|delete] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import uvloop
from zaqar_grpc.v2 import messages_pb2

from bench._measure import measure
from services.api_gateway import exchange
from services.api_gateway.app import create_app
from services.common.config import Settings

MESSAGE_ID = "5f1c1a6e9b3f4d2a8e7c6b5a"
HEADERS = [
    (b"host", b"127.0.0.1:8888"), (b"client-id", b"3381af92-2b9e-11e3-b191-71861300734c"),
    (b"x-project-id", b"bench"), (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
]
BODY = b'{"messages": [{"ttl": 300, "body": {"event": "BackupStarted", "n": 1}}]}'


async def answered(self: Any, items: Sequence[messages_pb2.BatchItem], timeout: float | None,  # noqa: ASYNC109
                   request_ids: Sequence[str]) -> list[messages_pb2.BatchResult]:
    """``Exchange.call`` answered at once: an id per posted message, else an empty result."""
    results = []
    for item in items:
        result = messages_pb2.BatchResult()
        if item.WhichOneof("request") == "post_messages":
            result.post_messages.ids.extend([MESSAGE_ID] * len(item.post_messages.messages))
        else:
            result.empty.SetInParent()
        results.append(result)
    await asyncio.sleep(0)
    return results


def scope(method: str, path: str, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    length = [(b"content-length", str(len(body)).encode())] if body else []
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "server": ("127.0.0.1", 8888),
            "client": ("127.0.0.1", 5555), "scheme": "http", "method": method, "root_path": "",
            "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": HEADERS + length}


async def run(requests: int, kind: str, profile: bool) -> None:
    exchange.Exchange.call = answered  # type: ignore[method-assign]
    app = create_app(Settings.load(environ={"ZAQAR_LOG_LEVEL": "WARNING"}))
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                         to_app.get, from_app.put))
    await from_app.get()
    if kind == "post":
        request, body = scope("POST", "/v2/queues/bench/messages", body=BODY), BODY
    else:
        request, body = scope("DELETE", f"/v2/queues/bench/messages/{MESSAGE_ID}",
                              query=b"claim_id=5f1c1a6e9b3f4d2a8e7c6b5b"), b""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def one() -> int:
        await app(dict(request), receive, send)
        return 1

    for _ in range(2000):  # warm-up
        await one()
    status = sent[0]["status"]
    sent.clear()
    _, cpu, wall = await measure(requests, one, profile)
    print(f"{kind}: status {status}, {requests} requests, {1e6 * cpu / requests:.1f} µs of CPU "
          f"per request ({1e6 * wall / requests:.1f} µs wall)")
    lifespan.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--kind", choices=("post", "delete"), default="post")
    ap.add_argument("--profile", action="store_true", help="cProfile the measured requests")
    args = ap.parse_args()
    uvloop.run(run(args.requests, args.kind, args.profile))


if __name__ == "__main__":
    main()
