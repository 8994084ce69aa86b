"""Deployment files are valid for the tools that read them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


def envoy_binary() -> str:
    for candidate in (os.environ.get("ZAQAR_TEST_ENVOY"), str(ROOT / ".venv-envoy/bin/envoy"),
                      shutil.which("envoy")):
        if candidate and Path(candidate).exists():
            return candidate
    if IN_CI:
        pytest.fail("envoy is not installed (scripts/bootstrap.sh --test installs it)")
    pytest.skip("envoy is not installed; run scripts/bootstrap.sh --test")


def test_envoy_config_validates() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", "deploy/envoy/envoy.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
