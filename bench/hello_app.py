"""The HTTP ceiling: an app on uvicorn answering the bench's routes with fixed bodies and no work
behind them. Run the same workload against it and against the real service, in the same
session, to see how much of the budget the service itself spends.

Two forms: a plain Falcon ASGI app (the default), and with ``--bare`` a bare ASGI callable with
no framework at all (the raw ceiling the performance targets are stated against).

    python bench/hello_app.py --port 8899 [--bare] &
    python bench/zbench.py --url http://127.0.0.1:8899 -pp 1 -pw 4 -cp 1 -cw 4 -op 0 -t 20
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import falcon
import falcon.asgi
import orjson
import uvicorn

CLAIM_ID = str(uuid.uuid4())


class Messages:
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        await req.stream.read()
        mid = uuid.uuid4()
        resp.status = falcon.HTTP_201
        resp.data = orjson.dumps({"resources": [f"/v2/queues/{queue}/messages/{mid}"]})

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        resp.data = orjson.dumps({"messages": [], "links": []})


class Queue:
    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        await req.stream.read()
        resp.status = falcon.HTTP_201

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        resp.data = b"{}"

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        resp.status = falcon.HTTP_204


class Stats:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        resp.data = b'{"messages": {"claimed": 0, "free": 0, "total": 0}}'


class Message:
    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str,
                        mid: str) -> None:
        resp.status = falcon.HTTP_204


class Claims:
    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, queue: str
    ) -> None:
        await req.stream.read()
        msgs = [{"id": str(uuid.uuid4()), "ttl": 300, "age": 0, "body": {"n": i},
                 "href": f"/v2/queues/{queue}/messages/{uuid.uuid4()}?claim_id={CLAIM_ID}"}
                for i in range(5)]
        resp.status = falcon.HTTP_201
        resp.data = orjson.dumps({"messages": msgs})


def create_app() -> falcon.asgi.App:
    app = falcon.asgi.App()
    app.add_route("/v2/queues/{queue}", Queue())
    app.add_route("/v2/queues/{queue}/stats", Stats())
    app.add_route("/v2/queues/{queue}/messages", Messages())
    app.add_route("/v2/queues/{queue}/messages/{mid}", Message())
    app.add_route("/v2/queues/{queue}/claims", Claims())
    return app


_JSON = [(b"content-type", b"application/json")]


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same routes as :func:`create_app`, as a bare ASGI callable: the path split by hand,
    the body read and dropped, fixed answers."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    parts = scope["path"].split("/")  # "", "v2", "queues", queue, ...
    method = scope["method"]
    status, body = 404, b""
    if len(parts) >= 4 and parts[1] == "v2" and parts[2] == "queues":
        queue, rest = parts[3], parts[4:]
        if not rest:
            status, body = (201, b"") if method == "PUT" else (
                (204, b"") if method == "DELETE" else (200, b"{}"))
        elif rest == ["stats"]:
            status, body = 200, b'{"messages": {"claimed": 0, "free": 0, "total": 0}}'
        elif rest == ["messages"] and method == "POST":
            status, body = 201, orjson.dumps(
                {"resources": [f"/v2/queues/{queue}/messages/{uuid.uuid4()}"]})
        elif rest == ["messages"]:
            status, body = 200, b'{"messages": [], "links": []}'
        elif len(rest) == 2 and rest[0] == "messages":
            status = 204
        elif rest == ["claims"] and method == "POST":
            status, body = 201, orjson.dumps({"messages": [
                {"id": str(uuid.uuid4()), "ttl": 300, "age": 0, "body": {"n": i},
                 "href": f"/v2/queues/{queue}/messages/{uuid.uuid4()}?claim_id={CLAIM_ID}"}
                for i in range(5)]})
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--bare", action="store_true", help="a bare ASGI callable, no Falcon")
    args = ap.parse_args()
    uvicorn.run(bare_app if args.bare else create_app(), host="127.0.0.1", port=args.port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning")
