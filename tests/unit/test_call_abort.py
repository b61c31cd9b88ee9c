"""LivekitCall.abort: a fault found outside the call (the server died, the room was deleted)
fails the call's current wait at once, from any thread, and every later wait.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pytest_livekit.call import LivekitCall
from pytest_livekit.errors import CallLostError, ServerDiedError


class _IdleAgent:
    """The agent side of a call that never fails (only what _guard reads)."""

    def __init__(self) -> None:
        self._failed = asyncio.Event()

    async def wait_until_failed(self) -> None:
        """Never returns: this agent never fails."""
        await self._failed.wait()

    def raise_if_failed(self) -> None:
        """Never raises: this agent never fails."""


def _call() -> LivekitCall:
    call = LivekitCall("ws://127.0.0.1:9", "key", "s" * 32, agent="tests.agents.starter_agent:server")
    call.agent = _IdleAgent()  # type: ignore[assignment]
    return call


async def test_abort_from_another_thread_ends_the_current_wait_at_once() -> None:
    call = _call()
    call._loop = asyncio.get_running_loop()
    timer = threading.Timer(0.1, call.abort, args=(ServerDiedError("livekit-server exited (SIGKILL)"),))
    timer.start()
    started = time.monotonic()
    with pytest.raises(ServerDiedError, match="SIGKILL"):
        await call._guard(asyncio.sleep(30))
    assert time.monotonic() - started < 2.0
    # later waits fail at once too, with the first error
    call.abort(CallLostError("room deleted"))
    with pytest.raises(ServerDiedError):
        await call._guard(asyncio.sleep(30))


async def test_a_wait_that_finishes_is_not_disturbed() -> None:
    call = _call()
    call._loop = asyncio.get_running_loop()
    assert await call._guard(asyncio.sleep(0.01, result="done")) == "done"
