"""Calibration agent: answers every caller utterance with a tone at a known delay.

No speech pipeline: it hears the caller with an energy detector, waits ``DELAYS_S[k]`` after the
last loud frame of the caller's k-th utterance arrived, and sends a 300 ms tone. The caller's
time-to-first-audio minus that delay is the measuring floor (uplink + downlink transport, codec
framing, detection); its spread is the measurement error.

:func:`working_entrypoint` is the same agent doing what a hand-written local STT does: it blocks
its event loop with CPU work (40 ms every 200 ms) and runs a thread that holds the GIL (30 ms of
every 50 ms, like a C extension that decodes without releasing it). Its answers are late by
whatever those stalls cost; each answer's real send time (``time.monotonic()``, the clock every
process of the machine shares) is appended to the file named by ``PYTEST_LIVEKIT_CALIBRATION_LOG``
so that a test can compare the caller's measurement with what really happened.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import threading
import time
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import JobContext

#: Delay before the answer tone, per caller utterance (cycled), in seconds.
DELAYS_S = (0.2, 0.5, 0.8, 1.1)
RATE = 48_000
FRAME = 480  # 10 ms
_TONE = (0.25 * 32767 * np.sin(2 * np.pi * 660 * np.arange(int(0.3 * RATE)) / RATE)).astype(np.int16)
#: Frame level above which the caller counts as speaking, dBFS.
_THRESHOLD_DBFS = -40.0
#: Quiet frames after which an utterance counts as ended.
_QUIET_FRAMES = 8

sent_log: list[tuple[float, float]] = []
"""(wall time the answer tone's first frame was sent, the delay used) per answer."""
#: Environment variable naming a file that gets one JSON line per answer:
#: ``{"room": name, "sent": monotonic s of the answer's first frame, "delay": s}``.
LOG_ENV = "PYTEST_LIVEKIT_CALIBRATION_LOG"
#: Event-loop stall of the working agent: CPU seconds per block, seconds between blocks.
LOOP_BLOCK_S, LOOP_EVERY_S = 0.040, 0.200
#: GIL hold of the working agent's thread: seconds held, seconds per cycle.
GIL_HOLD_S, GIL_EVERY_S = 0.030, 0.050


def _log_answer(room: str, sent: float, delay: float) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        line = json.dumps({"room": room, "sent": sent, "delay": delay}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one short write with O_APPEND: lines never interleave
        finally:
            os.close(fd)


def _burn(seconds: float) -> None:
    """Pure-Python CPU work (holds the GIL, as interpreted code does)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def _hold_gil_forever(stop: threading.Event) -> None:
    # usleep called through PyDLL keeps the GIL while it waits: a C extension that does not
    # release it (many hand-written STT bindings) looks exactly like this to other threads.
    libc = ctypes.PyDLL(None)
    libc.usleep.argtypes = [ctypes.c_uint]
    while not stop.is_set():
        libc.usleep(int(GIL_HOLD_S * 1e6))
        time.sleep(GIL_EVERY_S - GIL_HOLD_S)


async def working_entrypoint(ctx: JobContext) -> None:
    """The tone agent, stalling its own event loop and holding the GIL from a thread meanwhile."""
    stop = threading.Event()
    thread = threading.Thread(target=_hold_gil_forever, args=(stop,), name="gil-holder", daemon=True)
    thread.start()

    async def block_loop() -> None:
        while True:
            await asyncio.sleep(LOOP_EVERY_S)
            _burn(LOOP_BLOCK_S)  # blocks the event loop, like decoding in a coroutine

    blocker = asyncio.create_task(block_loop())

    async def stop_work(reason: str) -> None:
        blocker.cancel()
        stop.set()

    ctx.add_shutdown_callback(stop_work)
    await entrypoint(ctx)


def _dbfs(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64) / 32768.0
    return 20 * float(np.log10(max(float(np.sqrt(np.mean(x * x))), 1e-6)))


async def entrypoint(ctx: JobContext) -> None:
    """Publish a tone-answering microphone and listen to the caller."""
    await ctx.connect()  # a no-op in-process; a dispatched job must connect itself
    room = ctx.room
    source = rtc.AudioSource(RATE, 1, queue_size_ms=1000)
    track = rtc.LocalAudioTrack.create_audio_track("roomio_audio", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    options.dtx = False
    await room.local_participant.publish_track(track, options)
    pending: list[tuple[float, float]] = []  # (monotonic start time, delay)
    wake = asyncio.Event()

    async def speaker() -> None:
        # As livekit-agents' audio output does: the answer goes into the source's queue at once
        # and the rtc library plays it out in real time on its own thread, so a stalled event
        # loop cannot tear the answer apart once it started.
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            wake.clear()
            while pending:
                due, delay = pending[0]
                if loop.time() < due:
                    await asyncio.sleep(due - loop.time())  # the answer's known delay
                pending.pop(0)
                sent_log.append((time.time(), delay))
                _log_answer(room.name, time.monotonic(), delay)
                for i in range(0, len(_TONE), FRAME):
                    chunk = _TONE[i : i + FRAME]
                    await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, len(chunk)))

    async def listener(stream: rtc.AudioStream) -> None:
        loop = asyncio.get_running_loop()
        loud_run, quiet, last_loud, utterances = 0, 0, None, 0
        async for event in stream:
            pcm = np.frombuffer(bytes(event.frame.data), dtype=np.int16)
            if _dbfs(pcm) > _THRESHOLD_DBFS:
                loud_run += 1
                quiet = 0
                if loud_run >= 3:
                    last_loud = loop.time()
            else:
                loud_run = 0
                quiet += 1
                if last_loud is not None and quiet == _QUIET_FRAMES:
                    delay = DELAYS_S[utterances % len(DELAYS_S)]
                    pending.append((last_loud + delay, delay))
                    wake.set()
                    utterances += 1
                    last_loud = None

    tasks: set[asyncio.Task[None]] = {asyncio.create_task(speaker())}

    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            stream = rtc.AudioStream.from_track(track=track, sample_rate=RATE, num_channels=1, frame_size_ms=10)
            tasks.add(asyncio.create_task(listener(stream)))

    room.on("track_subscribed", on_track)
    for participant in room.remote_participants.values():
        for pub in participant.track_publications.values():
            if pub.track is not None:
                on_track(pub.track, pub, participant)
    await room.local_participant.set_attributes({"lk.agent.state": "listening"})

    async def stop(reason: str) -> None:
        for task in tasks:
            task.cancel()

    ctx.add_shutdown_callback(stop)


def answer_offsets(record: object, t0: float, log_path: str | os.PathLike[str]) -> list[float | None]:
    """Per caller turn: the caller's TTFA minus the agent's real answer delay, in seconds.

    The real answer delay is the agent's send time of its answer (``time.monotonic()`` in the
    agent's process, read from the log) minus the end of the caller's speech (the caller's
    monotonic clock, ``t0`` + ``speech_ended_at``): one clock, two processes. What remains is the
    downlink (agent's WebRTC send to the caller's ears) plus the measuring error; ``None`` where
    the turn got no answer or no TTFA.
    """
    from pytest_livekit.metrics.turns import time_to_first_audio

    rec: Any = record
    answers = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            answers = [json.loads(line) for line in f if line.strip()]
    sent = [a["sent"] for a in answers if a["room"] == rec.call_id]
    out: list[float | None] = []
    for k, turn in enumerate(rec.caller_turns):
        ttfa = time_to_first_audio(rec, k)
        end = turn.speech_ended_at if turn.speech_ended_at is not None else turn.ended_at
        if ttfa is None or end is None or k >= len(sent):
            out.append(None)
            continue
        out.append(ttfa - (sent[k] - (t0 + end)))
    return out


def answer_errors(offsets: list[float]) -> list[float]:
    """Per scored answer, the measuring error in seconds: the distance from its offset to the
    nearest offset of the answer before or after it.

    The downlink is not one constant per call: the agent's send path and the caller's jitter
    buffer re-settle now and then, and each answer after that arrives a steady 10-60 ms later or
    earlier (seen in CI: 45, 37, 97, 67 ms plateaus in one call, each 2+ answers long). That is
    real latency the caller hears, not a measuring error, so an error against the call's median
    would count it. A caller that mis-times answers (a stalled caller process: 15-30 ms of random
    error per answer) has no close neighbour and scores its full error here; a one-answer
    excursion does too.
    """
    if len(offsets) < 2:
        return [0.0 for _ in offsets]
    out = []
    for i, o in enumerate(offsets):
        near = [abs(o - offsets[j]) for j in (i - 1, i + 1) if 0 <= j < len(offsets)]
        out.append(min(near))
    return out
