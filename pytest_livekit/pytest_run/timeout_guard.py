"""pytest-timeout for tests that place calls: a clear failure, the call's artifacts kept.

pytest-timeout (``@pytest.mark.timeout``, ``--timeout``) has two methods, and neither fits an
asyncio test that holds a call:

* ``thread``: a timer thread dumps the stacks and calls ``os._exit(1)``. Nothing after it runs:
  no teardown, so the call's recording and trace were lost. The plugin takes the timer over (its
  ``pytest_timeout_set_timer`` hook): when it fires, the test's calls are written from their
  records (``call.wav`` up to now, ``call.json``, ``trace.json`` with outcome ``timeout``) on the
  timer's thread, never through the event loop (which may be the thing that is stuck), bounded by
  :data:`WRITE_BOUND_SECONDS`; then pytest-timeout's own handler dumps the stacks and exits. The
  server, the caller process and the workers die with pytest (``PR_SET_PDEATHSIG``).
* ``signal``: SIGALRM raises pytest's ``Failed`` in whatever the main thread runs. With asyncio
  that is usually the event loop: inside a callback or another task's step, asyncio logs the
  exception and goes on, and the test runs on (measured: a 6 s timeout, a test that ran its full
  30 s and passed). The plugin's handler does what asyncio's own Ctrl-C handling does
  (``asyncio.Runner``): it cancels the task the loop is running for pytest (the test body, or a
  fixture's setup / teardown) and wakes the loop; the test's ``async with`` blocks and the
  fixtures then close the call normally, and the phase fails with pytest-timeout's message
  (``Timeout (>Ns) from pytest-timeout``) and where the test was waiting. If the main thread is
  running that task's own code (a blocking call in the test body), the exception is raised there,
  as pytest-timeout does. If the task has not ended :data:`GRACE_SECONDS` after being cancelled
  (something else blocks the loop), the exception is raised wherever the main thread is.

Tests that place no call keep pytest-timeout's own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import linecache
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pytest_livekit.pytest_run.keys import CALL_KEY, SERVER_KEY, SETTINGS_KEY

__all__ = [
    "GRACE_SECONDS",
    "PHASE_KEY",
    "TIMED_OUT_KEY",
    "WRITE_BOUND_SECONDS",
    "TimedOut",
    "set_timer",
    "timed_out_in",
]

#: Seconds the thread method spends at most writing the calls' artifacts before pytest-timeout's
#: handler ends the process (a stuck disk must not keep a timed-out run alive).
WRITE_BOUND_SECONDS = 10.0
#: Seconds the signal method waits for the cancelled test task to end before raising pytest's
#: exception wherever the main thread is (pytest-timeout's own behaviour).
GRACE_SECONDS = 15.0
#: Times the signal method looks again (every 0.1 s) for a point where the loop passes its
#: exception on, after the grace.
SAFE_POINT_RETRIES = 50
#: Lines of the test's await chain shown in the failure.
CHAIN_LINES = 12


@dataclasses.dataclass
class TimedOut:
    """The plugin's pytest-timeout handler fired for this test."""

    message: str
    """The failure message (starts with pytest-timeout's ``Timeout (>Ns) from pytest-timeout``)."""
    phase: str
    """``setup``, ``call`` or ``teardown``: the phase that was running."""


TIMED_OUT_KEY = pytest.StashKey[TimedOut]()
"""On the item: set when the timeout fired."""
PHASE_KEY = pytest.StashKey[str]()
"""On the item: the phase running now (set by the plugin's hooks)."""


def timed_out_in(item: pytest.Item, phase: str) -> str | None:
    """The timeout's failure message if it fired in ``phase`` of ``item``, else None."""
    fired = item.stash.get(TIMED_OUT_KEY, None)
    return fired.message if fired is not None and fired.phase == phase else None


# -- the timer ------------------------------------------------------------------------------------


def fail_if_timed_out(item: pytest.Item, exc: BaseException | None) -> None:
    """Fail the test's call phase with the timeout's message when pytest-timeout's signal method
    cancelled the test's task (``exc`` is then ``CancelledError``, or ``None`` when the test
    caught it and returned); any other exception is the test's own and is left alone.
    """
    message = timed_out_in(item, "call")
    if message is not None and (exc is None or type(exc).__name__ == "CancelledError"):
        raise pytest.fail.Exception(message, pytrace=False) from None


def set_timer(item: pytest.Item, settings: Any) -> bool:
    """Start the test's timeout (pytest-timeout's ``pytest_timeout_set_timer``): the method's
    timer, with ``item.cancel_timeout`` set for pytest-timeout's own cancel hook.
    """
    started = time.monotonic()
    method = settings.method
    if method == "signal" and threading.current_thread() is not threading.main_thread():
        method = "thread"  # as pytest-timeout: SIGALRM reaches the main thread only
    if method == "signal":
        _SignalTimer(item, settings, started).start()
    else:
        timer = threading.Timer(settings.timeout, _thread_fired, (item, settings, started))
        timer.name = f"pytest_livekit.pytest_run.timeout_guard {item.nodeid}"
        timer.daemon = True

        def cancel() -> None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()

        item.cancel_timeout = cancel  # type: ignore[attr-defined]
        timer.start()
    return True


def _debugging(settings: Any) -> bool:
    """pytest-timeout's rule: no timeout while a debugger is attached (unless disabled)."""
    if getattr(settings, "disable_debugger_detection", False):
        return False
    import pytest_timeout

    return bool(pytest_timeout.is_debugging())


# -- the thread method ------------------------------------------------------------------------------


def _thread_fired(item: pytest.Item, settings: Any, started: float) -> None:
    """The timer thread: write the calls' artifacts (bounded), say so, hand over to pytest-timeout
    (stacks, ``os._exit(1)``).
    """
    if _debugging(settings):
        return
    written: list[str] = []
    main = threading.main_thread()
    frame = sys._current_frames().get(main.ident or -1)  # noqa: SLF001 - the only way to see another thread's stack
    writer = threading.Thread(
        target=_write_calls, args=(item, settings, "thread", started, frame, written),
        name="pytest-livekit-timeout-artifacts", daemon=True,
    )
    writer.start()
    writer.join(WRITE_BOUND_SECONDS)
    if writer.is_alive():
        written.append(
            f"livekit: writing the call's artifacts took over {WRITE_BOUND_SECONDS:.0f} s; the process "
            "ends without them (is the artifacts disk stuck?)"
        )
    _say(item, written)
    try:
        import pytest_timeout

        pytest_timeout.timeout_timer(item, settings)  # dumps the stacks, then os._exit(1)
    finally:  # a pytest-timeout without it, or one that returned: end as the thread method does
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _write_calls(
    item: pytest.Item, settings: Any, method: str, started: float, frame: FrameType | None, out: list[str]
) -> None:
    """Write every call of the test with outcome ``timeout``; ``out`` gets the lines to show."""
    try:
        message = _message(item, settings, method, frame)
        out.append(message)
        from pytest_livekit.outputs.artifacts import finish_interrupted_call

        outcome = {
            "outcome": "timeout",
            "phase": _phase(item),
            "message": message,
            "duration_s": round(time.monotonic() - started, 3),
            "rootdir": str(getattr(item.config.stash.get(SETTINGS_KEY, None), "rootdir", item.config.rootpath)),
        }
        placed: list[Any] = item.stash.get(CALL_KEY, [])
        for call in list(placed):
            try:
                summary, _ = finish_interrupted_call(call, nodeid=item.nodeid, outcome=outcome, secrets=_secrets(item))
            except Exception as exc:  # one call's failure must not cost the others theirs
                out.append(f"livekit: could not write {call.record.artifacts_dir}: {type(exc).__name__}: {exc}")
                continue
            if summary.get("artifacts_error"):
                out.append(f"livekit: {call.record.artifacts_dir}: {summary['artifacts_error']}")
    except Exception as exc:  # never stand between the timeout and the process's end
        out.append(f"livekit: could not write the call's artifacts: {type(exc).__name__}: {exc}")


def _say(item: pytest.Item, lines: list[str]) -> None:
    """Write past pytest's capture to the terminal, before pytest-timeout's stack dump."""
    with contextlib.suppress(Exception):
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.suspend_global_capture(in_=True)
        terminal = item.config.get_terminal_writer()
        terminal.line()
        terminal.sep("+", title="livekit: pytest-timeout")
        for line in lines:
            terminal.line(line)
        terminal.flush()


# -- the signal method ------------------------------------------------------------------------------


class _SignalTimer:
    """SIGALRM for one test: cancel the task the loop runs for pytest; if it has not ended after
    the grace, raise pytest's exception at the next point where the loop would pass it on.
    """

    def __init__(self, item: pytest.Item, settings: Any, started: float) -> None:
        self.item = item
        self.settings = settings
        self.started = started
        self.message = ""
        self.task: asyncio.Task[Any] | None = None
        self.fired = False
        self.retries = 0

    def start(self) -> None:
        """Install the handler and arm the timer; ``item.cancel_timeout`` undoes both."""
        signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, self.settings.timeout)
        self.item.cancel_timeout = self.cancel  # type: ignore[attr-defined]

    def cancel(self) -> None:
        """Stop the timer and restore the default SIGALRM action (as pytest-timeout's cancel)."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        if not self.fired:
            if _debugging(self.settings):
                return
            self.fired = True
            self._timed_out(frame)
        else:
            self._grace_over(frame)

    def _timed_out(self, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        task = self.task = _running_task(frame)
        self.message = _message(self.item, self.settings, "signal", frame, task=task)
        self.item.stash[TIMED_OUT_KEY] = TimedOut(self.message, _phase(self.item))
        if task is None:  # not in an event loop: raise here, as pytest-timeout does
            pytest.fail(self.message, pytrace=False)
        loop = task.get_loop()
        self._arm_grace(task)
        if asyncio.current_task(loop) is task:
            # the task's own code runs (a blocking call): the exception ends this very task
            pytest.fail(self.message, pytrace=True)
        # what asyncio.Runner does on Ctrl-C: cancel the main task, wake the loop
        task.cancel(msg="pytest-timeout")
        loop.call_soon_threadsafe(lambda: None)

    def _arm_grace(self, task: asyncio.Task[Any]) -> None:
        signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)
        # the task ended: no second signal (the phase's teardown may take a while)
        task.add_done_callback(lambda _: signal.setitimer(signal.ITIMER_REAL, 0))

    def _grace_over(self, frame: FrameType | None) -> None:
        """The cancelled task has not ended (it swallowed the cancellation, or something blocks
        the loop): raise pytest's exception, but only where the loop passes it on (its selector,
        or the task's own code); elsewhere (another task, a callback) asyncio would log it and go
        on, so try again shortly, a bounded number of times.
        """
        __tracebackhide__ = True
        task = self.task
        if task is None or task.done():
            return
        safe = _idle(frame) or asyncio.current_task(task.get_loop()) is task
        if not safe and self.retries < SAFE_POINT_RETRIES:
            self.retries += 1
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            return
        self.task = None  # once
        pytest.fail(
            self.message + f"\n(The test did not end within {GRACE_SECONDS:.0f} s of being cancelled: "
            "it caught the cancellation, or something blocks the event loop.)", pytrace=False,
        )


# -- what the failure says ---------------------------------------------------------------------------


def _phase(item: pytest.Item) -> str:
    return item.stash.get(PHASE_KEY, "setup")


def _running_task(frame: FrameType | None) -> asyncio.Task[Any] | None:
    """The task ``run_until_complete`` waits for in the main thread's stack ending at ``frame``
    (pytest-asyncio runs the test body and each async fixture's setup and teardown so).
    """
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run_until_complete" and frame.f_globals.get("__name__") == "asyncio.base_events":
            with contextlib.suppress(Exception):
                future = frame.f_locals.get("future")
                if isinstance(future, asyncio.Task) and not future.done():
                    return future
            return None
        frame = frame.f_back
    return None


def _where(frame: Any, rootdir: Path) -> str:
    code = frame.f_code
    path = Path(code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(rootdir)
    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return f"{path}:{frame.f_lineno} in {code.co_name}" + (f": {source}" if source else "")


def _await_chain(task: asyncio.Task[Any], rootdir: Path) -> list[str]:
    """Where ``task`` waits: its coroutine, what that awaits, and so on down."""
    lines: list[str] = []
    obj: Any = task.get_coro()
    frame: Any = None
    for _ in range(64):
        inner = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if inner is None and frame is not None:
            # an async generator's __anext__() (pytest-asyncio's fixture setup and teardown) does
            # not say which generator it drives: the awaiting frame holds it
            inner = next((
                v.ag_frame for v in frame.f_locals.values()
                if inspect.isasyncgen(v) and v.ag_running and v.ag_frame is not None
            ), None)
            obj = next((v for v in frame.f_locals.values() if inspect.isasyncgen(v) and v.ag_frame is inner), None)
        if inner is None:
            break
        frame = inner
        lines.append(_where(frame, rootdir))
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
    if len(lines) > CHAIN_LINES:  # the test's own lines and the innermost wait matter most
        lines = lines[: CHAIN_LINES // 2] + ["..."] + lines[-(CHAIN_LINES // 2) :]
    return lines


def _idle(frame: FrameType | None) -> bool:
    """True when the main thread waits in the event loop's selector (the loop is idle)."""
    return frame is not None and frame.f_code.co_name == "select" and frame.f_code.co_filename.endswith("selectors.py")


def _message(
    item: pytest.Item, settings: Any, method: str, frame: FrameType | None, task: asyncio.Task[Any] | None = None
) -> str:
    """What broke (the timeout, the test, the phase), where the test was, what is kept, what to do."""
    import pytest_timeout

    rootdir = Path(str(item.config.rootpath))
    phase = _phase(item)
    head = pytest_timeout.PYTEST_FAILURE_MESSAGE % settings.timeout  # "Timeout (>Ns) from pytest-timeout."
    placed: list[Any] = item.stash.get(CALL_KEY, [])
    calls = list(placed)
    lines = [f"{head[:-1]} ({method} method): {item.nodeid} ran over {settings.timeout:g} s, in its {phase}."]
    if task is None:
        task = _running_task(frame)
    chain = _await_chain(task, rootdir) if task is not None else []
    if chain:
        lines.append("It was waiting at:")
        lines += [f"  {line}" for line in chain]
    if frame is not None and not _idle(frame):
        lines.append(f"The main thread was running: {_where(frame, rootdir)}")
    for call in calls:
        folder = call.record.artifacts_dir
        now = ""
        with contextlib.suppress(Exception):
            now = f", {call.caller.now():.1f} s into the call" if call.caller is not None else ""
        last = call.record.script[-1] if call.record.script else None
        step = f"; its last step: {last['action']} at {last.get('t', 0):.2f} s" if last else ""
        lines.append(f"Call {call.room_name}{now}{step}.")
        if folder:
            lines.append(
                f"  Kept in {folder}: call.wav (the recording up to the timeout), call.json, trace.json "
                "(outcome \"timeout\"). Replay: python -m pytest_livekit replay " + str(folder)
            )
    if method == "thread":
        lines.append(
            "The thread method ends pytest at once (os._exit): no teardown, no later test, no report; "
            "the server, caller process and workers end with it. Look at the stacks below for where "
            "each thread was."
        )
    lines.append(
        "Hint: bound the wait that hung (wait_for_agent_reply(timeout=...), join_timeout=), or raise "
        "the test's timeout (@pytest.mark.timeout(seconds))"
        + ("; method=\"signal\" fails only this test and the session goes on." if method == "thread" else ".")
    )
    return "\n".join(lines)


def _secrets(item: pytest.Item) -> list[str]:
    """The strings a trace must not contain (as :func:`~pytest_livekit.pytest_run.call_results.finish_test_call`)."""
    server = item.config.stash.get(SERVER_KEY, None)
    settings = item.config.stash.get(SETTINGS_KEY, None)
    out = [str(getattr(server, "api_secret", "") or "")]
    if settings is not None:
        out.append(str(settings.api_secret.value or ""))
    return [s for s in out if s]
