"""No orphan server ever: session end, Ctrl-C, and a SIGKILLed pytest (real server binary)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

INNER_TEST = """
import sys, threading

def test_hold_server(livekit_server, request):
    from pytest_livekit.plugin import SERVER_KEY
    print(f"SERVERPID={request.config.stash[SERVER_KEY].pid}", flush=True)
    print(f"PYTESTPID={__import__('os').getpid()}", flush=True)
    threading.Event().wait(60)  # held until the outer test signals this process
"""


def _start_inner(tmp_path: Path, server_binary: Path) -> tuple[subprocess.Popen[str], int]:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider",
         f"--livekit-server-binary={server_binary}", "test_inner.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    server_pid = None
    # A blocking read, bounded by a timer that kills the child: select() on a buffered text pipe
    # misses lines already pulled into Python's buffer.
    guard = threading.Timer(60, proc.kill)
    guard.start()
    try:
        for line in proc.stdout:
            # -s output shares the line with pytest's progress ("test_inner.py SERVERPID=...")
            if "SERVERPID=" in line:
                server_pid = int(line.split("SERVERPID=", 1)[1].split()[0])
            if "PYTESTPID=" in line:
                break
    finally:
        guard.cancel()
    if server_pid is None:
        proc.kill()
        pytest.fail(f"inner pytest did not report a server pid:\n{proc.communicate()[0]}")
    return proc, server_pid


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for process exit via a pidfd (an event, not polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGKILL, "kill -9 of pytest")],
)
def test_server_never_outlives_pytest(
    tmp_path: Path, server_binary: Path, sig: signal.Signals, how: str
) -> None:
    proc, server_pid = _start_inner(tmp_path, server_binary)
    os.kill(server_pid, 0)  # alive while the test holds it
    proc.send_signal(sig)
    out = proc.communicate(timeout=30)[0]
    assert _wait_gone(server_pid, 15), f"livekit-server {server_pid} survived {how}:\n{out}"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in out


def test_server_stopped_at_session_end(tmp_path: Path, server_binary: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        "def test_x(livekit_server, request):\n"
        "    from pytest_livekit.plugin import SERVER_KEY\n"
        "    print(f'SERVERPID={request.config.stash[SERVER_KEY].pid}')\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider",
         f"--livekit-server-binary={server_binary}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    pid = int(out.split("SERVERPID=", 1)[1].split()[0])
    assert _wait_gone(pid, 5)
    assert "1 passed" in out
