"""The fuzz run: cases of five families against a running stack, judged by five oracles.

Case ``i`` of seed ``s`` draws everything it sends from ``random.Random(f"{s}:{i}")`` (the ids
it fills in come from live resources, so they differ between runs; every failure carries the
exact bytes it sent). The first cases are a sweep: every route and method of the router once
as a valid request, every WebSocket action once with a valid body, every raw generator once,
every gRPC method of the services once with a valid request;
then families are drawn by weight.

Oracles, for every answer: no status of 500 or more (503 counted apart; 505 allowed for an
HTTP version the server does not speak), no answer later than ``timeout`` seconds (hang), no
connection dropped without an answer to a whole request, no leak (``leak_family``). Every 250
cases and at the end every process of the stack must be alive, and at the end the stack must
answer a canary: ping, create a queue, post, list.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench.fuzz import grpc_family, http_family, raw_family, ws_family
from bench.fuzz.fixture import (
    Fixture,
    SetupFailed,
    Sink,
    build,
    build_catalog,
    build_queue,
    share,
)
from bench.fuzz.leaks import LeakRun
from bench.fuzz.oracles import canary, judge, show
from bench.fuzz.report import Failure, Report, logged_errors
from bench.fuzz.routes import Route, route_table, spoiled, valid_draft
from bench.fuzz.wire import Answer, Connection

FAMILIES = ("http", "ws", "raw", "leak", "grpc")
WEIGHTS = {"http": 50, "ws": 18, "raw": 11, "leak": 12, "grpc": 9}
# WebSocket actions whose success spoils a fixture's queue.
WS_SPOILS = frozenset({"queue_delete", "queue_purge", "message_delete_many", "claim_delete",
                       "subscription_delete"})
ALIVE_EVERY = 250
# Share of the cases that use the fixture shared by every worker.
SHARED = 0.2
# The gateway's bound on a request head (``http_protocol.py``).
HEAD_BYTES_MAX = 128 * 1024


@dataclass(frozen=True)
class Target:
    """A running stack: where it listens, its settings (the route table is read from the app
    they make), which of its processes are alive, and its output so far."""

    host: str
    http_port: int
    ws_url: str
    settings: Any
    alive: Callable[[], dict[str, bool]]
    pool_dir: str = ""
    output: Callable[[], Sequence[str]] | None = None


class Run:
    def __init__(self, target: Target, seed: int, cases: int, workers: int, timeout: float,
                 weights: dict[str, int]) -> None:
        self.target = target
        self.seed = seed
        self.cases = cases
        self.workers = workers
        self.timeout = timeout
        self.weights = weights
        self.report = Report(seed, cases, workers)
        self.routes: list[Route] = route_table(target.settings)
        self.actions = ws_family.action_table()
        settings = target.settings
        self.methods = grpc_family.method_table(target.host, [
            settings.queue_port, settings.message_port, settings.notifier_port])
        self.pooling = bool(getattr(target.settings, "pooling", False))
        self.sweep: list[tuple[str, int]] = (
            [("http", i) for i in range(len(self.routes))]
            + [("ws", i) for i in range(len(self.actions))]
            + [("raw", i) for i in range(len(raw_family.GENERATORS))]
            + [("grpc", i) for i in range(len(self.methods))]
        )
        self.next_case = 0
        self.next_leak = 0
        # A fixture every worker uses now and then, so that cases race on one queue.
        self.shared: Fixture | None = None
        self.shared_lock = asyncio.Lock()
        self.shared_generation = 0
        self.stopped = False
        self.sink = Sink()
        self.leaks = LeakRun(self)

    def plan(self, i: int) -> tuple[str, random.Random, int | None]:
        rng = random.Random(f"{self.seed}:{i}")
        if i < len(self.sweep):
            family, index = self.sweep[i]
            return family, rng, index
        names = [f for f in FAMILIES if self.weights.get(f)]
        return rng.choices(names, [self.weights[f] for f in names])[0], rng, None

    def fail(self, kind: str, family: str, case: int, label: str, detail: str,
             reproducer: str, replay: tuple[object, ...] | None = None) -> None:
        self.report.add(Failure(kind, family, case, label, detail, reproducer, replay))

    def check_alive(self, case: int) -> None:
        dead = [name for name, up in self.target.alive().items() if not up]
        if dead and not self.report.dead:
            self.report.dead = dead
            self.fail("crash", "stack", case, f"process(es) gone: {', '.join(dead)}",
                      f"after case {case}", "see the cases just before it")
            self.stopped = True


class Worker:
    def __init__(self, run: Run, n: int) -> None:
        self.run = run
        self.n = n
        t = run.target
        self.conn = Connection(t.host, t.http_port, run.timeout)
        self.wsc = ws_family.WsClient(t.ws_url, run.timeout)
        self.grpcc = grpc_family.GrpcClient(t.host, run.timeout)
        self.fx: Fixture | None = None
        self.generation = 0

    async def pick(self, case: int, rng: random.Random) -> Fixture:
        """The worker's own fixture, or one case in five the fixture all workers share."""
        if rng.random() >= SHARED:
            return await self.fixture(case)
        run = self.run
        async with run.shared_lock:
            if run.shared is None or run.shared.stale:
                run.shared_generation += 1
                queue = f"fzshared-g{run.shared_generation}"
                try:
                    if run.shared is None:
                        run.shared = await build(self.conn, project=f"fz{run.seed}shared",
                                                 queue=queue, sink_url=run.sink.url)
                    else:
                        run.shared.queue = queue
                        await build_queue(self.conn, run.shared)
                        await share(self.conn, run.shared)
                        run.shared.stale.clear()
                except SetupFailed as exc:
                    run.shared = None
                    self._setup_failed(case, exc)
                    raise
                run.report.fixtures += 1
            return run.shared

    def _setup_failed(self, case: int, exc: SetupFailed) -> None:
        kind = judge(exc.answer.status, exc.answer.error) or "setup"
        self.run.fail(kind, "setup", case, f"fixture: {exc.what}", exc.answer.describe(),
                      exc.what)

    async def fixture(self, case: int) -> Fixture:
        if self.fx is not None and not self.fx.stale:
            return self.fx
        self.generation += 1
        queue = f"fzq{self.n}g{self.generation}"
        try:
            if self.fx is None:
                pool = f"fzp{self.n}" if self.run.pooling and self.run.target.pool_dir else ""
                pool_uri = f"sqlite:///{self.run.target.pool_dir}/{pool}.db" if pool else ""
                self.fx = await build(
                    self.conn, project=f"fz{self.run.seed}w{self.n}", queue=queue,
                    sink_url=self.run.sink.url, pool=pool, pool_uri=pool_uri)
            else:
                if "queue" in self.fx.stale:
                    self.fx.queue = queue
                    await build_queue(self.conn, self.fx)
                    await share(self.conn, self.fx)
                if "catalog" in self.fx.stale and self.fx.pool:
                    await build_catalog(self.conn, self.fx)
                self.fx.stale.clear()
        except SetupFailed as exc:
            self._setup_failed(case, exc)
            raise
        self.run.report.fixtures += 1
        return self.fx

    async def loop(self) -> None:
        run = self.run
        try:
            while not run.stopped and run.next_case < run.cases:
                i = run.next_case
                run.next_case += 1
                family, rng, index = run.plan(i)
                try:
                    await getattr(self, f"case_{family}")(i, rng, index)
                except SetupFailed:
                    self.fx = None
                except Exception:  # a fault of the fuzzer: counted, the run goes on
                    self.run.fail("fuzzer", family, i, f"{family}: the fuzzer failed",
                                  traceback.format_exc(limit=-3), f"seed {run.seed}, case {i}")
                if (i + 1) % ALIVE_EVERY == 0:
                    run.check_alive(i)
        finally:
            self.conn.close()
            await self.wsc.close()
            await self.grpcc.close()

    async def case_http(self, i: int, rng: random.Random, index: int | None) -> None:
        fx = await self.pick(i, rng)
        route = self.run.routes[index] if index is not None else rng.choice(self.run.routes)
        draft, known = valid_draft(route, fx, rng)
        if not known:
            self.run.report.generic_routes.add(route.key)
        labels = ["valid"] if index is not None else http_family.mutate(draft, rng, fx)
        data = http_family.render(draft)
        answer = await self.conn.exchange(data, head_only=draft.method == "HEAD")
        self.run.report.status("http", answer.status or answer.error)
        self.run.report.routes[route.key] += 1
        label = f"{route.key}: " + "; ".join(labels)
        self._judge_http("http", i, label, data, answer)
        part = spoiled(draft.method, route.template, answer.status)
        if part is not None:
            fx.stale.add(part)

    def _judge_http(self, family: str, i: int, label: str, data: bytes, answer: Answer) -> None:
        # A mutation that puts a line break into the path ends the request line early: what
        # the server reads is a request line without HTTP/1.x (HTTP/0.9), answered 505 as in
        # the raw family.
        first_line = re.split(rb"\r?\n", data, maxsplit=1)[0]
        versioned = first_line.endswith((b" HTTP/1.1", b" HTTP/1.0"))
        kind = judge(answer.status, answer.error,
                     frozenset() if versioned else raw_family.ALLOWED_5XX)
        if kind == "dropped" and data.find(b"\r\n\r\n") > HEAD_BYTES_MAX:
            # Such a head is answered 431 and the connection closed without reading the rest:
            # the unread bytes make the kernel reset it, which may overtake the answer.
            kind = None
        if kind is not None:
            t = self.run.target
            self.run.fail(kind, family, i, label, answer.describe(),
                          f"send to {t.host}:{t.http_port}: {show(data)}", ("http", data))

    async def case_ws(self, i: int, rng: random.Random, index: int | None) -> None:
        fx = await self.pick(i, rng)
        names = list(self.run.actions)
        name = names[index] if index is not None else rng.choice(names)
        required, one_of = self.run.actions[name]
        if index is None and rng.random() < 0.12:
            case = ws_family.garbage(rng)
        else:
            case = ws_family.make_case(name, required, one_of, fx, rng, mutate=index is None)
            self.run.report.actions[name] += 1
        result = await self.wsc.exchange(case)
        closed_ok = case.may_close and result.close_code in ws_family.EXPECTED_CLOSE
        status: int | str | None = result.status or (
            f"close {result.close_code}" if result.close_code else result.error)
        self.run.report.status("ws", status)
        kind = None if closed_ok else judge(result.status, result.error)
        if result.status is None and result.error not in (None, "timeout") and not closed_ok:
            kind = "bad-answer" if "answer" in (result.error or "") else "dropped"
        if kind is not None:
            self.run.fail(kind, "ws", i, case.label,
                          f"{result.status} {result.error or ''} {str(result.doc)[:600]}",
                          f"send to {self.run.target.ws_url} as "
                          f"{'text' if case.as_text or isinstance(case.frame, str) else 'binary'}"
                          f": {case.frame[:3000]!r}", ("ws", case))
        if result.status is not None and 200 <= result.status < 300 and (
                name in WS_SPOILS or (name == "claim_create" and result.status == 204)):
            fx.stale.add("queue")

    async def case_raw(self, i: int, rng: random.Random, index: int | None) -> None:
        fx = await self.pick(i, rng)
        gens = raw_family.GENERATORS
        case = (gens[index] if index is not None else rng.choice(gens))(rng, fx)
        t = self.run.target
        result = await raw_family.send(t.host, t.http_port, case, self.run.timeout)
        statuses = [a.status for a in result.answers]
        self.run.report.status("raw", "timeout" if result.timed_out else (
            ",".join(str(s) for s in statuses[:1]) or "closed"))
        kinds = [judge(s, None, raw_family.ALLOWED_5XX) for s in statuses]
        if result.timed_out:
            kinds.append("hang")
        elif len(statuses) < case.owed:
            kinds.append("dropped")
        for kind in {k for k in kinds if k is not None}:
            self.run.fail(kind, "raw", i, f"raw: {case.label}",
                          f"answers {statuses}, closed={result.closed}, "
                          f"{result.seconds:.1f}s: "
                          + "; ".join(a.describe(300) for a in result.answers),
                          f"send to {t.host}:{t.http_port} (then "
                          f"{'half-close' if not case.complete else 'wait'}): "
                          f"{show(case.data)}", ("raw", case))

    async def case_grpc(self, i: int, rng: random.Random, index: int | None) -> None:
        fx = await self.pick(i, rng)
        methods = self.run.methods
        method = methods[index] if index is not None else rng.choice(methods)
        case = grpc_family.make_case(method, fx, rng, mutate=index is None)
        result = await self.grpcc.call(case)
        self.run.report.status("grpc", result.code.name if result.code else "timeout")
        self.run.report.methods[method.path] += 1
        kind = grpc_family.judge(result)
        if kind is not None:
            t = self.run.target
            self.run.fail(kind, "grpc", i, case.label,
                          f"{result.code.name if result.code else 'no answer'} {result.details}",
                          f"call {method.path} on {t.host}:{method.port} with the request "
                          f"{show(case.data)}", ("grpc", case))
        if result.code == grpc.StatusCode.OK and grpc_family.spoils(method):
            fx.stale.add("queue")

    async def case_leak(self, i: int, rng: random.Random, index: int | None) -> None:
        k = self.run.next_leak
        self.run.next_leak += 1
        await self.run.leaks.step(self, i, k)


async def replay(run: Run, failure: Failure) -> None:
    """Send a failing case again, alone, and keep what the stack printed meanwhile."""
    output = run.target.output
    if failure.replay is None or output is None:
        return
    start = len(output())
    t = run.target
    what = failure.replay[0]
    if what == "http":
        data = failure.replay[1]
        assert isinstance(data, bytes)
        conn = Connection(t.host, t.http_port, run.timeout)
        await conn.exchange(data)
        conn.close()
    elif what == "ws":
        case = failure.replay[1]
        assert isinstance(case, ws_family.WsCase)
        client = ws_family.WsClient(t.ws_url, run.timeout)
        await client.exchange(case)
        await client.close()
    elif what == "raw":
        case = failure.replay[1]
        assert isinstance(case, raw_family.RawCase)
        await raw_family.send(t.host, t.http_port, case, run.timeout)
    elif what == "grpc":
        case = failure.replay[1]
        assert isinstance(case, grpc_family.GrpcCase)
        client = grpc_family.GrpcClient(t.host, run.timeout)
        await client.call(case)
        await client.close()
    await canary(t, run.timeout)
    failure.log = list(output()[start:])


async def run(target: Target, *, seed: int, cases: int, workers: int = 4,
              bound: float = 10.0, weights: dict[str, int] | None = None,
              replays: int = 10, progress: Callable[[Report], None] | None = None) -> Report:
    """Run ``cases`` cases against ``target`` and judge them (``bound``: seconds an answer may
    take); see the module docstring."""
    r = Run(target, seed, cases, workers, bound, weights or WEIGHTS)
    started = time.monotonic()
    first_line = len(target.output()) if target.output is not None else 0
    await r.sink.start()
    try:
        pool: list[asyncio.Task[None]] = [asyncio.ensure_future(Worker(r, n).loop())
                                          for n in range(workers)]
        if progress is not None:
            async def report_progress() -> None:
                while True:
                    await asyncio.sleep(10)
                    r.report.seconds = time.monotonic() - started
                    progress(r.report)
            ticker = asyncio.ensure_future(report_progress())
        await asyncio.gather(*pool)
        if progress is not None:
            ticker.cancel()
        closing = Connection(target.host, target.http_port, bound)
        await r.leaks.finish(closing)
        closing.close()
        r.check_alive(r.next_case)
        r.report.canary = await canary(target, bound) if not r.report.dead else "not run"
        if target.output is not None:
            r.report.logged = logged_errors(target.output()[first_line:])
        seen: set[str] = set()
        for failure in r.report.failures:
            if failure.signature not in seen and len(seen) < replays:
                seen.add(failure.signature)
                await replay(r, failure)
    finally:
        await r.sink.close()
    r.report.seconds = time.monotonic() - started
    return r.report
