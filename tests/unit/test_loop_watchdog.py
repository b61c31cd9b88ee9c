"""LoopWatchdog: a loop that stops answering is reported once, with its length and the line."""

from __future__ import annotations

import asyncio
import threading
import time

from pytest_livekit.agent.loop_watchdog import LoopBlock, LoopWatchdog


def _block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # the blocking call the report must point at


async def test_a_stall_is_reported_once_with_its_length_and_line() -> None:
    seen: list[LoopBlock] = []
    done = threading.Event()

    def on_block(block: LoopBlock) -> None:
        seen.append(block)
        done.set()

    dog = LoopWatchdog(asyncio.get_running_loop(), on_block, threshold=0.3).start()
    try:
        await asyncio.sleep(0.2)
        _block_the_loop_for(0.8)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(done.wait, 2.0)
    finally:
        dog.stop()
    assert len(seen) == 1
    assert 0.7 <= seen[0].seconds <= 1.2
    assert "_block_the_loop_for" in seen[0].stack
    assert "test_loop_watchdog.py" in seen[0].where() and "_block_the_loop_for" in seen[0].where()


async def test_short_hiccups_are_not_stalls() -> None:
    seen: list[LoopBlock] = []
    dog = LoopWatchdog(asyncio.get_running_loop(), seen.append, threshold=0.5).start()
    try:
        for _ in range(5):
            _block_the_loop_for(0.1)
            await asyncio.sleep(0.05)
    finally:
        dog.stop()
    assert seen == []


async def test_a_stall_still_going_at_stop_is_reported() -> None:
    seen: list[LoopBlock] = []
    dog = LoopWatchdog(asyncio.get_running_loop(), seen.append, threshold=0.2).start()
    _block_the_loop_for(0.5)
    dog.stop()  # called from the blocked loop itself, before it answers again
    assert len(seen) == 1 and seen[0].seconds >= 0.4
