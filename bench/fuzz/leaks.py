"""The leak scenarios of a run (``leak_family``): a new project A every
``SCENARIO_STEPS`` steps, its steps spread over the workers, its data read back at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import TYPE_CHECKING, Any

from bench.fuzz import leak_family, ws_family
from bench.fuzz.fixture import SetupFailed
from bench.fuzz.oracles import judge, show
from bench.fuzz.wire import Connection, encode_request

if TYPE_CHECKING:
    from bench.fuzz.engine import Run, Worker


class LeakRun:
    """Step ``k`` of a run is step ``k % len(order)`` of a seeded order of every (caller,
    transport, op), on the data of scenario ``k // SCENARIO_STEPS``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.secrets: dict[int, asyncio.Task[leak_family.Secret]] = {}
        self.done: dict[int, int] = {}
        self.verified: set[int] = set()
        self.failed: set[int] = set()
        self.order: dict[int, list[tuple[int, str, int]]] = {}

    def _step(self, k: int) -> tuple[int, str, int]:
        size = len(self._order(0))
        return self._order(k // size)[k % size]

    def _order(self, round_: int) -> list[tuple[int, str, int]]:
        if round_ not in self.order:
            self.order[round_] = leak_family.steps(self.run.seed, round_, self.run.pooling)
        return self.order[round_]

    async def secret(self, scenario: int, conn: Connection) -> leak_family.Secret:
        if scenario not in self.secrets:
            rng = random.Random(f"{self.run.seed}:secret:{scenario}")
            pool_dir = self.run.target.pool_dir if self.run.pooling else ""
            self.secrets[scenario] = asyncio.ensure_future(
                leak_family.create_secret(conn, rng, self.run.sink.url, pool_dir))
            self.run.report.leak_scenarios += 1
        return await asyncio.shield(self.secrets[scenario])

    async def step(self, w: Worker, i: int, k: int) -> None:
        scenario = k // leak_family.SCENARIO_STEPS
        try:
            secret = await self.secret(scenario, w.conn)
        except SetupFailed as exc:
            if scenario not in self.failed:  # once per scenario, not once per step
                self.failed.add(scenario)
                kind = judge(exc.answer.status, exc.answer.error) or "setup"
                self.run.fail(kind, "setup", i, f"leak scenario: {exc.what}",
                              exc.answer.describe(), exc.what)
            self.run.report.status("leak", "setup failed")
            return
        ci, transport, oi = self._step(k)
        caller = leak_family.lookalikes(secret.project, secret.queue)[ci]
        op = leak_family.OPS[oi]
        label = f"leak: {op.name} by {caller.label} over {transport}"
        if transport == "http":
            method, path, headers, doc = leak_family.http_request(secret, op, caller)
            body = None if doc is None else json.dumps(doc, ensure_ascii=False).encode()
            pairs: list[tuple[str | bytes, str | bytes]] = list(headers.items())
            if body is not None:
                pairs.append(("Content-Type", op.content_type))
            elif method in ("POST", "PUT", "PATCH"):
                body = b""
            data = encode_request(method, path, pairs, body)
            answer = await w.conn.exchange(data)
            self.run.report.status("leak", answer.status or answer.error)
            w._judge_http("leak", i, label, data, answer)
            status, sent, seen = answer.status, data, leak_family.http_step_answer(answer)
            repro = f"send to {self.run.target.host}:{self.run.target.http_port}: {show(data)}"
        else:
            request = leak_family.ws_request(secret, op, caller)
            frame = json.dumps(request, ensure_ascii=False)
            result = await w.wsc.exchange(ws_family.WsCase(label, frame))
            self.run.report.status("leak", result.status or result.error)
            ws_kind = judge(result.status, result.error)
            status, sent = result.status, frame.encode()
            body = result.doc.get("body") if isinstance(result.doc, dict) else None
            seen = json.dumps(body, ensure_ascii=False).encode()
            repro = f"send to {self.run.target.ws_url} as text: {frame!r}"
            if ws_kind is not None:
                self.run.fail(ws_kind, "leak", i, label, f"{result.status} {result.error}", repro,
                              ("ws", ws_family.WsCase(label, frame)))
        found = leak_family.leaked(secret, sent, seen)
        if op.by_id and status is not None and 200 <= status < 300:
            found.append(f"{status} to a request by A's id")
        if op.touches:
            after = await leak_family.snapshot(w.conn, secret, op.touches)
            if not self._unanswered(after, i, label):
                found += leak_family.changed(secret.snapshot, after)
        if found:
            self.run.fail("leak", "leak", i, label,
                          f"A = {secret.project!r}, B = {caller.project!r}"
                          f"{'' if caller.queue is None else f', queue {caller.queue!r}'}: "
                          + "; ".join(found) + f"; answer {status}: {seen[:600]!r}",
                          f"A: {_describe(secret)}\n{repro}")
        self.done[scenario] = self.done.get(scenario, 0) + 1
        if self.done[scenario] == leak_family.SCENARIO_STEPS:
            await self.verify(scenario, w.conn, i)

    def _unanswered(self, snapshot: dict[str, Any], i: int, label: str) -> bool:
        """A read of A's data that failed is a failure of its own kind, not a leak."""
        status, what = leak_family.unanswered(snapshot)
        if what:
            kind = judge(status, None if status else "closed") or "5xx"
            self.run.fail(kind, "leak", i, label + " (A reading its data)", "; ".join(what),
                          "GET of A's resources as A")
        return bool(what)

    async def verify(self, scenario: int, conn: Connection, i: int) -> None:
        if scenario in self.verified or scenario not in self.secrets:
            return
        self.verified.add(scenario)
        task = self.secrets[scenario]
        if not task.done() or task.cancelled() or task.exception() is not None:
            return
        secret = task.result()
        after = await leak_family.snapshot(conn, secret)
        if self._unanswered(after, i, f"leak: A reads its data back, scenario {scenario}"):
            return
        diff = leak_family.changed(secret.snapshot, after)
        if diff:
            self.run.fail("leak", "leak", i, f"leak: A's data changed in scenario {scenario}",
                          "; ".join(diff), f"A: {_describe(secret)}")
        await leak_family.remove_secret(conn, secret)

    async def finish(self, conn: Connection) -> None:
        for scenario in list(self.secrets):
            with contextlib.suppress(SetupFailed):
                await self.secrets[scenario]
            await self.verify(scenario, conn, self.run.next_case)


def _describe(s: leak_family.Secret) -> str:
    return (f"project {s.project!r}, queue {s.queue!r}, marker {s.marker}, messages "
            f"{s.message_ids}, claimed {s.claimed_ids} by claim {s.claim_id}, subscription "
            f"{s.subscription_id}, flavor {s.flavor!r}")
