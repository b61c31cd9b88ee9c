"""Calibration agent: answers every caller utterance with a tone at a known delay.

No speech pipeline: it hears the caller with an energy detector, waits ``DELAYS_S[k]`` after the
last loud frame of the caller's k-th utterance arrived, and sends a 300 ms tone. The caller's
time-to-first-audio minus that delay is the measuring floor (uplink + downlink transport, codec
framing, detection); its spread is the measurement error.
"""

from __future__ import annotations

import asyncio
import time

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


def _dbfs(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64) / 32768.0
    return 20 * np.log10(max(float(np.sqrt(np.mean(x * x))), 1e-6))


async def entrypoint(ctx: JobContext) -> None:
    """Publish a tone-answering microphone and listen to the caller."""
    room = ctx.room
    source = rtc.AudioSource(RATE, 1, queue_size_ms=0)
    track = rtc.LocalAudioTrack.create_audio_track("roomio_audio", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    options.dtx = False
    await room.local_participant.publish_track(track, options)
    pending: list[tuple[float, float]] = []  # (monotonic start time, delay)

    async def speaker() -> None:
        loop = asyncio.get_running_loop()
        start, n, tone_pos = loop.time(), 0, -1
        silence = np.zeros(FRAME, dtype=np.int16)
        while True:
            now = loop.time()
            chunk = silence
            if tone_pos < 0 and pending and now >= pending[0][0]:
                _, delay = pending.pop(0)
                tone_pos = 0
                sent_log.append((time.time(), delay))
            if tone_pos >= 0:
                chunk = _TONE[tone_pos : tone_pos + FRAME]
                tone_pos += FRAME
                if tone_pos >= len(_TONE):
                    tone_pos = -1
                if len(chunk) < FRAME:
                    chunk = np.concatenate([chunk, silence[: FRAME - len(chunk)]])
            await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME))
            n += 1
            delay_s = start + n * 0.01 - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)  # real-time pacing of media

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
