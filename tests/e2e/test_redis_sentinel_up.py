"""``zaqar-grpc up`` with every store on the master of a Sentinel group
(``redis+sentinel://``), through real HTTP: the master is killed (SIGKILL) under load, a
Sentinel promotes its replica, and every message acknowledged with a 201 is still there or
was deleted by the consumer, since the message store waits for the replica to confirm every
write (``wait=1``). The services are not restarted: they find the new master themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.common.config import Settings
from tests.e2e.harness import start_stack
from tests.e2e.traffic import PROJECT, QUEUE, Traffic, all_message_ids, headers
from tests.servers import RedisSentinelProcesses, start_redis_sentinel
from tests.waiting import until

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisSentinelProcesses]:
    with start_redis_sentinel(tmp_path / "sentinel") as group:
        yield group


@pytest.mark.timeout(240)
async def test_a_master_killed_under_load_loses_no_acknowledged_message(
    group: RedisSentinelProcesses, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stores = group.stack_uris("s", "&wait=1&wait_timeout=1")
    stack = start_stack(make_settings(data_dir=str(tmp_path / "data"), **stores))
    try:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers(PROJECT),
                                     timeout=60) as http:
            load = Traffic("sentinel", http)
            assert (await http.put(f"/v2/queues/{QUEUE}", json={})).status_code == 201
            load.start()
            try:
                await until(lambda: len(load.acked) >= 40 and bool(load.deleted), 60,
                            lambda: f"the load runs: {load}")
                # When the master is killed, as in a crash
                old = group.master_port()
                assert old is not None
                killed = group.server(old)
                acked_before = len(load.acked)
                killed.kill()
                killed_at = time.monotonic()
                # Then a Sentinel promotes the replica
                await asyncio.to_thread(group.wait_healthy, 60, old)
                took_over = time.monotonic() - killed_at
                # And once the killed server is back, as the new master's replica, writes are
                # confirmed again and the load goes on
                await asyncio.to_thread(killed.start)
                await asyncio.to_thread(group.wait_healthy, 60)
                load.streak = 0
                await until(lambda: load.streak >= 20, 60, lambda: f"the stack recovers: {load}")
                recovered = time.monotonic() - killed_at
            finally:
                await load.stop()

            stored = set(await all_message_ids(http, QUEUE))
            missing = [m for m in load.acked if m not in load.deleted and m not in stored]
            unexpected = {s: n for s, n in load.statuses.items()
                          if s.split()[1] not in {"201", "204", "503"}}
            log.info("%d messages acknowledged (%d before the kill), %d deleted, %d lost; "
                     "answers %s; replica in charge %.1f s after the kill, load recovered at "
                     "%.1f s", len(load.acked), acked_before, len(load.deleted), len(missing),
                     dict(sorted(load.statuses.items())), took_over, recovered)
            # Then every answer was a success or a 503, and no acknowledged message is lost
            assert unexpected == {}, load.statuses
            assert missing == [], (len(missing), len(load.acked))
            assert len(load.acked) > acked_before
    finally:
        stack.terminate()
        assert stack.stop() == 0, "".join(stack.output)
