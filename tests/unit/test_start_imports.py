"""What a process loads at start: the Keystone client's HTTP library only in keystone mode.

aiohttp costs about a fifth of a second of CPU and 9 MB of memory per process; of the
services, only notifier_svc (webhooks) and a process in keystone mode need it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", [
    "services.api_gateway.server", "services.message_svc.server", "services.queue_svc.server",
])
def test_a_service_in_noauth_mode_does_not_load_aiohttp(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('aiohttp')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout[:300]
