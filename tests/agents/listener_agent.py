"""A listening-only agent: joins, hears the caller, says nothing.

It decodes the caller's audio like any agent and keeps what it received (in this process), so
integration tests can check that a caller condition really reached the agent through the server.
"""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents import JobContext

#: room name -> received 48 kHz mono int16 frames, in arrival order.
received: dict[str, list[np.ndarray]] = {}
#: room name -> set once the first frame arrived (the agent's receive stats exist from then on).
first_frame: dict[str, asyncio.Event] = {}


async def entrypoint(ctx: JobContext) -> None:
    """Subscribe to the caller's microphone and keep every received frame."""
    room = ctx.room
    frames = received.setdefault(room.name, [])
    arrived = first_frame.setdefault(room.name, asyncio.Event())
    tasks: set[asyncio.Task[None]] = set()

    async def listen(track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=48_000, num_channels=1, frame_size_ms=10)
        async for event in stream:
            frames.append(np.frombuffer(bytes(event.frame.data), dtype=np.int16).copy())
            arrived.set()

    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.add(asyncio.create_task(listen(track)))

    room.on("track_subscribed", on_track)
    for participant in room.remote_participants.values():
        for pub in participant.track_publications.values():
            if pub.track is not None:
                on_track(pub.track, pub, participant)
    # A (silent) microphone of its own: callers wait for the agent's audio track before talking.
    source = rtc.AudioSource(48_000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("roomio_audio", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    await room.local_participant.set_attributes({"lk.agent.state": "listening"})

    async def stop(reason: str) -> None:
        for task in tasks:
            task.cancel()

    ctx.add_shutdown_callback(stop)
