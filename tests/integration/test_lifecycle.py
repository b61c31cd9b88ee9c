"""No orphan server ever: session end, Ctrl-C, and a SIGKILLed pytest (real server binary)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.processes import process_gone

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
    assert process_gone(server_pid, 15), f"livekit-server {server_pid} survived {how}:\n{out}"
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
    assert process_gone(pid, 5)
    assert "1 passed" in out


PRESTART_CONFTEST = """
import pytest

@pytest.hookimpl(trylast=True)  # after the plugin's own pytest_itemcollected
def pytest_itemcollected(item):
    from pytest_livekit.call.caller import caller_host
    from pytest_livekit.pytest_run.glue import session_for
    server = session_for(item.config).server
    print(f"COLLECTED {item.name} server={server.pid if server is not None else None} "
          f"caller={caller_host().pid}", flush=True)
"""

PRESTART_TESTS = """
import pytest

def test_plain():  # places no call: sets nothing going
    pass

def test_places_call(make_livekit_call, request):
    from pytest_livekit.plugin import SERVER_KEY
    print(f"SERVERPID={request.config.stash[SERVER_KEY].pid}", flush=True)
"""


def _run_prestart(tmp_path: Path, server_binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(PRESTART_CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider",
         f"--livekit-server-binary={server_binary}", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )


def _collected(out: str, name: str) -> tuple[str, str]:
    line = next(x for x in out.splitlines() if f"COLLECTED {name} " in x)
    fields = dict(part.split("=") for part in line.split()[2:])
    return fields["server"], fields["caller"]


def test_server_and_caller_start_while_collection_goes_on(tmp_path: Path, server_binary: Path) -> None:
    """The first test that places a call sets the server and the caller's process going at once
    (the first call then does not wait for them after collection); the call's fixtures use that
    very server, and it is stopped at the end.
    """
    (tmp_path / "test_inner.py").write_text(PRESTART_TESTS)
    result = _run_prestart(tmp_path, server_binary)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert _collected(out, "test_plain") == ("None", "None"), out
    server, caller = _collected(out, "test_places_call")
    assert server != "None" and caller != "None", out
    assert f"SERVERPID={server}" in out, out
    assert process_gone(int(server), 5)
    assert process_gone(int(caller), 5)


def test_collect_only_starts_nothing(tmp_path: Path, server_binary: Path) -> None:
    (tmp_path / "test_inner.py").write_text(PRESTART_TESTS)
    result = _run_prestart(tmp_path, server_binary, "--collect-only")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert _collected(out, "test_places_call") == ("None", "None"), out


def test_prestarted_server_stopped_when_collection_fails(tmp_path: Path, server_binary: Path) -> None:
    """A collection-time error after the prestart (an unknown marker option) ends the run with the
    error, and what the prestart set going is stopped."""
    (tmp_path / "test_inner.py").write_text(
        PRESTART_TESTS + "\n@pytest.mark.livekit(no_such_option=1)\n"
        "def test_bad_marker(make_livekit_call):\n    pass\n"
    )
    result = _run_prestart(tmp_path, server_binary)
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "no_such_option" in out, out
    server, caller = _collected(out, "test_places_call")
    assert server != "None", out
    assert process_gone(int(server), 5)
    assert process_gone(int(caller), 5)
