"""``zaqar-grpc edge-drain``: the container beside Envoy in the edge pod
(``deploy/k8s/components/grpc-edge``) that lets the pod stop without cutting calls.

Envoy stops at once on SIGTERM: it closes its listeners and every connection, so the calls in
flight fail (UNAVAILABLE) and callers whose load balancer has not yet dropped the pod find the
port closed. Envoy drains gracefully only when its admin API asks it to, and the admin API
stays on loopback (it can also stop the process), out of the kubelet's reach; the Envoy image
has no shell to ask from a hook. So, when Kubernetes deletes the pod:

- the kubelet sends this container SIGTERM, and this process asks Envoy to drain
  (``POST /drain_listeners?graceful`` on the admin API). With ``--drain-strategy immediate``
  Envoy then tells each connection to go away after its next call (HTTP/2 GOAWAY,
  ``Connection: close``), and still accepts new ones for its ``--drain-time-s``;
- at the same moment the kubelet runs Envoy's preStop hook, a GET of ``/drained`` on this
  container's port, and sends Envoy its SIGTERM only when that GET has its answer. ``/drained``
  answers once the drain is over: after ``--min-drain`` seconds (while the endpoints drop the
  pod, callers may still connect), as soon as no call is in flight on Envoy's API listener,
  and at the latest after ``--max-drain`` seconds (a streaming pull lasts as long as its
  caller wants; it is cut then, and its caller connects again elsewhere). A connection with
  no call since the drain began is closed when Envoy stops, with no call on it to fail;
- this process exits once the drain is over and ``/drained`` has been answered.

``/drained`` only waits, it never starts a drain: whoever reaches the port can do nothing with
it. Without a SIGTERM within ``--signal-wait`` seconds it answers 503, so a hook run by
anything but a pod's deletion leaves Envoy serving (and the kubelet records the failed hook).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.common.logs import LOG_FORMATS, setup_logging

if TYPE_CHECKING:  # imported when used: ``zaqar-grpc`` builds this command's parser every time
    import aiohttp
    from aiohttp import web

log = logging.getLogger("zaqar.edge_drain")

# The statistic of Envoy's API listener (its HTTP connection manager's stat_prefix is grpc_api,
# deploy/envoy/envoy.yaml) that counts the calls in flight.
IN_FLIGHT_STAT = "http.grpc_api.downstream_rq_active"
POLL_SECONDS = 0.2


@dataclass
class Drain:
    """One pod's drain: started by SIGTERM at most once, over when Envoy is drained."""

    admin: str
    min_seconds: float
    max_seconds: float
    started: asyncio.Event = field(default_factory=asyncio.Event)
    over: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: str = ""
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the drain (SIGTERM); a second call does nothing."""
        if self.started.is_set():
            return
        self.started.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="edge-drain")

    async def _run(self) -> None:
        import aiohttp

        began = time.monotonic()
        try:
            async with aiohttp.ClientSession(
                self.admin, timeout=aiohttp.ClientTimeout(total=5)
            ) as admin:
                self.outcome = await self._drain(admin, began)
        except Exception as exc:  # the pod stops anyway; Envoy then stops as it would alone
            self.outcome = f"could not drain Envoy at {self.admin}: {exc or type(exc).__name__}"
        log.warning("Envoy drain over after %.1f s: %s", time.monotonic() - began, self.outcome)
        self.over.set()

    async def _drain(self, admin: aiohttp.ClientSession, began: float) -> str:
        async with admin.post("/drain_listeners", params={"graceful": ""}) as answer:
            if answer.status != 200:
                return f"Envoy refused the drain: {answer.status} {await answer.text()!r}"
        log.warning("Envoy draining: each connection is told to go away after its next call; "
                    "at least %.1f s, at most %.1f s", self.min_seconds, self.max_seconds)
        await asyncio.sleep(self.min_seconds)
        while True:
            left = await self._in_flight(admin)
            if not left:
                return "no call in flight"
            if time.monotonic() - began >= self.max_seconds:
                return f"{left} call(s) still in flight after {self.max_seconds:g} s, to be cut"
            await asyncio.sleep(POLL_SECONDS)

    async def _in_flight(self, admin: aiohttp.ClientSession) -> int:
        """The calls in flight on Envoy's API listener (0 once Envoy no longer answers)."""
        import aiohttp

        stat = re.escape(IN_FLIGHT_STAT)
        try:
            async with admin.get("/stats", params={"filter": f"^{stat}$"}) as got:
                text = await got.text()
        except aiohttp.ClientError:
            return 0
        found = re.search(rf"^{stat}: (\d+)$", text, re.MULTILINE)
        return int(found.group(1)) if found else 0


def app(drain: Drain, signal_wait: float) -> web.Application:
    """``GET /drained``, Envoy's preStop hook: 200 once the drain is over, 503 if none starts
    within ``signal_wait`` seconds; ``GET /healthz``, the liveness probe: 200 while the process
    serves."""
    from aiohttp import web

    async def drained(request: web.Request) -> web.Response:
        log.info("Envoy's preStop hook is waiting (from %s)", request.remote)
        try:
            async with asyncio.timeout(signal_wait):
                await drain.started.wait()
        except TimeoutError:
            return web.Response(status=503, text=(
                f"No drain: this pod was not sent SIGTERM within {signal_wait:g} s, so Envoy "
                "keeps serving.\n"))
        await drain.over.wait()
        return web.Response(text=f"Envoy drained: {drain.outcome}.\n")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="draining\n" if drain.started.is_set() else "ok\n")

    application = web.Application()
    application.router.add_get("/drained", drained)
    application.router.add_get("/healthz", healthz)
    return application


async def run(admin: str, host: str, port: int, min_drain: float, max_drain: float,
              signal_wait: float) -> int:
    from aiohttp import web

    drain = Drain(admin, min_drain, max_drain)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, drain.start)
    runner = web.AppRunner(app(drain, signal_wait), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("Waiting for SIGTERM to drain Envoy at %s; Envoy's preStop hook: GET "
             "http://%s:%d/drained", admin, host, port)
    await drain.over.wait()
    # Let the hook's waiting GET have its answer before the port closes.
    await runner.shutdown()
    await runner.cleanup()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", default="http://127.0.0.1:9901",
                        help="Envoy's admin API (default http://127.0.0.1:9901)")
    parser.add_argument("--listen", default="0.0.0.0:9903", metavar="HOST:PORT",
                        help="where /drained, Envoy's preStop hook, is served "
                        "(default 0.0.0.0:9903)")
    parser.add_argument("--min-drain", type=float, default=5.0, metavar="SECONDS",
                        help="the shortest drain: how long callers may still be sent to the "
                        "pod once it is deleted (default 5)")
    parser.add_argument("--max-drain", type=float, default=20.0, metavar="SECONDS",
                        help="the longest drain, after which the calls left are cut; keep it "
                        "under the pod's terminationGracePeriodSeconds (default 20)")
    parser.add_argument("--signal-wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long /drained waits for this container's SIGTERM before it "
                        "answers 503 (default 10)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text or json, as the services' log_format (default text)")


def main(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen {args.listen!r}: expected HOST:PORT")
    if not 0 <= args.min_drain <= args.max_drain:
        raise SystemExit("expected 0 <= --min-drain <= --max-drain")
    setup_logging("INFO", args.log_format)
    return asyncio.run(run(args.admin, host.strip("[]"), int(port), args.min_drain,
                           args.max_drain, args.signal_wait))

