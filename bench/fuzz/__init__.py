"""A seeded fuzzer of the gateway's HTTP and WebSocket APIs against a running stack.

    from bench.fuzz import Target, run
    report = await run(target, seed=1, cases=3000)

Families of cases (``docs/fuzzing.md``): ``http`` (mutations of valid requests for every route
and method of the router), ``ws`` (every WebSocket action, mutated, and garbage frames),
``raw`` (malformed HTTP/1.x on a socket) and ``leak`` (project A's data against look-alike
callers). ``python -m bench.fuzz`` starts its own stack and runs them.
"""

from bench.fuzz.engine import Target, run
from bench.fuzz.report import Failure, Report

__all__ = ["Failure", "Report", "Target", "run"]
