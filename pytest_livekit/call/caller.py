"""The scripted caller, as the test sees it: a handle on a caller that lives in its own process.

The caller's media — microphone pacing, receiving, timestamping, the level detector and the
RemoteSession observer — runs in a separate process (:mod:`pytest_livekit.call._caller_main`), one per
test process, started once and shared by every call (each call is one connection to it). The
agent under test may run in the test's event loop (in-process mode) and stall it or hold its GIL;
the caller's frames still leave and are timed on their own schedule. This module keeps the test's
view: :class:`ScriptedCaller` sends the script to that process and builds the call record and the
:class:`Recording` from what comes back.

One clock: ``time.monotonic()`` (``CLOCK_MONOTONIC``, the same in every process of the machine),
as seconds since the call's time zero. Every sent and received frame carries the 10 ms slot of
that clock in which it really left or arrived; the recording lays both channels by those slots,
and every timing metric is read from the same slots, so what ``call.wav`` shows is what the
assertions measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio, Pcm
from pytest_livekit.call._caller_wire import FRAME_SAMPLES, FRAME_SECONDS, Channel
from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment
from pytest_livekit.errors import CallTimeoutError, PytestLivekitError
from pytest_livekit.server.process import ManagedProcess, stop_all
from pytest_livekit.units import to_ms

__all__ = [
    "AGENT_STATE_ATTRIBUTE",
    "FRAME_SECONDS",
    "CallerHost",
    "CallerProcessError",
    "Recording",
    "ScriptedCaller",
    "caller_host",
    "stop_caller_host",
]

#: Participant attribute through which livekit-agents publishes its state.
AGENT_STATE_ATTRIBUTE = "lk.agent.state"
#: Seconds to wait for the caller process to import livekit and listen.
HOST_START_TIMEOUT = 60.0


class CallerProcessError(PytestLivekitError):
    """The caller's process could not be started or went away mid-call."""


@dataclass
class Recording:
    """Both directions of the call, as the caller sent and heard them, on the 10 ms grid."""

    sent: list[tuple[list[int], bytes]] = field(default_factory=list)
    """Batches of ``(slots, int16 samples)`` the microphone handed to WebRTC."""
    heard: list[tuple[list[int], bytes]] = field(default_factory=list)
    """Batches of ``(slots, int16 samples)`` received from the agent."""

    def add(self, side: str, slots: list[int], pcm: bytes) -> None:
        """Append a batch (``side`` is ``sent`` or ``heard``)."""
        (self.sent if side == "sent" else self.heard).append((slots, pcm))

    @staticmethod
    def _lay(batches: list[tuple[list[int], bytes]], length: int) -> Pcm:
        out = np.zeros(length, dtype=np.int32)
        for slots, pcm in batches:
            frames = np.frombuffer(pcm, dtype=np.int16).reshape(len(slots), FRAME_SAMPLES)
            for slot, frame in zip(slots, frames, strict=True):
                if slot < 0:
                    continue
                start = slot * FRAME_SAMPLES
                # two frames in one slot (a burst after a stall) are mixed: both stay audible
                out[start : start + FRAME_SAMPLES] += frame
        return np.clip(out, -32768, 32767).astype(np.int16)

    def _slots_end(self) -> int:
        ends = [max(slots) + 1 for slots, _ in (*self.sent, *self.heard) if slots]
        return max(ends, default=0)

    def sent_track(self) -> Pcm:
        """Sent audio laid on the call timeline (slot ``k`` at sample ``k * 480``)."""
        return self._lay(self.sent, self._slots_end() * FRAME_SAMPLES)

    def heard_track(self) -> Pcm:
        """Received audio laid on the call timeline (a real gap stays a gap)."""
        return self._lay(self.heard, self._slots_end() * FRAME_SAMPLES)

    def stereo(self) -> Pcm:
        """``(n, 2)`` int16: left = caller sent, right = agent heard."""
        n = self._slots_end() * FRAME_SAMPLES
        out = np.zeros((n, 2), dtype=np.int16)
        out[:, 0] = self._lay(self.sent, n)
        out[:, 1] = self._lay(self.heard, n)
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


class CallerHost(ManagedProcess):
    """The caller process of this test process (started once; every call connects to it).

    It is started in its own process group with ``PR_SET_PDEATHSIG`` and exits when our end of its
    standard input closes, so it never outlives the test process.
    """

    def __init__(self) -> None:
        super().__init__(startup_timeout=HOST_START_TIMEOUT)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.socket_path: Path | None = None
        self.log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> CallerHost:
        """Spawn the process if it is not running (returns at once; see :meth:`wait_ready`)."""
        if self.pid is not None:
            return self
        self.stop()
        self._dir = tempfile.TemporaryDirectory(prefix="pytest-livekit-caller-")
        folder = Path(self._dir.name)
        os.chmod(folder, 0o700)  # only our user may connect to the socket
        self.socket_path = folder / "caller.sock"
        self.log_path = folder / "caller.log"
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            proc = self._spawn(
                [sys.executable, "-m", "pytest_livekit.call._caller_main", str(self.socket_path)],
                stdin=subprocess.PIPE,  # closed by stop(): the process then exits
                stdout=subprocess.PIPE,  # one line, "ready", once it listens
                stderr=log,
                env=env,
            )
        assert proc.stdout is not None
        self._follow_output(proc.stdout, self._read_line, name="pytest-livekit-caller-ready")
        return self

    def _read_line(self, raw: bytes) -> None:
        if raw.strip() == b"ready":
            self._mark_ready()

    async def wait_ready(self, timeout: float = HOST_START_TIMEOUT) -> Path:
        """Wait until the process listens; returns its socket path."""
        self.start()
        loop = asyncio.get_running_loop()
        # the wait runs in a thread: the event loop (and an in-process agent) keeps running
        await loop.run_in_executor(None, self.wait_until_ready, timeout)
        assert self.socket_path is not None
        return self.socket_path

    def start_relay(self, listen: tuple[str, int], upstream: tuple[str, int], timeout: float = HOST_START_TIMEOUT) -> None:
        """Start the packet relay in this process (blocking; before the first call).

        Raises:
            CallerProcessError: the process did not start or could not bind ``listen``.
        """
        from pytest_livekit.call._caller_wire import request_blocking

        self.start()
        self.wait_until_ready(timeout)
        assert self.socket_path is not None
        try:
            request_blocking(str(self.socket_path), "relay_start", timeout, listen=listen, upstream=upstream)
        except (OSError, RuntimeError) as exc:
            raise CallerProcessError(
                f"the packet relay could not start on {listen[0]}:{listen[1]} (to the server's media "
                f"port {upstream[0]}:{upstream[1]}): {exc}"
            ) from exc

    def _died_before_ready(self, code: int | None) -> BaseException:
        return self._start_failed(f"it exited with code {code}")

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return self._start_failed(f"timed out after {timeout:.0f} s")

    def _start_failed(self, why: str) -> CallerProcessError:
        return CallerProcessError(
            f"the caller's process did not start ({why}).\n"
            f"Its log:\n{self.log_tail(20)}\n"
            "Hint: run 'python -m pytest_livekit.call._caller_main /tmp/x.sock' to see why."
        )

    def _log_source(self) -> Path | None:
        return self.log_path

    def log_tail(self, lines: int = 20, width: int = 400) -> str:
        """The last lines of the process's log (JWT-shaped strings redacted)."""
        return super().log_tail(lines, width)

    def _ask_to_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        # closing its standard input ends it cleanly (it leaves its rooms); signals only if not
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _release(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None

    def stop(self, timeout: float | None = None) -> None:
        """Stop the process (closing its standard input ends it; signals after ``timeout``
        seconds, default 5) and remove its folder.
        """
        super().stop(timeout)


_default_host: CallerHost | None = None


def caller_host() -> CallerHost:
    """This test process's caller host (created on first use, not yet started)."""
    global _default_host
    if _default_host is None:
        _default_host = CallerHost()
    return _default_host


def stop_caller_host() -> None:
    """Stop every caller process this test process started."""
    stop_all(CallerHost)


class ScriptedCaller:
    """A caller participant. Use :meth:`connect`, then :meth:`enqueue`, then :meth:`aclose`.

    Args:
        record: the call record it appends its turns, heard segments and session events to.
        identity: participant identity.
        on_change: called whenever something a waiter may care about changed.
        host: the caller process (default: this test process's).
    """

    def __init__(
        self,
        record: CallRecord,
        *,
        identity: str = "caller",
        on_change: Callable[[], None] | None = None,
        host: CallerHost | None = None,
    ) -> None:
        self.record = record
        self.identity = identity
        self.recording = Recording()
        self.join_marks: dict[str, float] = {}
        """Monotonic times at which the agent joined, subscribed, published and listened
        (``agent_joined``, ``mic_subscribed``, ``agent_audio``, ``listening``)."""
        self.host = host or caller_host()
        self._on_change = on_change or (lambda: None)
        self.t0 = time.monotonic()
        """Monotonic time of the call's time zero (``now() == 0``)."""
        self._channel: Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._clips: dict[int, asyncio.Future[CallerTurn | None]] = {}
        self._ids = itertools.count(1)
        self._state: dict[str, Any] = {}
        self._open_start: float | None = None
        self._closed = False
        self.lost: str | None = None
        """Why the caller's process went away mid-call, if it did."""
        self.on_disconnect: Callable[[str], None] | None = None
        """Called with the reason (``ROOM_DELETED``, ...) when the server ends the caller's
        connection; our own hang-up (``CLIENT_INITIATED``) is not reported."""
        self.agent_identity: str | None = None

    # -- the clock ----------------------------------------------------------------------------
    def set_time_zero(self, t0: float) -> None:
        """Use monotonic time ``t0`` as the call's time zero (before :meth:`connect`)."""
        self.t0 = t0

    def now(self) -> float:
        """Seconds since call start on the caller's monotonic clock."""
        return time.monotonic() - self.t0

    # -- state of the far end -----------------------------------------------------------------
    def agent_state(self) -> str | None:
        """The agent's ``lk.agent.state`` attribute as this caller sees it, if known."""
        value = self._state.get("agent_state")
        return str(value) if value is not None else None

    def agents(self) -> list[str]:
        """Identities of the agent-kind participants in the room."""
        return list(self._state.get("agents", []))

    def participants(self) -> list[str]:
        """Identities of everyone else in the room."""
        return list(self._state.get("participants", []))

    def mic_subscribed(self) -> bool:
        """True once someone (the agent) subscribed to the caller's microphone."""
        return bool(self._state.get("mic_subscribed"))

    def agent_audio_subscribed(self) -> bool:
        """True once the caller subscribed to the agent's audio track."""
        return bool(self._state.get("agent_audio"))

    @property
    def reconnect_count(self) -> int:
        """Reconnections the rtc SDK reported so far."""
        return int(self._state.get("reconnects", 0))

    @property
    def hearing_agent(self) -> bool:
        """True while the caller hears the agent (a heard segment is open)."""
        return self._open_start is not None

    def heard_segments(self) -> list[HeardSegment]:
        """Closed heard segments plus the one in progress (ending now)."""
        segs = list(self.record.heard)
        if self._open_start is not None:
            segs.append(HeardSegment(self._open_start, max(self._open_start, self.now())))
        return segs

    # -- talking to the caller process --------------------------------------------------------
    async def _request(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        if self._channel is None or self.lost:
            raise CallerProcessError(f"the caller is not connected ({self.lost or 'not started'})")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[rid] = fut
        self._channel.send((rid, command, args))
        done, _ = await asyncio.wait({fut}, timeout=timeout)
        self._requests.pop(rid, None)
        if not done:
            raise CallTimeoutError(f"the caller's process did not answer {command!r} within {timeout:.0f} s")
        return fut.result()

    def _fail_all(self, why: str) -> None:
        self.lost = why
        error = CallerProcessError(
            f"{why}.\nThe caller process's log:\n{self.host.log_tail()}"
        )
        for fut in (*self._requests.values(), *self._clips.values()):
            if not fut.done():
                fut.set_exception(error)
        self._on_change()

    async def _read(self) -> None:
        assert self._channel is not None
        channel = self._channel
        while True:
            message = await channel.recv()
            if message is None:
                if not self._closed:
                    self._fail_all("the caller's process closed the call's connection")
                return
            try:
                self._handle(message)
            except Exception as exc:  # a bad message must not end the reader silently
                self._fail_all(f"could not read a message from the caller's process: {exc!r}")
                return

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        record = self.record
        if kind == "frames":
            self.recording.add(message[1], message[2], message[3])
            return
        if kind == "reply":
            _, rid, ok, result = message
            fut = self._requests.get(rid)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(result)
                else:
                    fut.set_exception(CallerProcessError(f"the caller's process failed:\n{result}"))
        elif kind == "state":
            self._state = message[1]
        elif kind == "disconnected":
            reason = str(message[1])
            if reason != "CLIENT_INITIATED" and not self._closed and self.on_disconnect is not None:
                self.on_disconnect(reason)
        elif kind == "turn_started":
            _, index, t = message
            if index is not None and index < len(record.caller_turns):
                record.caller_turns[index].started_at = t
        elif kind == "clip_done":
            _, clip_id, index, info = message
            turn = None
            if index is not None and index < len(record.caller_turns):
                turn = record.caller_turns[index]
                turn.started_at = info["started_at"]
                turn.ended_at = info["ended_at"]
                turn.speech_ended_at = info["speech_ended_at"]
                record.frames_in_turns += int(info["frames"])
                record.frames_dropped += int(info["dropped"])
            fut = self._clips.pop(clip_id, None)
            if fut is not None and not fut.done():
                fut.set_result(turn)
        elif kind == "heard_onset":
            self._open_start = float(message[1])
        elif kind == "heard_closed":
            record.heard.append(HeardSegment(float(message[1]), float(message[2])))
            self._open_start = None
        elif kind == "jitter_buffer":
            _, start, t, delay, emitted, target = message
            record.jitter_buffer.append({
                "segment_start": float(start), "t": float(t), "delay_total": float(delay),
                "emitted": float(emitted), "target_delay_total": float(target),
            })
        elif kind == "receive_gap":
            record.receive_gaps.append((float(message[1]), float(message[2])))
        elif kind == "late":
            _, direction, t, late = message
            record.clock_misses.append({"t": round(float(t), 3), "direction": direction, "late_ms": to_ms(late)})
        elif kind == "observed":
            getattr(record, message[1]).extend(message[2])
        self._on_change()

    # -- lifecycle ----------------------------------------------------------------------------
    async def connect(
        self,
        url: str,
        token: str,
        *,
        agent_identity: str | None = None,
        max_bitrate_bps: int | None = None,
        ice_servers: list[dict[str, Any]] | None = None,
        links: list[dict[str, Any]] | None = None,
    ) -> None:
        """Have the caller process join the room and publish the microphone track.

        Args:
            url: server WebSocket URL.
            token: the caller's (least-grant) token.
            agent_identity: the agent's identity, when known before it joins (in-process mode).
            max_bitrate_bps: Opus encoder bitrate cap of the microphone track (bandwidth condition).
            ice_servers: connect only through these TURN servers (relay-only ICE): the packet
                relay's address for a shaped caller.
            links: packet-relay links to shape from before the caller joins (``{"link", "path",
                "usernames"}``); released when the call closes.
        """
        path = await self.host.wait_ready()
        reader, writer = await asyncio.open_unix_connection(str(path))
        self._channel = Channel(reader, writer)
        self._reader = asyncio.create_task(self._read(), name="pytest-livekit-caller-reader")
        self.agent_identity = agent_identity
        await self._request(
            "connect",
            timeout=60.0,
            url=url,
            token=token,
            t0=self.t0,
            epoch0=self.record.started_at_epoch,
            agent_identity=agent_identity,
            max_bitrate_bps=max_bitrate_bps,
            ice_servers=ice_servers,
            links=links or [],
        )

    async def set_agent(self, identity: str) -> None:
        """Follow ``identity`` as the agent (worker mode learns it once the agent joined)."""
        self.agent_identity = identity
        await self._request("set_agent", identity=identity)

    async def wait_for_agent(self, agent_identity: str, timeout: float, changed: asyncio.Event) -> None:
        """Wait until the agent has joined, subscribed to our microphone, published its audio
        (which we subscribed to) and reports ``lk.agent.state == listening``.
        """
        from pytest_livekit.call.observer import wait_until

        steps: list[tuple[str, Callable[[], bool]]] = [
            ("the agent to join the room", lambda: agent_identity in self.participants()),
            ("the agent to subscribe to the caller's microphone", self.mic_subscribed),
            ("the agent's audio track", self.agent_audio_subscribed),
            ("the agent to be listening", lambda: self.agent_state() == "listening"),
        ]
        labels = ("agent_joined", "mic_subscribed", "agent_audio", "listening")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for (what, cond), label in zip(steps, labels, strict=True):
            if not await wait_until(lambda c=cond: bool(c() or self.lost), changed, max(0.0, deadline - loop.time())):  # type: ignore[misc]
                raise CallTimeoutError(
                    f"timed out after {timeout:.0f} s waiting for {what} "
                    f"(agent {agent_identity!r}, state {self.agent_state()!r}).\n"
                    "Hint: check the agent's log section below; the agent must call "
                    "session.start(agent, room=ctx.room)."
                )
            self.raise_if_lost()
            # where a call's setup time goes (call.timings["setup.<step>"], seconds since t0)
            self.join_marks[label] = time.monotonic()

    def raise_if_lost(self) -> None:
        """Raise :class:`CallerProcessError` if the caller's process went away."""
        if self.lost:
            raise CallerProcessError(f"{self.lost}.\nThe caller process's log:\n{self.host.log_tail()}")

    async def reset_mic_subscription(self) -> None:
        """Forget the subscription (before a reconnect that re-publishes the microphone)."""
        self._state["mic_subscribed"] = False
        await self._request("reset_mic_subscription")

    async def reconnect(self, kind: str) -> None:
        """Drop and re-establish the caller's connection (``full`` or ``signal``)."""
        await self._request("reconnect", kind=kind)

    async def network_outage(self, link: str, direction: str, seconds: float) -> None:
        """Drop ``link``'s packets in ``direction`` (uplink/downlink/both) for ``seconds``."""
        await self._request("network_outage", link=link, direction=direction, seconds=seconds)

    async def network_stats(self) -> dict[str, Any]:
        """Per shaped link of this call: what happened on the wire so far."""
        return dict(await self._request("network_stats"))

    async def aclose(self) -> None:
        """Stop the microphone, fail pending clips, leave the room."""
        if self._closed:
            return
        if self._channel is not None and not self.lost:
            with contextlib.suppress(Exception):
                info = await self._request("close", timeout=15.0)
                self.record.rtc = info.get("rtc", {})
                self.record.media = info.get("media", {})
                if info.get("network"):
                    self.record.network = {**self.record.network, "links": info["network"]}
                if info.get("room_sid"):
                    self.record.room_sid = info["room_sid"]
                known = {(p["identity"], p["sid"]) for p in self.record.participants}
                # a reconnect or an agent that already left: keep everyone seen so far
                self.record.participants += [
                    p for p in info.get("participants", []) if (p["identity"], p["sid"]) not in known
                ]
        self._closed = True
        if self._reader is not None:
            # the caller process closes the connection after "close": read to the end
            with contextlib.suppress(Exception):
                await asyncio.wait({self._reader}, timeout=5.0)
            self._reader.cancel()
        if self._channel is not None:
            await self._channel.drain_and_close()
        if self._open_start is not None:  # a reply still audible at hang-up
            self.record.heard.append(HeardSegment(self._open_start, max(self._open_start, self.now())))
            self._open_start = None
        for fut in self._clips.values():
            if not fut.done():
                fut.cancel()

    # -- speaking -----------------------------------------------------------------------------
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
        turn_index = None
        if as_turn:
            turn_index = len(self.record.caller_turns)
            self.record.caller_turns.append(
                CallerTurn(
                    index=turn_index,
                    source=audio.source,
                    text=audio.text,
                    started_at=-1.0,
                    kind=kind,
                    conditions=conditions,
                )
            )
        fut: asyncio.Future[CallerTurn | None] = asyncio.get_running_loop().create_future()
        if self._channel is None or self.lost:
            fut.set_exception(CallerProcessError(f"the caller is not connected ({self.lost or 'not started'})"))
            return fut
        clip_id = next(self._ids)
        self._clips[clip_id] = fut
        self._channel.send(
            (
                0,  # no reply awaited: clip_done follows
                "enqueue",
                {
                    "clip_id": clip_id,
                    "pcm": np.ascontiguousarray(audio.pcm, dtype=np.int16).tobytes(),
                    "turn": turn_index,
                    "start_at": start_at,
                    "lost": None if lost is None else [bool(x) for x in lost],
                    "delays": None if delays is None else [float(x) for x in delays],
                },
            )
        )
        return fut
