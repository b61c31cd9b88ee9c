"""An agent that stalls whatever runs beside it: it blocks its event loop for 300 ms every
500 ms and keeps a thread that holds the GIL (usleep through ``ctypes.PyDLL``) half the time.

In in-process mode this is the test's own event loop and process: the caller (in its own
process) must not notice.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time

from livekit import rtc
from livekit.agents import JobContext


def _hold_gil(stop: threading.Event) -> None:
    libc = ctypes.PyDLL(None)  # PyDLL keeps the GIL during the call
    libc.usleep.argtypes = [ctypes.c_uint]
    while not stop.is_set():
        libc.usleep(50_000)
        time.sleep(0.05)


async def entrypoint(ctx: JobContext) -> None:
    """Publish a (silent) microphone, mark itself listening, then stall the loop and hold the GIL
    until the call ends.
    """
    await ctx.connect()  # a no-op in-process; a dispatched job must connect itself
    source = rtc.AudioSource(48_000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("roomio_audio", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, options)
    stop = threading.Event()
    threading.Thread(target=_hold_gil, args=(stop,), daemon=True).start()
    await ctx.room.local_participant.set_attributes({"lk.agent.state": "listening"})

    async def block() -> None:
        while True:
            await asyncio.sleep(0.2)
            time.sleep(0.3)  # blocks the event loop (a synchronous decode, say)

    task = asyncio.create_task(block())

    async def finish(reason: str) -> None:
        task.cancel()
        stop.set()

    ctx.add_shutdown_callback(finish)
