"""The process lifecycle (:mod:`pytest_livekit.server.process`) with a tiny ``python -c`` child: ready
line, death before ready, timeout, stop escalating to SIGKILL, the registry and the log tail."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_livekit.server.process import ManagedProcess, live_processes, spawn, stop_all, tail_lines

SECRET = "s3cr3t-value-0123456789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYWxsZXIifQ.c2lnbmF0dXJlLXZhbHVl"


class DiedError(Exception):
    pass


class SlowError(Exception):
    pass


class Child(ManagedProcess):
    """A ``python -c`` child, ready when it prints ``ready``; its output is its log."""

    def __init__(self, code: str, log: Path, *, startup_timeout: float = 10.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.code = code
        self.log = log

    def start(self) -> Child:
        proc = self._spawn(
            [sys.executable, "-u", "-c", self.code],
            env={**os.environ, "CHILD_SECRET": SECRET},  # a secret travels in the environment
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        self._follow_output(proc.stdout, self._line, log_to=self.log)
        self.wait_until_ready()
        return self

    def _line(self, raw: bytes) -> None:
        if raw.strip() == b"ready":
            self._mark_ready()

    def _log_source(self) -> Path | None:
        return self.log

    def _secrets(self) -> list[str]:
        return [SECRET]

    def _died_before_ready(self, code: int | None) -> BaseException:
        return DiedError(f"died with code {code}:\n{self.log_tail()}")

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return SlowError(f"not ready within {timeout:.1f} s:\n{self.log_tail()}")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def _nothing_left() -> object:
    yield
    stop_all()
    assert live_processes() == []


def test_ready_line_starts_and_stop_ends_the_process(tmp_path: Path) -> None:
    child = Child("print('hello'); print('ready'); import time; time.sleep(60)", tmp_path / "c.log")
    with child:
        assert child.is_running()
        assert child in live_processes(Child)
        assert child.startup_seconds is not None and child.startup_seconds < 10
        pid = child.pid
        assert pid is not None and os.getpgid(pid) == pid  # its own process group
    assert _gone(pid)
    assert child.pid is None and not child.is_running()
    assert live_processes() == []
    assert "hello" in child.log_tail()


def test_death_before_ready_reports_code_and_redacted_tail(tmp_path: Path) -> None:
    code = f"import os; print('token {JWT} key', os.environ['CHILD_SECRET']); print('boom'); raise SystemExit(3)"
    child = Child(code, tmp_path / "c.log")
    with pytest.raises(DiedError) as info:
        child.start()
    text = str(info.value)
    assert "died with code 3" in text and "boom" in text
    assert SECRET not in text and JWT not in text and "[redacted]" in text
    assert SECRET not in (tmp_path / "c.log").read_text()  # the log on disk is redacted too
    assert live_processes() == [] and child.pid is None


class SlowReader(Child):
    """A child whose log lines are handled slowly (a busy machine): the reader lags its output."""

    def _line(self, raw: bytes) -> None:
        time.sleep(0.2)  # not a wait for anything: the reader's own slowness
        super()._line(raw)


def test_the_error_of_a_death_quotes_its_last_lines_even_when_the_reader_lags(tmp_path: Path) -> None:
    # seen in CI: a server that printed its fatal error and exited at once was reported with an
    # empty log, its lines still in the pipe
    child = SlowReader("print('starting'); print('FATAL bad config'); raise SystemExit(3)", tmp_path / "c.log")
    with pytest.raises(DiedError) as info:
        child.start()
    assert "starting" in str(info.value) and "FATAL bad config" in str(info.value)


def test_not_ready_in_time_is_stopped_and_says_so(tmp_path: Path) -> None:
    child = Child("print('starting'); import time; time.sleep(60)", tmp_path / "c.log", startup_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SlowError, match="not ready within 0.5 s") as info:
        child.start()
    assert time.monotonic() - started < 8
    assert "starting" in str(info.value)
    assert live_processes() == [] and child.pid is None


def test_death_is_seen_while_a_grandchild_keeps_the_output_open(tmp_path: Path) -> None:
    # the grandchild inherits stdout: the end of the output never comes, the exit code does
    code = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);"
        " raise SystemExit(4)"
    )
    child = Child(code, tmp_path / "c.log", startup_timeout=20)
    started = time.monotonic()
    with pytest.raises(DiedError, match="died with code 4"):
        child.start()
    assert time.monotonic() - started < 10


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    child = Child(code, tmp_path / "c.log").start()
    proc = child._proc
    assert proc is not None
    started = time.monotonic()
    child.stop(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 8
    assert proc.returncode == -signal.SIGKILL


def test_sweep_kills_children_that_outlive_the_leader(tmp_path: Path) -> None:
    class Sweeping(Child):
        sweep_group = True

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time;"
        " p = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
        " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'], stdout=subprocess.DEVNULL);"
        f" open({str(pid_file)!r}, 'w').write(str(p.pid)); print('ready'); time.sleep(60)"
    )
    Sweeping(code, tmp_path / "c.log").start().stop(timeout=2)
    assert _gone(int(pid_file.read_text()))


def test_stop_all_stops_every_live_process(tmp_path: Path) -> None:
    code = "print('ready'); import time; time.sleep(60)"
    children = [Child(code, tmp_path / f"c{i}.log").start() for i in range(2)]
    pids = [c.pid for c in children]
    assert set(live_processes(Child)) == set(children)
    stop_all(Child)
    assert live_processes() == []
    assert all(pid is not None and _gone(pid) for pid in pids)


def test_stop_is_safe_before_start_and_twice(tmp_path: Path) -> None:
    child = Child("print('ready')", tmp_path / "c.log")
    child.stop()
    child.start()
    child.stop()
    child.stop()


def test_a_program_that_cannot_start_is_not_registered(tmp_path: Path) -> None:
    class Missing(Child):
        def start(self) -> Missing:
            self._spawn([str(tmp_path / "no-such-program")])
            return self

    with pytest.raises(FileNotFoundError):
        Missing("", tmp_path / "c.log").start()
    assert live_processes() == []


def test_startup_seconds_count_from_spawn_to_the_first_ready(tmp_path: Path) -> None:
    child = Child("import time; time.sleep(0.3); print('ready'); time.sleep(60)", tmp_path / "c.log").start()
    first = child.startup_seconds
    assert first is not None and first >= 0.3
    time.sleep(0.1)
    child.wait_until_ready()  # waiting again (a caller per call) changes nothing
    assert child.startup_seconds == first
    child.stop()


def test_stop_all_stops_servers_last(tmp_path: Path) -> None:
    order: list[str] = []

    class Client(Child):
        def _release(self) -> None:
            order.append("client")

    class Server(Child):
        stops_last = True

        def _release(self) -> None:
            order.append("server")

    code = "print('ready'); import time; time.sleep(60)"
    Server(code, tmp_path / "s.log").start()
    Client(code, tmp_path / "c.log").start()
    stop_all()
    assert order == ["client", "server"]


def test_spawn_refuses_a_secret_in_argv() -> None:
    with pytest.raises(ValueError, match="secret") as info:
        spawn([sys.executable, "-c", "pass", f"--key={SECRET}"], secrets=[SECRET])
    assert SECRET not in str(info.value)


def test_parent_death_signal_kills_the_child_with_its_parent(tmp_path: Path) -> None:
    # the "parent" spawns through spawn() and is then SIGKILLed, as a crashed pytest would be
    pid_file = tmp_path / "child.pid"
    parent_code = (
        "import sys, time; from pytest_livekit.server.process import spawn;"
        " p = spawn([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f" open({str(pid_file)!r}, 'w').write(str(p.pid)); print('ready', flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == b"ready"
        child_pid = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        assert _gone(child_pid)
    finally:
        parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()


def test_tail_lines_cuts_long_lines_and_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i} " + "x" * 500 + "\n" for i in range(2000)) + f"last {SECRET}\n")
    tail = tail_lines(log, 3, 20, [SECRET]).splitlines()
    assert tail == ["line 1998 xxxxxxxxxx …", "line 1999 xxxxxxxxxx …", "last [redacted]"]
    assert tail_lines(tmp_path / "absent.log", 3, 20) == "(no log)"
    (tmp_path / "empty.log").write_text("")
    assert tail_lines(tmp_path / "empty.log", 3, 20) == "(empty)"


def test_on_exit_reports_a_kill_but_not_a_stop(tmp_path: Path) -> None:
    import threading

    from pytest_livekit.server.process import describe_exit

    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exited with code 3"
    for kill in (True, False):
        proc = Child("print('ready'); import time; time.sleep(60)", tmp_path / "c.log").start()
        seen: list[str] = []
        done = threading.Event()

        def record_exit(how: str, seen: list[str] = seen, done: threading.Event = done) -> None:
            seen.append(how)
            done.set()

        proc.on_exit(record_exit)
        if kill:
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            assert done.wait(5.0)
            assert seen == ["was killed by signal 9 (SIGKILL)"]
        else:
            proc.stop()
            assert not done.wait(1.0) and seen == []
        proc.stop()
