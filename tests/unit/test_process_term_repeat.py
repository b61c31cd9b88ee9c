"""``stop_process_group(repeat=...)``: a child that ignores its first SIGTERM (as livekit-server
does just after its start) ends on a repeated one, long before the SIGKILL timeout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from pytest_livekit.server.process import spawn, stop_process_group

# ignores the first SIGTERM, exits 0 on the second; prints "ready" once its handler is set
CHILD = """
import signal, sys, threading
seen = []
def on_term(*_):
    seen.append(1)
    if len(seen) >= 2:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
threading.Event().wait(60)
"""


def _child() -> subprocess.Popen[bytes]:
    proc = spawn([sys.executable, "-u", "-c", CHILD], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_repeated_sigterm_ends_a_child_that_ignored_the_first() -> None:
    proc = _child()
    started = time.monotonic()
    stop_process_group(proc, 10.0, repeat=0.2)
    took = time.monotonic() - started
    assert proc.stdout is not None
    proc.stdout.close()
    assert took < 1.5
    assert proc.returncode == 0  # the second SIGTERM, not the SIGKILL


def test_without_repeat_the_ignored_sigterm_waits_for_the_sigkill() -> None:
    proc = _child()
    stop_process_group(proc, 0.5)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None
    proc.stdout.close()
