"""One lifecycle for every process the plugin starts: spawn, wait until ready, stop.

The livekit-server (binary or container), the agent workers and the caller process all follow it
through :class:`ManagedProcess`:

* **spawn** (:func:`spawn`): the child gets its own process group (Ctrl-C reaches pytest only,
  and one ``killpg`` stops the child with everything it started) and ``PR_SET_PDEATHSIG``
  (Linux: the kernel kills it when pytest dies, even by ``kill -9``). A secret of the process
  is refused in its argv: argv is world-readable in ``/proc``.
* **wait until ready** (:meth:`ManagedProcess.wait_until_ready`): readiness is a flag set from
  the child's output (:meth:`ManagedProcess._mark_ready`) or a probe the subclass polls
  (:meth:`ManagedProcess._check_ready`). A process that exits first, or is not ready in time, is
  stopped, and the subclass's error carries its exit code and its redacted log tail.
* **stop** (:meth:`ManagedProcess.stop`): SIGTERM to the group, SIGKILL after a timeout (or
  always, to sweep children that outlive their parent), then the output reader, the pipes and
  the subclass's files.
* **a live registry**: every started process is registered until stopped; :func:`stop_all` is
  the plugin's safety net at Ctrl-C and session end.

Every log tail goes through :mod:`pytest_livekit.redaction`.

Works without pytest; the subclasses are :class:`~pytest_livekit.server.binary.LivekitServer`,
:class:`~pytest_livekit.server.docker.DockerLivekitServer`, :class:`~pytest_livekit.agent.worker.AgentWorker`
and :class:`~pytest_livekit.call.caller.CallerHost`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from pytest_livekit.redaction import redact, redact_bytes

__all__ = [
    "ManagedProcess",
    "live_processes",
    "set_parent_death_signal",
    "spawn",
    "stop_all",
    "stop_process_group",
    "tail_lines",
]

_P = TypeVar("_P", bound="ManagedProcess")

#: Seconds :meth:`ManagedProcess.stop` waits for the output reader to see the end of the output.
_READER_JOIN_TIMEOUT = 5.0
#: Seconds :meth:`ManagedProcess.wait_until_ready` gives the reader to write the last lines of a
#: process that died before it quotes the log (a child of it may keep the output open: not longer).
_DIED_READER_JOIN_TIMEOUT = 1.0
#: Linux ``prctl`` option: the signal this process gets when its parent thread dies.
_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """The C library's ``prctl``, looked up in the parent: the forked child of a threaded parent
    must not take the loader's or the import lock, which another thread may have held at fork time.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGKILL this (child) process when its parent dies (Linux; else no-op).

    Prefer :func:`spawn`, which also closes the race with a parent that died before this call.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_setup(prctl: Callable[..., int] | None, parent: int, nice: int) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the forked child before exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            # The parent may have died between fork and prctl: the signal then never comes.
            if os.getppid() != parent:
                os._exit(1)
        if nice:
            # before exec: every thread the program starts inherits it (Linux's nice is per thread)
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError:  # not permitted (no CAP_SYS_NICE): the default priority
                pass

    return setup


def spawn(
    argv: Sequence[str], *, secrets: Sequence[str] = (), nice: int = 0, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group with the parent-death signal set.

    Args:
        argv: program and arguments; must contain none of ``secrets``.
        secrets: values that must travel another way (environment, a file, standard input).
        nice: the program's nice value, when the system allows it (a negative one needs root or
            ``CAP_SYS_NICE``; refused, the program runs at the default priority).
        popen: further :class:`subprocess.Popen` arguments (``env``, ``cwd``, ``stdin``, ...).

    Raises:
        ValueError: a secret is in ``argv`` (the message does not show it).
    """
    for value in secrets:
        if value and len(value) >= 8 and any(value in arg for arg in argv):
            raise ValueError(
                f"refusing to start {argv[0]!r} with a secret in its arguments (argv is "
                "world-readable in /proc); pass it in the environment, a file or standard input"
            )
    return subprocess.Popen(  # noqa: S603 - argv comes from the plugin, never from a shell
        list(argv),
        # own process group: Ctrl-C goes to pytest only, and one killpg stops the whole tree
        start_new_session=True,
        preexec_fn=_child_setup(_prctl(), os.getpid(), nice),  # noqa: PLW1509 - no imports in the child
        **popen,
    )


def describe_exit(code: int) -> str:
    """How a process ended, from its ``Popen.returncode``: ``"exited with code 1"`` or
    ``"was killed by signal 9 (SIGKILL)"``.
    """
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


def stop_process_group(
    proc: subprocess.Popen[bytes], timeout: float, *, sweep: bool = False, repeat: float | None = None
) -> None:
    """SIGTERM ``proc``'s process group, wait ``timeout`` s, then SIGKILL the group if the leader is
    still alive, or always with ``sweep`` (children that outlive their parent).

    With ``repeat``, SIGTERM is sent again every ``repeat`` seconds while the leader lives (until
    ``timeout``): for a program that ignores a SIGTERM that comes too early (livekit-server just
    after it answers ``GET /``, before it counts itself as running).
    """
    deadline = time.monotonic() + timeout
    alive = True
    while alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        remaining = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(0.0, min(remaining, repeat) if repeat else remaining))
            alive = False
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                break
    if alive or sweep:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


def tail_lines(path: Path | None, lines: int, width: int, secrets: Sequence[str] = ()) -> str:
    """The last ``lines`` lines of a log file, each cut to ``width`` characters, redacted
    (:func:`pytest_livekit.redaction.redact`); ``(no log)`` or ``(empty)`` when there are none.
    """
    if path is None or not path.exists():
        return "(no log)"
    # redact before cutting: a cut through a secret would leave its first characters readable
    text = redact(_read_tail(path, lines), secrets).splitlines()[-lines:]
    return "\n".join(t if len(t) <= width else t[:width] + " …" for t in text) or "(empty)"


def _read_tail(path: Path, lines: int, block: int = 65536) -> str:
    """The end of ``path`` holding at least ``lines`` whole lines: a server logs whole SDPs, and a
    long session's log is far too large to read for thirty lines.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        start = end
        data = b""
        while start > 0 and data.count(b"\n") <= lines:
            start = max(0, start - block)
            f.seek(start)
            data = f.read(end - start)
    if start > 0:
        data = data.split(b"\n", 1)[-1]  # the first line read may be cut
    return data.decode(errors="replace")


class ManagedProcess:
    """A child process of the test run with a start, a readiness wait and a stop.

    Subclasses start it with :meth:`_spawn` (or register a process they run another way with
    :meth:`_register`), and say how readiness shows and how failures read:

    * readiness: call :meth:`_mark_ready` (e.g. from :meth:`_follow_output` on a log line), or
      override :meth:`_check_ready` with a probe polled every :attr:`poll_interval` seconds;
    * failures: :meth:`_died_before_ready` and :meth:`_not_ready_in_time` return the exception;
    * the log: :meth:`_log_source` names the file :meth:`log_tail` reads, :meth:`_secrets` the
      values it redacts;
    * stopping: :meth:`_ask_to_exit` (a gentler first step than SIGTERM), :meth:`_terminate` (a
      process that is not a local child), :meth:`_release` (files and folders).

    Args:
        startup_timeout: seconds :meth:`wait_until_ready` waits by default.
    """

    #: Seconds between readiness probes and exit checks (a process can die while a child it
    #: started keeps its output open, so the end of the output alone is not enough).
    poll_interval: float = 0.1
    #: Seconds :meth:`stop` gives the process between SIGTERM and SIGKILL by default.
    stop_timeout: float = 5.0
    #: SIGKILL the group even after the leader exited (children that outlive their parent).
    sweep_group: bool = False
    #: :func:`stop_all` stops these after the others (a server outlives its clients).
    stops_last: bool = False
    #: Seconds between repeated SIGTERMs while :meth:`stop` waits (None: one SIGTERM).
    term_repeat: float | None = None

    def __init__(self, *, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        """Seconds from spawn to ready, once ready."""
        self.log_error: OSError | None = None
        """Why the process's log file stopped being written (full or read-only disk), if it did."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()
        self._ready = False
        self._started_at: float | None = None
        self._exit_listeners: list[Callable[[str], None]] = []
        self._exit_watch: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- what subclasses say ---------------------------------------------------------------------
    def start(self: _P) -> _P:
        """Start the process and wait until it is ready (each subclass says how)."""
        raise NotImplementedError

    def _log_source(self) -> Path | None:
        """The file :meth:`log_tail` reads."""
        return None

    def _secrets(self) -> list[str]:
        """Values never shown in a log tail nor passed in argv."""
        return []

    def _check_ready(self) -> bool:
        """True once the process is ready (default: :meth:`_mark_ready` was called)."""
        return self._ready

    def _died_before_ready(self, code: int | None) -> BaseException:
        """The error for a process that exited with ``code`` before it was ready."""
        return RuntimeError(
            f"{self!r} exited with code {code} before it was ready.\nLast log lines:\n{self.log_tail()}"
        )

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        """The error for a process still not ready after ``timeout`` seconds."""
        return TimeoutError(
            f"{self!r} was not ready within {timeout:.0f} s.\nLast log lines:\n{self.log_tail()}"
        )

    def _ask_to_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        """A gentler first step of :meth:`stop`; True if the process exited (default: none)."""
        return False

    def _terminate(self, timeout: float) -> subprocess.Popen[bytes] | None:
        """End the process: :meth:`_ask_to_exit`, else SIGTERM then SIGKILL to its group.
        Returns the ended local process, whose pipes :meth:`stop` closes.
        """
        proc, self._proc = self._proc, None
        if proc is not None and not self._ask_to_exit(proc, timeout):
            stop_process_group(proc, timeout, sweep=self.sweep_group, repeat=self.term_repeat)
        return proc

    def _release(self) -> None:
        """Close files and remove folders once the process is gone (default: nothing)."""

    # -- for subclasses --------------------------------------------------------------------------
    def _spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start the process (:func:`spawn`) and register it; if it cannot start, release what
        the subclass prepared (:meth:`stop`) and raise.
        """
        with self._changed:
            self._ready = False
        self._stopping.clear()
        self._register()
        try:
            self._proc = spawn(argv, secrets=self._secrets(), **popen)
        except BaseException:
            self.stop()
            raise
        return self._proc

    def _register(self) -> None:
        """Put this process in the live registry (:func:`stop_all`) until it is stopped; its
        :attr:`startup_seconds` count from now.
        """
        self._started_at = time.monotonic()
        self.startup_seconds = None
        _live.add(self)

    def _mark_ready(self) -> None:
        """Record that the process is ready and wake :meth:`wait_until_ready` (any thread)."""
        with self._changed:
            self._ready = True
            self._changed.notify_all()

    def _follow_output(
        self,
        stream: IO[bytes],
        on_line: Callable[[bytes], None] | None = None,
        *,
        log_to: Path | None = None,
        name: str = "pytest-livekit-output",
    ) -> None:
        """Read ``stream`` in a daemon thread: each line is written (redacted) to ``log_to`` and
        handed to ``on_line``; the end of the output wakes :meth:`wait_until_ready`.
        """

        def read() -> None:
            try:
                with contextlib.ExitStack() as files:
                    log: IO[bytes] | None = None
                    if log_to is not None:
                        try:
                            # unbuffered: a write the disk refused is not retried by close()
                            log = files.enter_context(open(log_to, "wb", buffering=0))
                        except OSError as exc:  # read-only or full: the process runs on unlogged
                            self.log_error = exc
                    for raw in stream:  # drained to the end whatever happens to the log: a
                        # process whose pipe is no longer read blocks on its next log line
                        if log is not None:
                            try:
                                log.write(redact_bytes(raw, self._secrets()))
                            except OSError as exc:  # the disk filled up: stop logging, keep reading
                                self.log_error, log = exc, None
                        if on_line is not None:
                            on_line(raw)
            finally:
                with self._changed:  # the output ended: the process is exiting, look now
                    self._changed.notify_all()

        self._reader = threading.Thread(target=read, name=name, daemon=True)
        self._reader.start()

    def _exit_code(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._proc.poll() if self._proc is not None else None

    # -- public lifecycle ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id while started (None before start and after stop)."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until the process is ready; if it exits first or is not ready within
        ``timeout`` seconds (default :attr:`startup_timeout`), stop it and raise the subclass's
        error (with the exit code and the redacted log tail).
        """
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            while True:
                if self._check_ready():
                    break
                code = self._exit_code()
                if code is not None:
                    # its last lines may still be in the pipe: the error quotes the log, so let
                    # the reader write them first (it ends at the pipe's end, which the exit brings)
                    if self._reader is not None:
                        self._reader.join(timeout=_DIED_READER_JOIN_TIMEOUT)
                    raise self._died_before_ready(code)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._not_ready_in_time(limit)
                with self._changed:
                    if not self._ready:
                        self._changed.wait(min(remaining, self.poll_interval))
        except BaseException:
            self.stop()  # a process that is not ready is never left running (Ctrl-C included)
            raise
        if self.startup_seconds is None and self._started_at is not None:
            self.startup_seconds = time.monotonic() - self._started_at

    def stop(self, timeout: float | None = None) -> None:
        """Stop the process: the subclass's gentle step if any, SIGTERM to its process group,
        SIGKILL after ``timeout`` seconds (default :attr:`stop_timeout`); then close its pipes
        and files. Safe to call twice, and on a process that never started.
        """
        proc: subprocess.Popen[bytes] | None = None
        self._stopping.set()  # an exit from here on is ours: no on_exit callback
        try:
            proc = self._terminate(self.stop_timeout if timeout is None else timeout)
        finally:
            try:
                if self._reader is not None:
                    # after the process: a reader blocked on a pipe we close would never end
                    self._reader.join(timeout=_READER_JOIN_TIMEOUT)
                    self._reader = None
                if proc is not None:
                    for pipe in (proc.stdin, proc.stdout, proc.stderr):
                        if pipe is not None and not pipe.closed:
                            with contextlib.suppress(OSError):
                                pipe.close()
                self._release()
            finally:
                _live.discard(self)

    def on_exit(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(how)`` once, from a watcher thread, if the process ends without
        :meth:`stop` (killed, crashed), ``how`` saying how (``"was killed by signal 9
        (SIGKILL)"``, ``"exited with code 1"``); returns a function that unregisters it.
        """
        self._exit_listeners.append(callback)
        if self._exit_watch is None:
            self._exit_watch = threading.Thread(target=self._watch_exit, name="pytest-livekit-exit-watch", daemon=True)
            self._exit_watch.start()
        return lambda: self._exit_listeners.remove(callback) if callback in self._exit_listeners else None

    def _describe_exit(self, code: int) -> str:
        """How the process ended, for people (see :func:`describe_exit`)."""
        return describe_exit(code)

    def _watch_exit(self) -> None:
        while not self._stopping.wait(self.poll_interval * 2):
            code = self._exit_code()
            if code is None:
                continue
            if self._stopping.is_set():
                return
            how = self._describe_exit(code)
            for callback in list(self._exit_listeners):
                with contextlib.suppress(Exception):  # one listener's bug must not hide the exit
                    callback(how)
            return

    def log_tail(self, lines: int = 30, width: int = 400) -> str:
        """The last ``lines`` lines of the process's log, each cut to ``width`` characters,
        secrets and JWT-shaped strings redacted.
        """
        return tail_lines(self._log_source(), lines, width, self._secrets())

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Safety net for Ctrl-C, internal errors and session end: whatever is still registered here.
_live: set[ManagedProcess] = set()


def live_processes(kind: type[ManagedProcess] = ManagedProcess) -> list[ManagedProcess]:
    """The started, not yet stopped processes of this test process that are ``kind``."""
    return [p for p in list(_live) if isinstance(p, kind)]


def stop_all(kind: type[ManagedProcess] = ManagedProcess, *, timeout: float | None = None) -> None:
    """Stop every live process of ``kind`` (default: all), servers last; with ``timeout``, each
    gets that long between SIGTERM and SIGKILL, else its own :attr:`ManagedProcess.stop_timeout`.

    Every process is stopped even if one stop fails; the first failure is raised after.
    """
    first: BaseException | None = None
    for proc in sorted(live_processes(kind), key=lambda p: p.stops_last):
        try:
            proc.stop(timeout)
        except Exception as exc:  # keep stopping the others: nothing may outlive the session
            first = first or exc
    if first is not None:
        raise first
