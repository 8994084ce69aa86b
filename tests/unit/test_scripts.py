"""The README's run command installs what it needs without failing (CI only runs the test one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_command_bootstrap_succeeds() -> None:
    # scripts/up.sh first runs scripts/bootstrap.sh without --test; it must finish cleanly.
    result = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ROOT / ".venv" / ".installed").exists()
