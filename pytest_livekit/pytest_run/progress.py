"""The progress line: which call, which turn, how long it has run — while a call runs.

On a terminal the line rewrites itself in place after pytest's own progress output and is erased
before pytest prints the test's result, so the normal layout is untouched. Elsewhere (a CI log)
it prints one line per script step instead, and only when asked (``--livekit-progress=on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import IO, Any

#: Seconds between redraws of the elapsed time on a terminal.
TICK_S = 0.5
_MAX_TEXT = 70


def describe_step(label: str, action: str, turn: int, arguments: dict[str, Any], elapsed_s: float) -> str:
    """One status text, e.g. ``livekit ▸ test_refund · turn 2 · 4.3 s · say 'I want a refund…'``.

    Args:
        label: the call's name (test name and call type).
        action: the script step (``say``, ``wait_for_agent_reply``, ...).
        turn: caller turns so far (the one being said counts once it starts).
        arguments: the step's arguments (``text`` is shown, shortened).
        elapsed_s: seconds since the call started.
    """
    what = action.replace("_", " ")
    text = arguments.get("text")
    if text:
        short = text if len(text) <= 32 else text[:31].rstrip() + "…"
        what = f"{what} {short!r}"
    step = f"turn {turn}" if turn else "connected"
    # elapsed before the step text: on a narrow terminal the text is what gets cut
    return f"livekit ▸ {label} · {step} · {elapsed_s:.1f} s · {what}"


class ProgressLine:
    """A status line on a terminal stream, redrawn in place with backspaces.

    Backspaces (not carriage returns) erase only what this line wrote, so whatever pytest printed before
    it on the same line (the test id, the dots) stays.

    Args:
        stream: the terminal (pytest's own output stream, not the captured ``sys.stdout``).
        width: the terminal's width in columns; the text is cut to fit.
    """

    def __init__(self, stream: IO[str], *, width: int = 80) -> None:
        self._stream = stream
        self._width = max(20, width)
        self._shown = 0

    def show(self, text: str, column: int = 0) -> None:
        """Replace the current status with ``text`` (cut to the room left after ``column``)."""
        room = max(10, self._width - column - 2)
        text = " " + (text if len(text) <= room else text[: room - 1] + "…")
        pad = max(0, self._shown - len(text))
        self._stream.write("\b" * self._shown + text + " " * pad + "\b" * pad)
        self._stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        """Erase the status (the cursor ends where it was before the first :meth:`show`)."""
        if self._shown:
            n = self._shown
            self._stream.write("\b" * n + " " * n + "\b" * n)
            self._stream.flush()
            self._shown = 0


class CallProgress:
    """Feeds one call's script steps to a :class:`ProgressLine` (in place) or to ``write_line``
    (one line per step), with a ticking elapsed time while the call waits.

    Args:
        label: shown first (test name and call type).
        line: the in-place line, or ``None`` for line-per-step output.
        write_line: where line-per-step output goes.
        column: the terminal column the status starts at (what pytest already wrote).
        uncaptured: a context in which writes reach the terminal while pytest captures the
            test's output (pytest's ``CaptureManager.global_and_fixture_disabled``).
    """

    def __init__(
        self,
        label: str,
        *,
        line: ProgressLine | None = None,
        write_line: Callable[[str], None] | None = None,
        column: Callable[[], int] = lambda: 0,
        uncaptured: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.label = label
        self._line = line
        self._write_line = write_line
        self._column = column
        self._last: tuple[str, int, dict[str, Any]] = ("connected", 0, {})
        self._started = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._done = False
        self._uncaptured = uncaptured

    def __call__(self, call: Any, action: str, turn: int, arguments: dict[str, Any]) -> None:
        """The :attr:`LivekitCall.on_progress` callback."""
        if self._done:
            return
        self._last = (action, turn, arguments)
        if self._line is None:
            if self._write_line is not None:
                with self._uncaptured():
                    self._write_line(self._text())
            return
        self._redraw()
        if self._ticker is None:
            with contextlib.suppress(RuntimeError):  # no running loop: no ticking, still shown
                self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def _text(self) -> str:
        action, turn, arguments = self._last
        return describe_step(self.label, action, turn, arguments, time.monotonic() - self._started)

    async def _tick(self) -> None:
        while not self._done and self._line is not None:
            await asyncio.sleep(TICK_S)  # a display refresh period, not synchronisation
            if not self._done:
                self._redraw()

    def _redraw(self) -> None:
        if self._line is not None:
            with self._uncaptured():
                self._line.show(self._text(), self._column())

    def close(self) -> None:
        """Stop ticking and erase the line (before pytest writes the test's result)."""
        self._done = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._line is not None:
            with self._uncaptured():
                self._line.clear()
