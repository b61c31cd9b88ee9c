"""LivekitCall.abort: a fault found outside the call (the server died, the room was deleted)
fails the call's current wait at once, from any thread, and every later wait. And a call that
never ends fails wait_for_call_end with a message that says what to fix.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pytest_livekit.agent.in_process import AgentTarget
from pytest_livekit.call.livekit_call import LivekitCall
from pytest_livekit.errors import CallLostError, CallTimeoutError, ServerDiedError


class _IdleAgent:
    """The agent side of a call that never fails (only what _guard reads)."""

    def __init__(self) -> None:
        self._failed = asyncio.Event()

    async def wait_until_failed(self) -> None:
        """Never returns: this agent never fails."""
        await self._failed.wait()

    def raise_if_failed(self) -> None:
        """Never raises: this agent never fails."""


async def _never_runs(ctx: object) -> None:
    """The agent of calls that never connect: never started."""
    raise AssertionError("these calls never start their agent")


def _call() -> LivekitCall:
    call = LivekitCall("ws://127.0.0.1:9", "key", "s" * 32, agent=AgentTarget(entrypoint=_never_runs))
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


async def test_a_call_that_never_ends_fails_wait_for_call_end_at_its_timeout() -> None:
    call = _call()
    call._loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(CallTimeoutError) as excinfo:
        await call.wait_for_call_end(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert "the call was still up 0.3 s later: nothing ended it" in str(excinfo.value)
    assert not call._expecting_end  # a later hang-up by the server is a fault again


async def test_a_call_that_never_ends_says_what_to_fix() -> None:
    call = _call()
    call._loop = asyncio.get_running_loop()
    with pytest.raises(CallTimeoutError) as excinfo:
        await call.wait_for_call_end(timeout=0.3)
    message = str(excinfo.value)
    # what did not happen, how an agent ends a call, where to look, and the way out for a slow one
    assert "the room was not deleted and the caller not removed" in message
    assert "ctx.delete_room()" in message and "call.record.tool_calls" in message
    assert "timeout=" in message
    assert "Timeline:" in message
