"""Prefill for ``bench/scaling.py``: writes into real Zaqar's store through Zaqar's own storage
API (the controllers its WSGI resources call), run with the Python of the reference venv:

    bench/.venv-zaqar/bin/python bench/zaqar_fill.py CONF messages PROJECT QUEUE COUNT CLIENT_ID
    bench/.venv-zaqar/bin/python bench/zaqar_fill.py CONF queues PROJECT FIRST COUNT

``messages``: COUNT messages into an existing queue, ``BULK`` per ``MessageController.post``
(Zaqar's transport allows 20 per HTTP post; its storage takes any number), the body and TTL
of ``bench/scaling.py``'s posts. ``queues``: queues ``q<FIRST>`` … ``q<FIRST + COUNT - 1>``
(six digits) with empty metadata, by ``QueueController.create``, ``THREADS`` at once.
CONF is the config file the server runs with (``bench/wrk_compare.py``'s ``start_zaqar``).
Progress goes to stderr, on lines that start with "fill: ".
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from oslo_config import cfg
from oslo_log import log
from zaqar import bootstrap

BULK = 1000
THREADS = 8
BODY = {"event": "scaling", "payload": "0123456789abcdef"}
TTL = 86400


def main() -> None:
    conf_file, what, project, *rest = sys.argv[1:]
    conf = cfg.CONF
    log.register_options(conf)
    conf(project="zaqar", prog="zaqar-server", default_config_files=[],
         args=["--config-file", conf_file])
    storage = bootstrap.Bootstrap(conf).storage
    started = time.monotonic()
    if what == "messages":
        queue, count, client_id = rest[0], int(rest[1]), rest[2]
        messages = storage.message_controller
        for done in range(0, count, BULK):
            n = min(BULK, count - done)
            messages.post(queue, [{"body": BODY, "ttl": TTL} for _ in range(n)], client_id,
                          project=project)
            if (done + n) % 100_000 == 0 or done + n == count:
                print(f"fill: {queue}: {done + n} of {count} messages "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    elif what == "queues":
        first, count = int(rest[0]), int(rest[1])
        queues = storage.queue_controller

        def create(i: int) -> None:
            queues.create(f"q{i:06d}", project=project)

        with ThreadPoolExecutor(THREADS) as pool:
            for start in range(first, first + count, 10_000):
                list(pool.map(create, range(start, min(first + count, start + 10_000))))
                print(f"fill: {project}: {min(first + count, start + 10_000) - first} of {count} "
                      f"queues ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    else:
        raise SystemExit(f"zaqar_fill: unknown kind {what!r}")


if __name__ == "__main__":
    main()
