"""Notice when an event loop stops answering, and where it was stuck.

An in-process agent shares the test's event loop: if its code blocks (a synchronous HTTP call,
``time.sleep``, a model loaded in the entrypoint), every wait of the test stalls with it and the
test would end much later in a timeout that blames the wrong thing. A :class:`LoopWatchdog`
thread pings the loop every ``interval`` seconds; when a ping has not been answered for
``threshold`` seconds it takes the loop thread's stack (the line that blocks) and, once,
reports the stall through ``on_block`` with its length once the loop answers again (or at
:meth:`stop`). The caller's media is not affected (it runs in its own process); what is lost
is the agent's time, which the report then names.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoopBlock", "LoopWatchdog"]


@dataclass(frozen=True)
class LoopBlock:
    """One stall of the watched event loop."""

    seconds: float
    """How long the loop did not answer (s), at least the watchdog's threshold."""
    stack: str
    """The loop thread's stack while it was blocked (innermost frame last)."""
    started_at: float
    """``time.monotonic()`` when the loop stopped answering (s)."""

    def where(self) -> str:
        """The innermost frame of the stack that is not in the standard library or asyncio, as
        ``file:line in function``; the last frame if every one is.
        """
        lines = [ln for ln in self.stack.splitlines() if ln.strip().startswith('File "')]
        own = [ln for ln in lines if not any(x in ln for x in ("/asyncio/", "/lib/python3", '"<frozen '))]
        chosen = (own or lines or [""])[-1].strip()
        return chosen.replace('File "', "").replace('", line ', ":").replace(", in ", " in ")


class LoopWatchdog:
    """A daemon thread that reports stalls of ``loop`` longer than ``threshold`` seconds.

    Args:
        loop: the event loop to watch (running in ``loop_thread``).
        on_block: called once per stall with its :class:`LoopBlock`, from the watchdog thread,
            when the loop answers again or the watchdog stops while it is still blocked.
        threshold: seconds without an answer that make a stall (s).
        interval: seconds between pings (s).
        loop_thread: the thread running the loop (default: the thread creating the watchdog).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_block: Callable[[LoopBlock], None],
        *,
        threshold: float = 2.0,
        interval: float = 0.05,
        loop_thread: threading.Thread | None = None,
    ) -> None:
        self.loop = loop
        self.on_block = on_block
        self.threshold = threshold
        self.interval = interval
        self.blocks: list[LoopBlock] = []
        """Every stall seen so far."""
        self._ident = (loop_thread or threading.current_thread()).ident
        self._answered = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pytest-livekit-loop-watchdog", daemon=True)

    def start(self) -> LoopWatchdog:
        """Start watching."""
        self._answered = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (a stall still going on is reported first)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def _pong(self) -> None:  # on the loop
        self._answered = time.monotonic()

    def _run(self) -> None:
        stack: str | None = None
        blocked_since = 0.0
        while not self._stop.wait(self.interval):
            if self.loop.is_closed():
                return
            now = time.monotonic()
            silent = now - self._answered
            if stack is None and silent >= self.threshold:
                blocked_since = self._answered
                frame = sys._current_frames().get(self._ident or -1)  # noqa: SLF001 - the only way to see a stuck thread
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
            elif stack is not None and silent < self.interval * 4:
                self._report(LoopBlock(self._answered - blocked_since, stack, blocked_since))
                stack = None
            try:
                self.loop.call_soon_threadsafe(self._pong)
            except RuntimeError:  # the loop closed under us
                return
        if stack is not None:
            self._report(LoopBlock(time.monotonic() - blocked_since, stack, blocked_since))

    def _report(self, block: LoopBlock) -> None:
        self.blocks.append(block)
        self.on_block(block)
