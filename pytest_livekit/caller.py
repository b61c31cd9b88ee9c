"""The scripted caller: a real ``livekit.rtc`` participant with a microphone and ears.

It publishes a 48 kHz mono microphone track, feeds it continuously in real time (speech when
there is something to say, digital silence otherwise, as a real microphone would), subscribes to
the agent's audio and records both directions on one clock. Timing is taken where the caller sits:
a frame's send time is when it was handed to WebRTC; a heard frame's time is when it came out of
the caller's receive stream.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc

from .audio import CALL_SAMPLE_RATE, ActivityDetector, CallerAudio, Pcm
from .errors import CallTimeoutError
from .record import CallerTurn, CallRecord, HeardSegment

#: Length of each frame the caller sends and receives, in seconds.
FRAME_SECONDS = 0.010
_FRAME_SAMPLES = int(CALL_SAMPLE_RATE * FRAME_SECONDS)

#: A pause between received frames longer than this counts as a receive stall, in seconds.
_STALL_SECONDS = 0.030

#: Participant attribute through which livekit-agents publishes its state.
AGENT_STATE_ATTRIBUTE = "lk.agent.state"


@dataclass
class _Clip:
    pcm: Pcm
    turn: CallerTurn | None
    done: asyncio.Future[CallerTurn | None]
    pos: int = 0
    start_at: float | None = None
    """Call time (s) before which the clip must not start (barge-in scheduling)."""
    lost: Any = None
    """Bool per 10 ms frame: True = not sent (network frame loss at the sender)."""
    delays: Any = None
    """Send delay per 10 ms frame in seconds (jitter of the sent frames)."""
    frame_index: int = 0


@dataclass
class Recording:
    """Both directions of the call, as the caller sent and heard them."""

    sent_frames: list[Pcm] = field(default_factory=list)
    """Every frame handed to WebRTC, contiguous from ``sent_start``."""
    sent_start: float = 0.0
    """Seconds since call start of the first sent frame."""
    heard_frames: list[tuple[float, Pcm]] = field(default_factory=list)
    """``(arrival time in s since call start, frame)`` of every frame received from the agent."""

    def heard_track(self) -> Pcm:
        """Received audio laid on the call timeline (gaps filled with silence)."""
        if not self.heard_frames:
            return np.zeros(0, dtype=np.int16)
        pieces: list[Pcm] = []
        cursor = 0  # samples since call start
        for t, pcm in self.heard_frames:
            # A frame arrives when its 10 ms have been received: it started one frame earlier.
            at = max(0, int(round((t - FRAME_SECONDS) * CALL_SAMPLE_RATE)))
            # Small arrival jitter must not tear the audio: only real gaps (> 30 ms) are filled.
            if at - cursor > int(0.030 * CALL_SAMPLE_RATE):
                pieces.append(np.zeros(at - cursor, dtype=np.int16))
                cursor = at
            pieces.append(pcm)
            cursor += len(pcm)
        return np.concatenate(pieces)

    def sent_track(self) -> Pcm:
        """Sent audio laid on the call timeline."""
        lead = np.zeros(int(round(self.sent_start * CALL_SAMPLE_RATE)), dtype=np.int16)
        return np.concatenate([lead, *self.sent_frames]) if self.sent_frames else lead

    def stereo(self) -> Pcm:
        """``(n, 2)`` int16: left = caller sent, right = agent heard."""
        left, right = self.sent_track(), self.heard_track()
        n = max(len(left), len(right))
        out = np.zeros((n, 2), dtype=np.int16)
        out[: len(left), 0] = left
        out[: len(right), 1] = right
        return out

    def write(self, folder: Path) -> Path:
        """Write ``call.wav`` (stereo), ``caller.wav`` and ``agent.wav`` into ``folder``."""
        import soundfile as sf

        folder.mkdir(parents=True, exist_ok=True)
        stereo = self.stereo()
        for name, data in (("call.wav", stereo), ("caller.wav", stereo[:, 0]), ("agent.wav", stereo[:, 1])):
            # atomic: a reader (or a crash) never sees half a file
            tmp = folder / f".{name}.tmp"
            sf.write(str(tmp), data, CALL_SAMPLE_RATE, subtype="PCM_16", format="WAV")
            tmp.replace(folder / name)
        return folder / "call.wav"


class ScriptedCaller:
    """A caller participant. Use :meth:`connect`, then :meth:`speak`, then :meth:`aclose`.

    Args:
        record: the call record it appends its turns and heard segments to.
        identity: participant identity.
        on_change: called whenever something a waiter may care about changed.
        detector: energy detector for the agent's audio (caller's vantage point).
    """

    def __init__(
        self,
        record: CallRecord,
        *,
        identity: str = "caller",
        on_change: Callable[[], None] | None = None,
        detector: ActivityDetector | None = None,
    ) -> None:
        self.record = record
        self.identity = identity
        # Created here so the rtc Room binds to the running loop (it captures it at construction).
        self.room = rtc.Room()
        self.recording = Recording()
        self.detector = detector or ActivityDetector()
        self._on_change = on_change or (lambda: None)
        self._source = rtc.AudioSource(CALL_SAMPLE_RATE, 1, queue_size_ms=0)
        self._publication: rtc.LocalTrackPublication | None = None
        self._clips: list[_Clip] = []
        self._mic_task: asyncio.Task[None] | None = None
        self._ear_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.agent_identity: str | None = None
        self.agent_audio_subscribed = asyncio.Event()
        self._mic_subscribed = False
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("local_track_subscribed", self._on_local_track_subscribed)
        self.room.on("participant_attributes_changed", self._on_attributes_changed)
        # The agent publishes transcriptions as text streams; read them so the rtc SDK does not
        # log "ignoring text stream" for every segment (the session events carry the text).
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        self.room.on("participant_connected", lambda p: self._on_change())
        self.reconnected = asyncio.Event()
        self.room.on("reconnected", self._on_reconnected)
        self.room.on("participant_disconnected", lambda p: self._on_change())

    # -- state of the far end ---------------------------------------------------------------
    def agent_state(self) -> str | None:
        """The agent's ``lk.agent.state`` attribute as this caller sees it, if known."""
        if self.agent_identity is None:
            return None
        p = self.room.remote_participants.get(self.agent_identity)
        return p.attributes.get(AGENT_STATE_ATTRIBUTE) if p else None

    def now(self) -> float:
        """Seconds since call start."""
        return time.time() - self.record.started_at_epoch

    # -- lifecycle --------------------------------------------------------------------------
    async def connect(self, url: str, token: str, *, max_bitrate_bps: int | None = None) -> None:
        """Join the room and publish the microphone track.

        ``Room.connect`` is never wrapped in a timeout: cancelling it makes the rtc FFI kill the
        process (livekit python-sdks#813). ``connect_timeout`` bounds it instead.
        """
        await self.room.connect(
            url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=10.0)
        )
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        # DTX off: silence is sent as silence, so the agent's VAD sees a steady stream and
        # timings do not depend on the encoder's comfort-noise decisions.
        options.dtx = False
        if max_bitrate_bps is not None:
            # the real Opus encoder setting of the published track (bandwidth condition)
            options.audio_encoding.max_bitrate = int(max_bitrate_bps)
        self._publication = await self.room.local_participant.publish_track(track, options)
        self.recording.sent_start = self.now()
        self._mic_task = asyncio.create_task(self._mic_loop(), name="pytest-livekit-caller-mic")

    async def wait_for_agent(self, agent_identity: str, timeout: float) -> None:
        """Wait until the agent has joined, subscribed to our microphone, published its audio
        (which we subscribed to) and reports ``lk.agent.state == listening``.
        """
        self.agent_identity = agent_identity
        assert self._publication is not None
        changed = asyncio.Event()
        previous = self._on_change

        def wake() -> None:
            changed.set()
            previous()

        self._on_change = wake
        try:
            from .observer import wait_until

            steps: list[tuple[str, Callable[[], bool]]] = [
                ("the agent to join the room", lambda: agent_identity in self.room.remote_participants),
                ("the agent to subscribe to the caller's microphone", self.mic_subscribed),
                ("the agent's audio track", self.agent_audio_subscribed.is_set),
                ("the agent to be listening", lambda: self.agent_state() == "listening"),
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            for what, cond in steps:
                if not await wait_until(cond, changed, max(0.0, deadline - loop.time())):
                    raise CallTimeoutError(
                        f"timed out after {timeout:.0f} s waiting for {what} "
                        f"(agent {agent_identity!r}, state {self.agent_state()!r}).\n"
                        "Hint: check the agent's log section below; the agent must call "
                        "session.start(agent, room=ctx.room)."
                    )
        finally:
            self._on_change = previous

    def mic_subscribed(self) -> bool:
        """True once someone (the agent) subscribed to the caller's microphone."""
        return self._mic_subscribed

    def reset_mic_subscription(self) -> None:
        """Forget the subscription (before a reconnect that re-publishes the microphone)."""
        self._mic_subscribed = False

    def _on_local_track_subscribed(self, track: rtc.Track) -> None:
        # The only other participant is the agent, so the first subscriber is the agent.
        self._mic_subscribed = True
        self._on_change()

    async def aclose(self) -> None:
        """Stop the microphone, fail pending clips, leave the room."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # stats are a bonus; never fail a hang-up on them
            self.record.rtc = await self._rtc_stats()
        self._note_participants()
        if self._mic_task is not None:
            self._mic_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mic_task
        for clip in self._clips:
            if not clip.done.done():
                clip.done.cancel()
        for task in list(self._ear_tasks):
            task.cancel()
        for task in list(self._ear_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close_open_segment()
        await self.room.disconnect()
        await self._source.aclose()

    def _note_participants(self) -> None:
        """Record the room's sid and who was in the call (for the trace), before leaving."""
        info = getattr(self.room, "_info", None)  # Room.sid is async; the info is already here
        if info is not None and info.sid:
            self.record.room_sid = info.sid
        local = self.room.local_participant
        people = [{"identity": local.identity, "sid": local.sid, "role": "caller", "kind": "standard"}]
        for p in self.room.remote_participants.values():
            role = "agent" if p.identity == self.agent_identity else "other"
            kind = rtc.ParticipantKind.Name(p.kind).removeprefix("PARTICIPANT_KIND_").lower()
            people.append({"identity": p.identity, "sid": p.sid, "role": role, "kind": kind})
        known = {(p["identity"], p["sid"]) for p in self.record.participants}
        # a reconnect or an agent that already left: keep everyone seen so far
        self.record.participants += [p for p in people if (p["identity"], p["sid"]) not in known]

    async def _rtc_stats(self) -> dict[str, float]:
        """Receive-side stats of the agent's audio and our round-trip time (W3C units: s).

        Also records the audio codecs in use (``record.media``).
        """
        stats = await self.room.get_rtc_stats()
        out: dict[str, float] = {}
        # With a single peer connection (livekit-server >= 1.9 offers it) every stat is in
        # publisher_stats; otherwise receive stats are in subscriber_stats. Scan both.
        everything = [*stats.publisher_stats, *stats.subscriber_stats]
        used = set()
        for item in everything:
            which = item.WhichOneof("stats")
            if which in ("inbound_rtp", "outbound_rtp"):
                stream = getattr(item, which).stream
                if stream.kind == "audio":
                    used.add(stream.codec_id)
        codecs = {
            item.codec.rtc.id: {
                "mime_type": item.codec.codec.mime_type,
                "clock_rate": item.codec.codec.clock_rate,
                "channels": item.codec.codec.channels,
                "payload_type": item.codec.codec.payload_type,
            }
            for item in everything
            if item.WhichOneof("stats") == "codec" and item.codec.rtc.id in used
        }
        self.record.media = {"codecs": sorted(codecs.values(), key=lambda c: str(c["mime_type"]))}
        for item in everything:
            if item.WhichOneof("stats") == "inbound_rtp":
                rtp = item.inbound_rtp
                if rtp.stream.kind != "audio":
                    continue
                out["packets_received"] = out.get("packets_received", 0.0) + rtp.received.packets_received
                out["packets_lost"] = out.get("packets_lost", 0.0) + rtp.received.packets_lost
                out["jitter"] = max(out.get("jitter", 0.0), rtp.received.jitter)
                out["concealed_samples"] = out.get("concealed_samples", 0.0) + rtp.inbound.concealed_samples
                out["total_samples_received"] = (
                    out.get("total_samples_received", 0.0) + rtp.inbound.total_samples_received
                )
        for item in everything:
            if item.WhichOneof("stats") == "remote_inbound_rtp":
                rtt = item.remote_inbound_rtp.remote_inbound.round_trip_time
                if rtt:
                    out["round_trip_time"] = rtt
        return out

    # -- speaking ---------------------------------------------------------------------------
    def enqueue(
        self,
        audio: CallerAudio,
        *,
        kind: str = "say",
        start_at: float | None = None,
        lost: Any = None,
        delays: Any = None,
        as_turn: bool = True,
        conditions: str = "",
    ) -> asyncio.Future[CallerTurn | None]:
        """Queue a clip on the microphone; the future resolves when its last frame was sent.

        Args:
            audio: the clip (48 kHz mono int16).
            kind: turn kind recorded (``say``, ``barge_in``, ``backchannel``, ``pause``).
            start_at: earliest call time (s) to start it.
            lost: bool per 10 ms frame; True frames are not sent (sender-side frame loss).
            delays: per-10 ms-frame send delays in seconds (jitter).
            as_turn: False for filler audio (silence) that is not a caller turn.
            conditions: description of the conditions applied, saved with the turn.
        """
        turn = None
        if as_turn:
            turn = CallerTurn(
                index=len(self.record.caller_turns),
                source=audio.source,
                text=audio.text,
                started_at=-1.0,
                kind=kind,
                conditions=conditions,
            )
            self.record.caller_turns.append(turn)
        fut: asyncio.Future[CallerTurn | None] = asyncio.get_running_loop().create_future()
        self._clips.append(_Clip(audio.pcm, turn, fut, start_at=start_at, lost=lost, delays=delays))
        return fut

    async def _mic_loop(self) -> None:
        # queue_size_ms=0: frames go straight to WebRTC, so we pace them ourselves against an
        # absolute schedule (no drift), and the send time of each frame is exact.
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        silence = np.zeros(_FRAME_SAMPLES, dtype=np.int16)
        while True:
            chunk = silence
            send = True
            finished: _Clip | None = None
            clip = self._clips[0] if self._clips else None
            if clip is not None and clip.start_at is not None and self.now() < clip.start_at:
                clip = None  # scheduled for later: keep sending silence until then
            if clip is not None:
                if clip.pos == 0 and clip.turn is not None:
                    clip.turn.started_at = self.now()
                    self._on_change()
                i = clip.frame_index
                if clip.delays is not None and i < len(clip.delays) and clip.delays[i] > 0:
                    # jitter: this frame leaves late; later frames catch up (no reordering)
                    await asyncio.sleep(float(clip.delays[i]))
                chunk = clip.pcm[clip.pos : clip.pos + _FRAME_SAMPLES]
                clip.pos += _FRAME_SAMPLES
                clip.frame_index += 1
                if len(chunk) < _FRAME_SAMPLES:
                    chunk = np.concatenate([chunk, silence[: _FRAME_SAMPLES - len(chunk)]])
                if clip.lost is not None and i < len(clip.lost) and clip.lost[i]:
                    send = False
                    self.record.frames_dropped += 1
                self.record.frames_in_turns += 1
                if clip.pos >= len(clip.pcm):
                    finished = self._clips.pop(0)
            if send:
                frame = rtc.AudioFrame(chunk.tobytes(), CALL_SAMPLE_RATE, 1, _FRAME_SAMPLES)
                await self._source.capture_frame(frame)
                self.recording.sent_frames.append(chunk)
            else:
                self.recording.sent_frames.append(silence)  # nothing went on the wire
            if finished is not None:
                if finished.turn is not None:
                    finished.turn.ended_at = self.now()
                if not finished.done.done():
                    finished.done.set_result(finished.turn)
                self._on_change()
            n += 1
            delay = start + n * FRAME_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of media, not synchronisation

    # -- hearing ----------------------------------------------------------------------------
    def _on_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        task = asyncio.create_task(self._drain(reader), name="pytest-livekit-transcription")
        self._ear_tasks.add(task)
        task.add_done_callback(self._ear_tasks.discard)

    async def _drain(self, reader: rtc.TextStreamReader) -> None:
        await reader.read_all()

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        if self.agent_identity is not None and participant.identity != self.agent_identity:
            return
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=CALL_SAMPLE_RATE, num_channels=1, frame_size_ms=10
        )
        task = asyncio.create_task(self._ear_loop(stream), name="pytest-livekit-caller-ear")
        self._ear_tasks.add(task)
        task.add_done_callback(self._ear_tasks.discard)
        self.agent_audio_subscribed.set()
        self._on_change()

    async def _ear_loop(self, stream: rtc.AudioStream) -> None:
        last: float | None = None
        try:
            async for event in stream:
                t = self.now()
                pcm = np.frombuffer(bytes(event.frame.data), dtype=np.int16).copy()
                self.recording.heard_frames.append((t, pcm))
                duration = len(pcm) / CALL_SAMPLE_RATE
                if last is not None and t - last - duration > _STALL_SECONDS:
                    self.record.receive_gaps.append((last, t - last - duration))
                last = t
                was_active = self.detector.active
                closed = self.detector.push(t - duration, duration, pcm)
                if closed is not None:
                    self.record.heard.append(HeardSegment(closed.start, closed.end))
                    self._on_change()
                elif self.detector.active and not was_active:
                    self._on_change()  # onset: time-to-first-audio waiters wake up
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _close_open_segment(self) -> None:
        open_start = self.detector.onset()
        if open_start is not None:
            seg = self.detector.all_segments()[-1]
            self.record.heard.append(HeardSegment(seg.start, seg.end))
            self.detector._open_start = None  # noqa: SLF001 - our own detector

    def heard_segments(self) -> list[HeardSegment]:
        """Closed heard segments plus the one in progress."""
        segs = list(self.record.heard)
        open_start = self.detector.onset()
        if open_start is not None:
            segs.append(HeardSegment(open_start, self.detector.all_segments()[-1].end))
        return segs

    def _on_reconnected(self) -> None:
        self.reconnected.set()
        self._on_change()

    def _on_attributes_changed(
        self, changed: dict[str, str], participant: rtc.Participant
    ) -> None:
        if AGENT_STATE_ATTRIBUTE in changed:
            self._on_change()
