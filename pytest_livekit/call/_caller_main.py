"""The caller's own process: every caller's media runs here, where no agent code can stall it.

``python -m pytest_livekit.call._caller_main SOCKET`` listens on a Unix socket (in a private folder) and
prints ``ready`` once everything is imported. Each connection is one caller: a real
``livekit.rtc`` participant with a microphone paced in real time, ears that timestamp every frame
the moment it arrives, the energy detector, and the RemoteSession observer of the agent's session
events. The test process drives it over the connection (see :mod:`pytest_livekit.call.caller`) and
receives every frame with its time, so an agent that blocks the test's event loop or holds its GIL
changes neither what the caller sends nor when, nor the times it records.

Clock: ``time.monotonic()`` (``CLOCK_MONOTONIC``, shared by every process of the machine), as
seconds since the call's time zero chosen by the test process. Frames are placed on a 10 ms grid
of that clock: slot ``k`` covers ``[k * 10 ms, (k + 1) * 10 ms)``. A sent frame's slot is the one
in which it was handed to WebRTC; a received frame's slot is the one that ends when it arrived.

The process exits when its standard input closes (the test process ended) and, on Linux, when its
parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from pytest_livekit.audio import CALL_SAMPLE_RATE, ActivityDetector, rms_dbfs
from pytest_livekit.call._caller_wire import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    LATE_SECONDS,
    Channel,
    SlotClock,
    describe_priority,
    raise_priority,
)
from pytest_livekit.call.observer import (
    SessionObserver,  # imported before the priority is raised (it is heavy)
)
from pytest_livekit.call.record import CallRecord, HeardSegment
from pytest_livekit.call.rtc_stats import audio_rtc_stats, relay_only_config
from pytest_livekit.conditions.network import NetworkPath
from pytest_livekit.conditions.packet_relay import PacketRelay

#: Participant attribute through which livekit-agents publishes its state.
AGENT_STATE_ATTRIBUTE = "lk.agent.state"
#: Record lists the observer fills and this process forwards as they grow.
_OBSERVED = ("state_changes", "transcripts", "items", "tool_calls", "handoffs", "errors")
#: Frames per batch sent to the test process (100 ms: small enough to lose little on a crash).
_BATCH_FRAMES = 10
#: This process's packet relay, when the session's server runs behind one (``cmd_relay_start``).
_RELAY: PacketRelay | None = None
#: A pause between received frames longer than this counts as a receive stall, in seconds.
_STALL_SECONDS = 0.030


@dataclass
class _Clip:
    clip_id: int
    pcm: np.ndarray[Any, np.dtype[np.int16]]
    turn: int | None
    start_at: float | None
    lost: list[bool] | None
    delays: list[float] | None
    pos: int = 0
    frame_index: int = 0
    started_at: float | None = None
    speech_end: float | None = None
    frames: int = 0
    dropped: int = 0
    late: list[tuple[float, float]] = field(default_factory=list)


class CallerSession:
    """One caller, driven by the test process over ``channel``."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.room: rtc.Room | None = None
        self.t0 = 0.0  # monotonic time of the call's time zero
        self.agent_identity: str | None = None
        self.detector = ActivityDetector()
        self.clips: list[_Clip] = []
        self.mic_subscribed = False
        self.agent_audio = False
        self.reconnects = 0
        self.record: CallRecord | None = None
        self._sent_slots: list[int] = []
        self._sent_pcm: list[bytes] = []
        self._heard_slots: list[int] = []
        self._heard_pcm: list[bytes] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forwarded = dict.fromkeys(_OBSERVED, 0)
        self._observer: Any = None
        self._source: rtc.AudioSource | None = None
        self._mic_task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_state: dict[str, Any] | None = None
        self._sent_clock = SlotClock()
        self._heard_clock = SlotClock()
        self._links: set[str] = set()

    # -- plumbing -----------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the call's time zero on the caller's monotonic clock."""
        return time.monotonic() - self.t0

    def send(self, *message: Any) -> None:
        """Queue a message to the test process (never blocks the media loops)."""
        self.channel.send(message)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def state(self) -> None:
        """Send what the far end looks like now (agent state, who is here, subscriptions)."""
        room = self.room
        if room is None:
            return
        agents = [
            p.identity
            for p in room.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ]
        agent_state = None
        if self.agent_identity is not None:
            p = room.remote_participants.get(self.agent_identity)
            agent_state = p.attributes.get(AGENT_STATE_ATTRIBUTE) if p else None
        snapshot = {
            "agent_state": agent_state,
            "agents": agents,
            "participants": sorted(room.remote_participants),
            "mic_subscribed": self.mic_subscribed,
            "agent_audio": self.agent_audio,
            "reconnects": self.reconnects,
        }
        if snapshot != self._last_state:
            self._last_state = snapshot
            self.send("state", snapshot)

    def _forward_observed(self) -> None:
        record = self.record
        if record is None:
            return
        for name in _OBSERVED:
            items = getattr(record, name)
            done = self._forwarded[name]
            if len(items) > done:
                self.send("observed", name, items[done:])
                self._forwarded[name] = len(items)

    # -- commands -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve commands until the test process closes the connection or says ``close``."""
        try:
            while True:
                message = await self.channel.recv()
                if message is None:
                    break
                request_id, command, args = message
                try:
                    result = await getattr(self, f"cmd_{command}")(**args)
                except Exception:  # report, never die: the test process decides
                    self.send("reply", request_id, False, traceback.format_exc())
                else:
                    self.send("reply", request_id, True, result)
                if command == "close":
                    break
        finally:
            await self._shutdown()
            await self.channel.drain_and_close()

    async def cmd_connect(
        self,
        url: str,
        token: str,
        t0: float,
        epoch0: float,
        agent_identity: str | None,
        max_bitrate_bps: int | None,
        ice_servers: list[dict[str, Any]] | None = None,
        links: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Join the room, publish the microphone and start it (silence until a clip is queued)."""
        self.t0 = t0
        self.agent_identity = agent_identity
        for link in links or []:  # before anything of this call reaches the relay
            await self.cmd_shape_network(**link)
        self.record = CallRecord(call_id="", call_type=None, started_at_epoch=epoch0)
        room = self.room = rtc.Room()
        self._observer = SessionObserver(
            room, self.record, agent_identity=agent_identity, on_change=self._forward_observed
        )
        # Before connect: session events that arrive with no handler are dropped.
        await self._observer.start()
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("local_track_subscribed", self._on_local_track_subscribed)
        room.on("participant_attributes_changed", lambda changed, p: self.state())
        room.on("participant_connected", lambda p: self.state())
        room.on("participant_disconnected", lambda p: self.state())
        room.on("reconnected", self._on_reconnected)
        # the server ending our connection (room deleted, participant removed, shutdown) must
        # reach the test at once, not as a timeout of whatever it waits for next
        room.on("disconnected", self._on_disconnected)
        # The agent publishes transcriptions as text streams; read them so the rtc SDK does not
        # log "ignoring text stream" for every segment (the session events carry the text).
        room.register_text_stream_handler("lk.transcription", self._on_transcription)
        # Room.connect is never wrapped in a timeout: cancelling it makes the rtc FFI kill the
        # process (livekit python-sdks#813). connect_timeout bounds it instead.
        # a shaped caller reaches the server only through the packet relay's TURN address
        rtc_config = relay_only_config(ice_servers) if ice_servers else None
        await room.connect(url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=10.0, rtc_config=rtc_config))
        self._source = rtc.AudioSource(CALL_SAMPLE_RATE, 1, queue_size_ms=0)
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        # DTX off: silence is sent as silence, so the agent's VAD sees a steady stream and
        # timings do not depend on the encoder's comfort-noise decisions.
        options.dtx = False
        if max_bitrate_bps is not None:
            options.audio_encoding.max_bitrate = int(max_bitrate_bps)
        await room.local_participant.publish_track(track, options)
        self._mic_task = asyncio.create_task(self._mic_loop(), name="pytest-livekit-caller-mic")
        self.state()
        return {"connected_at": self.now()}

    async def cmd_set_agent(self, identity: str) -> None:
        """Follow ``identity`` as the agent (worker mode learns it after the dispatch)."""
        self.agent_identity = identity
        if self._observer is not None:
            self._observer.set_agent_identity(identity)
        self.state()

    async def cmd_enqueue(
        self,
        clip_id: int,
        pcm: bytes,
        turn: int | None,
        start_at: float | None,
        lost: list[bool] | None,
        delays: list[float] | None,
    ) -> None:
        """Queue a clip on the microphone (``clip_done`` follows when its last frame left)."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        self.clips.append(_Clip(clip_id, samples, turn, start_at, lost, delays))

    async def cmd_reset_mic_subscription(self) -> None:
        """Forget the agent's subscription (before a reconnect that re-publishes the mic)."""
        self.mic_subscribed = False
        self.state()

    async def cmd_reconnect(self, kind: str) -> None:
        """Drop and re-establish the connection (rtc ``simulate_scenario``)."""
        assert self.room is not None
        kinds = {
            "full": rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT,
            "signal": rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT,
        }
        await self.room.simulate_scenario(kinds[kind])

    async def cmd_close(self) -> dict[str, Any]:
        """Stop the microphone and leave; returns what only the room knows (stats, people) and
        what the packet relay did to this call's links.
        """
        out: dict[str, Any] = {"rtc": {}, "media": {}, "participants": [], "room_sid": "", "network": {}}
        if self.room is not None:
            with contextlib.suppress(Exception):  # stats are a bonus; never fail a hang-up on them
                out["rtc"], out["media"] = await self._rtc_stats()
            out["room_sid"], out["participants"] = self._participants()
        await self._shutdown()
        out["network"] = self._release_links()
        return out

    # -- the packet relay (one per process, shared by every call; see packet_relay) ------------
    async def cmd_relay_start(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        """Start this process's packet relay (idempotent for the same addresses)."""
        global _RELAY
        if _RELAY is not None:
            if _RELAY.listen == tuple(listen) and _RELAY.upstream == tuple(upstream):
                return
            _RELAY.close()
            _RELAY = None
        _RELAY = await PacketRelay((listen[0], int(listen[1])), (upstream[0], int(upstream[1]))).start()

    async def cmd_relay_info(self) -> dict[str, Any]:
        """The relay's own counters: flows seen, packets passed unshaped, socket errors."""
        if _RELAY is None:
            return {"running": False}
        return {
            "running": True, "flows": sorted(_RELAY.flows()), "passed": _RELAY.passed,
            "errors": _RELAY.errors, "links": sorted(_RELAY.links), "received": dict(_RELAY.received),
        }

    async def cmd_shape_network(self, link: str, path: dict[str, Any], usernames: list[str]) -> None:
        """Shape, by ``path`` (a ``NetworkPath.to_dict()``), the flows that authenticate to the
        relayed TURN server with one of ``usernames``; the link is released when this call closes.
        """
        if _RELAY is None:
            raise RuntimeError("the packet relay is not running in the caller's process")
        _RELAY.add_link(link, NetworkPath.from_dict(path), usernames=usernames)
        self._links.add(link)

    async def cmd_network_outage(self, link: str, direction: str, seconds: float) -> None:
        """Drop a link's packets in ``direction`` for ``seconds`` from now."""
        if _RELAY is None or link not in _RELAY.links:
            raise RuntimeError(f"no shaped network link {link!r}")
        _RELAY.outage(link, direction, seconds)

    async def cmd_network_stats(self) -> dict[str, Any]:
        """The wire stats of this call's links so far."""
        if _RELAY is None:
            return {}
        return {name: _RELAY.links[name].stats() for name in self._links if name in _RELAY.links}

    def _release_links(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if _RELAY is not None:
            for name in sorted(self._links):
                stats = _RELAY.remove_link(name)
                if stats is not None:
                    out[name] = stats
        self._links.clear()
        return out

    # -- lifecycle ----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._mic_task is not None:
            self._mic_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mic_task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        open_start = self.detector.onset()
        if open_start is not None:
            seg = self.detector.all_segments()[-1]
            self.send("heard_closed", seg.start, seg.end)
        self._flush("sent")
        self._flush("heard")
        if self._observer is not None:
            with contextlib.suppress(Exception):
                await self._observer.aclose()
            self._forward_observed()
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.disconnect()
        if self._source is not None:
            with contextlib.suppress(Exception):
                await self._source.aclose()

    def _participants(self) -> tuple[str, list[dict[str, Any]]]:
        assert self.room is not None
        room = self.room
        info = getattr(room, "_info", None)  # Room.sid is async; the info is already here
        sid = info.sid if info is not None and info.sid else ""
        local = room.local_participant
        people = [{"identity": local.identity, "sid": local.sid, "role": "caller", "kind": "standard"}]
        for p in room.remote_participants.values():
            role = "agent" if p.identity == self.agent_identity else "other"
            kind = rtc.ParticipantKind.Name(p.kind).removeprefix("PARTICIPANT_KIND_").lower()
            people.append({"identity": p.identity, "sid": p.sid, "role": role, "kind": kind})
        return sid, people

    async def _rtc_stats(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Receive-side stats of the agent's audio, our round-trip time and the codecs in use."""
        assert self.room is not None
        return audio_rtc_stats(await self.room.get_rtc_stats())

    async def _sample_jitter_buffer(self, segment_start: float) -> None:
        """Send the receiver's cumulative jitter-buffer counters for the agent's audio.

        Read when a heard segment opens and when it closes: the difference between the two is the
        time that segment's samples spent in the jitter buffer (real latency the caller hears,
        which WebRTC re-adapts during a call).
        """
        if self.room is None:
            return
        try:
            stats = await self.room.get_rtc_stats()
        except Exception:  # stats are a diagnostic: a call never fails on them
            return
        delay = emitted = target = 0.0
        for item in [*stats.publisher_stats, *stats.subscriber_stats]:
            if item.WhichOneof("stats") != "inbound_rtp" or item.inbound_rtp.stream.kind != "audio":
                continue
            inbound = item.inbound_rtp.inbound
            delay += inbound.jitter_buffer_delay
            emitted += inbound.jitter_buffer_emitted_count
            target += inbound.jitter_buffer_target_delay
        self.send("jitter_buffer", segment_start, self.now(), delay, emitted, target)

    # -- the microphone -----------------------------------------------------------------------
    async def _mic_loop(self) -> None:
        # queue_size_ms=0: frames go straight to WebRTC, so we pace them ourselves against an
        # absolute schedule on the 10 ms grid (no drift), and each frame's send time is exact.
        assert self._source is not None
        source = self._source
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        slot = math.ceil(self.now() / FRAME_SECONDS)
        jitter_until = 0.0  # a jitter-delayed frame left then; frames due before catch up
        while True:
            due = slot * FRAME_SECONDS
            wait = due - self.now()
            if wait > 0:
                await asyncio.sleep(wait)  # real-time pacing of media, not synchronisation
            chunk = silence
            send = True
            finished: _Clip | None = None
            clip = self.clips[0] if self.clips else None
            if clip is not None and clip.start_at is not None and self.now() < clip.start_at:
                clip = None  # scheduled for later: keep sending silence until then
            if clip is not None:
                i = clip.frame_index
                if clip.delays is not None and i < len(clip.delays) and clip.delays[i] > 0:
                    # jitter: this frame leaves late; later frames catch up (no reordering)
                    await asyncio.sleep(float(clip.delays[i]))  # the condition's delay itself
                    jitter_until = self.now()
                chunk = clip.pcm[clip.pos : clip.pos + FRAME_SAMPLES]
                clip.pos += FRAME_SAMPLES
                clip.frame_index += 1
                if len(chunk) < FRAME_SAMPLES:
                    chunk = np.concatenate([chunk, silence[: FRAME_SAMPLES - len(chunk)]])
                if clip.lost is not None and i < len(clip.lost) and clip.lost[i]:
                    send = False
                    clip.dropped += 1
                clip.frames += 1
                if clip.pos >= len(clip.pcm):
                    finished = self.clips.pop(0)
            t_send = self.now()
            sent_slot = self._sent_clock.place(t_send)
            late = t_send - max(due, jitter_until)
            if late > LATE_SECONDS:
                self.send("late", "send", due, late)
            if clip is not None:
                if clip.started_at is None:
                    clip.started_at = sent_slot * FRAME_SECONDS
                    if clip.turn is not None:
                        self.send("turn_started", clip.turn, clip.started_at)
                if send and rms_dbfs(chunk) > self.detector.threshold_dbfs:
                    clip.speech_end = (sent_slot + 1) * FRAME_SECONDS
            if send:
                frame = rtc.AudioFrame(chunk.tobytes(), CALL_SAMPLE_RATE, 1, FRAME_SAMPLES)
                await source.capture_frame(frame)
                self._sent_slots.append(sent_slot)
                self._sent_pcm.append(chunk.tobytes())
                if len(self._sent_slots) >= _BATCH_FRAMES:
                    self._flush("sent")
            if finished is not None:
                # the clip's last frames before its end: whoever wakes on clip_done sees them all
                self._flush("sent")
                self.send(
                    "clip_done",
                    finished.clip_id,
                    finished.turn,
                    {
                        "started_at": finished.started_at,
                        "ended_at": (sent_slot + 1) * FRAME_SECONDS,
                        "speech_ended_at": finished.speech_end,
                        "frames": finished.frames,
                        "dropped": finished.dropped,
                    },
                )
            slot += 1

    def _flush(self, side: str) -> None:
        slots = self._sent_slots if side == "sent" else self._heard_slots
        pcm = self._sent_pcm if side == "sent" else self._heard_pcm
        if slots:
            self.send("frames", side, list(slots), b"".join(pcm))
            slots.clear()
            pcm.clear()

    # -- the ears -----------------------------------------------------------------------------
    def _on_local_track_subscribed(self, track: rtc.Track) -> None:
        # The only other participant is the agent, so the first subscriber is the agent.
        self.mic_subscribed = True
        self.state()

    def _on_disconnected(self, reason: Any) -> None:
        try:
            name = rtc.DisconnectReason.Name(reason)
        except Exception:  # an int the SDK's enum does not know
            name = str(reason)
        self.send("disconnected", name)

    def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.state()

    def _on_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        self._spawn(reader.read_all(), "pytest-livekit-transcription")

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
        self._spawn(self._ear_loop(stream), "pytest-livekit-caller-ear")
        self.agent_audio = True
        self.state()

    async def _ear_loop(self, stream: rtc.AudioStream) -> None:
        last: float | None = None
        try:
            async for event in stream:
                t = self.now()
                pcm = np.frombuffer(bytes(event.frame.data), dtype=np.int16)
                duration = len(pcm) / CALL_SAMPLE_RATE
                # a frame arrives when its 10 ms have been received: it fills the slot that ends now
                slot = self._heard_clock.place(t - duration)
                self._heard_slots.append(slot)
                self._heard_pcm.append(pcm.tobytes())
                if len(self._heard_slots) >= _BATCH_FRAMES:
                    self._flush("heard")
                if last is not None:
                    gap = t - last - duration
                    if gap > _STALL_SECONDS:
                        self.send("receive_gap", last, gap)
                    if gap > LATE_SECONDS:
                        self.send("late", "receive", t - duration, gap)
                last = t
                was_active = self.detector.active
                closed = self.detector.push(slot * FRAME_SECONDS, FRAME_SECONDS, pcm)
                if closed is not None:
                    self._flush("heard")  # the whole segment is in the recording before its end
                    self.send("heard_closed", closed.start, closed.end)
                    self._spawn(self._sample_jitter_buffer(closed.start), "pytest-livekit-jitter-buffer")
                elif self.detector.active and not was_active:
                    onset = self.detector.onset()
                    if onset is not None:  # always, once active: the segment it opens has a start
                        self.send("heard_onset", onset)  # time-to-first-audio waiters wake up
                        self._spawn(self._sample_jitter_buffer(onset), "pytest-livekit-jitter-buffer")
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()


async def _serve(path: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = CallerSession(Channel(reader, writer))
        await session.run()

    server = await asyncio.start_unix_server(handle, path=path)
    os.chmod(path, 0o600)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    # Standard input closes when the test process ends (however it ends): then so do we.
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    server.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve callers on the Unix socket given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pytest_livekit.call._caller_main SOCKET", file=sys.stderr)
        return 2
    # A full garbage collection walks every object livekit, livekit-agents and protobuf import
    # (~166,000): 70 ms with the interpreter stopped, which left frames 20-30 ms late once early
    # in a session. Frozen, they are never walked again; a collection then takes microseconds.
    gc.collect()
    gc.freeze()
    raise_priority()
    print(f"pytest-livekit caller process {os.getpid()}: {describe_priority()}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args[0]))
    return 0


# a heard segment is the record's type; re-exported so the wire format names one class
__all__ = ["CallerSession", "HeardSegment", "main"]

if __name__ == "__main__":
    sys.exit(main())
