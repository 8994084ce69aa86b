"""How ``up`` passes on its services' output: every line once, whole and in order, with the
service's name in front, however the child's writes are cut; the READY line and the start-up
failure line are taken out. Real child processes over real pipes."""

from __future__ import annotations

import asyncio
import io
import sys
import textwrap

import pytest

from services import cli
from services.common.startup import PREFIX


async def child(script: str) -> cli._Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(script),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return cli._Child("svc", proc)


async def finished(c: cli._Child) -> None:
    await asyncio.wait_for(asyncio.gather(c.pump, c.errors, c.proc.wait()), 30)


async def test_lines_cut_anywhere_come_out_whole_and_in_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Writes that end mid-line and mid-character (é is two bytes), flushed one by one.
    c = await child(r"""
        import os, time
        out = os.write
        out(1, b"READY svc 127.0.0.1:1\n")
        for piece in (b"al", b"pha\nbe", b"ta\ngamma \xc3", b"\xa9t\xc3\xa9\n", b"last, no end"):
            out(2, piece)
            time.sleep(0.01)
        out(1, b"one\ntwo\n")
    """)
    assert await asyncio.wait_for(c.ready, 30) == "127.0.0.1:1"
    await finished(c)
    captured = capsys.readouterr()
    assert captured.out == "[svc] one\n[svc] two\n"
    assert captured.err == "[svc] alpha\n[svc] beta\n[svc] gamma été\n[svc] last, no end\n"


async def test_a_busy_log_loses_no_line(capsys: pytest.CaptureFixture[str]) -> None:
    c = await child("""
        import sys
        for n in range(20000):
            print(f"line {n}", file=sys.stderr)
    """)
    await finished(c)
    assert capsys.readouterr().err.splitlines() == [f"[svc] line {n}" for n in range(20000)]


async def test_a_line_longer_than_the_limit_is_passed_on_in_pieces(
        capsys: pytest.CaptureFixture[str]) -> None:
    size = cli.LINE_MAX * 2 + 10
    c = await child(f"""
        import sys
        sys.stderr.write("x" * {size} + "\\nafter\\n")
    """)
    await finished(c)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "[svc] after"
    pieces = [line.removeprefix("[svc] ") for line in lines[:-1]]
    assert "".join(pieces) == "x" * size
    assert all(len(p) <= cli.LINE_MAX * 2 for p in pieces)


async def test_the_failure_line_is_kept_as_the_reason_not_passed_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    c = await child(f"""
        import sys
        print("a warning", file=sys.stderr)
        print({PREFIX + "cannot listen on 127.0.0.1:1: address already in use"!r},
              file=sys.stderr)
        sys.exit(3)
    """)
    with pytest.raises(cli.StartupError) as failed:
        await asyncio.wait_for(c.ready, 30)
    assert str(failed.value) == "cannot listen on 127.0.0.1:1: address already in use"
    assert failed.value.status == 3
    await finished(c)
    assert capsys.readouterr().err == "[svc] a warning\n"


class Gone(io.StringIO):
    """Where up's output went, closed under it (``up | head``, once head has exited)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_child_is_still_read_when_ups_own_output_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", Gone())
    monkeypatch.setattr(sys, "stdout", Gone())
    # Far more than a pipe holds: the child would block on a write if up stopped reading.
    c = await child("""
        import sys
        for n in range(20000):
            print(f"line {n} " + "x" * 40, file=sys.stderr)
            print(f"line {n}")
    """)
    await finished(c)
    assert c.proc.returncode == 0
