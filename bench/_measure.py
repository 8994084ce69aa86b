"""The measurement of the in-process benches: CPU and wall time of a loop, optionally under
cProfile."""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Awaitable, Callable


async def measure(rounds: int, one: Callable[[], Awaitable[int]], profile: bool,
                  ) -> tuple[int, float, float]:
    """Run ``one`` ``rounds`` times; (what the calls returned, summed; CPU seconds; wall
    seconds). With ``profile``, the 30 costliest functions by own time are printed after."""
    profiler = cProfile.Profile() if profile else None
    done = 0
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for _ in range(rounds):
        done += await one()
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return done, cpu, wall
