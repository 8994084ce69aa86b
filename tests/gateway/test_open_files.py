"""The gateway's connection limits fitted to its open-files limit (``open_files.py``): the soft
limit is raised as far as both limits need; when the hard one is too low, both are lowered in
proportion, and the log says so. Each case runs in a process of its own: a lowered hard limit
cannot be raised again."""

from __future__ import annotations

import subprocess
import sys

import pytest

FIT = """
import logging, resource, sys
from services.api_gateway.open_files import fit
from services.common.config import Settings
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
soft, hard, http, ws = (int(v) for v in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
fitted = fit(Settings(http_max_connections=http, ws_max_connections=ws))
print("fitted", fitted.http_max_connections, fitted.ws_max_connections,
      "soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(("soft", "hard", "wanted", "fitted", "soft_after"), [
    # The soft limit is raised as far as both limits and the other files need
    (1024, 20000, (10000, 5000), (10000, 5000), 16024),
    # A limit of 0 (none) takes no part
    (1024, 20000, (10000, 0), (10000, 0), 11024),
    (1024, 1024, (0, 0), (0, 0), 1024),
    # A hard limit too low: both fitted under it, in proportion
    (1024, 4096, (10000, 10000), (1536, 1536), 4096),
    (1024, 4096, (9000, 3000), (2304, 768), 4096),
    (256, 256, (10000, 0), (128, 0), 256),
    # Limits that fit change nothing
    (4096, 4096, (100, 100), (100, 100), 4096),
])
def test_the_connection_limits_fit_the_open_files_limit(
    soft: int, hard: int, wanted: tuple[int, int], fitted: tuple[int, int], soft_after: int,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", FIT, str(soft), str(hard), *(str(n) for n in wanted)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = ran.stdout.splitlines()
    assert lines[-1] == f"fitted {fitted[0]} {fitted[1]} soft {soft_after}", ran.stdout + ran.stderr
    if fitted == wanted:
        assert lines[:-1] == []
    else:
        lowered = " and ".join(f"{name} from {w} to {f}" for name, w, f in zip(
            ("http_max_connections", "ws_max_connections"), wanted, fitted, strict=True) if w)
        assert lines[:-1] == [f"lowered {lowered} to fit this process's open-files limit of "
                              f"{soft_after} (ulimit -n); raise that limit for more"]
