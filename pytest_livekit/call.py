"""One test call: a fresh room, the agent under test, the scripted caller and the record.

Works without pytest::

    async with LivekitCall(server_url, key, secret, agent=resolve_agent_target("my_agent:server")) as call:
        await call.say("I want a refund for order one two three four")
        await call.wait_for_agent_reply()
        print(time_to_first_audio(call.record))
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

from .agent_runner import AgentTarget, InProcessAgent
from .audio import CALL_SAMPLE_RATE, CallerAudio, float_to_pcm16, load_wav, resample, to_mono_float
from .caller import ScriptedCaller
from .errors import CallTimeoutError, ConfigError
from .observer import SessionObserver, wait_until
from .record import CallerTurn, CallRecord
from .tokens import agent_token, caller_token
from .worker import AgentWorker, DispatchedAgent

#: Default seconds to wait for the agent to join and be listening.
DEFAULT_JOIN_TIMEOUT = 30.0
#: Default seconds to wait for a complete agent reply.
DEFAULT_REPLY_TIMEOUT = 30.0


def sanitize(name: str, max_len: int = 120) -> str:
    """Make a test id usable as a room name and folder name."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return clean[:max_len] or "call"


class LivekitCall:
    """A call placed through a real livekit-server to the agent under test.

    Args:
        url: server WebSocket URL (``ws://127.0.0.1:<port>``).
        api_key: server API key.
        api_secret: server API secret (never logged or saved).
        agent: the agent to run in-process.
        name: human name of the call (the test id); the room name is derived from it.
        call_type: call type label (``refund``, ``booking``, ...).
        artifacts_dir: folder for ``call.wav``, ``caller.wav``, ``agent.wav`` and ``call.json``.
        server_version: recorded in the call record.
        voice: espeak-ng voice for :meth:`say`.
        words_per_minute: speaking rate for :meth:`say` (140: pocketsphinx handles it well).
        join_timeout: seconds to wait for the agent to join and listen.
        audio_root: folder relative WAV paths are resolved against.
        worker: run the agent in this worker process (explicit dispatch) instead of in-process.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        agent: AgentTarget,
        name: str = "call",
        call_type: str | None = None,
        artifacts_dir: str | Path | None = None,
        server_version: str = "unknown",
        voice: str = "en-us",
        words_per_minute: int = 140,
        join_timeout: float = DEFAULT_JOIN_TIMEOUT,
        audio_root: Path | None = None,
        worker: AgentWorker | None = None,
    ) -> None:
        self.url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self.agent_target = agent
        self.worker = worker
        self.room_name = f"{sanitize(name, 80)}-{secrets.token_hex(4)}"
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else None
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.join_timeout = join_timeout
        self.audio_root = audio_root or Path.cwd()
        self.record = CallRecord(
            call_id=self.room_name,
            call_type=call_type,
            started_at_epoch=time.time(),
            server_version=server_version,
            agent_mode="worker" if worker is not None else "in-process",
            artifacts_dir=str(self.artifacts_dir) if self.artifacts_dir else None,
            recording_path=str(self.artifacts_dir / "call.wav") if self.artifacts_dir else None,
        )
        self._changed = asyncio.Event()
        self.caller: ScriptedCaller | None = None
        self.agent: InProcessAgent | DispatchedAgent | None = None
        self.observer: SessionObserver | None = None
        self.agent_identity = "agent-under-test"
        self.timings: dict[str, float] = {}
        """Setup/teardown durations in seconds (``setup``, ``teardown``)."""
        self.limits: dict[str, Any] = {}
        """Per-call limits of this call's type (set by the plugin from pyproject and the marker)."""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> LivekitCall:
        """Join the caller, start the agent, and wait until the agent listens."""
        t0 = time.monotonic()
        self.record.started_at_epoch = time.time()
        self.caller = ScriptedCaller(
            self.record, identity="caller", on_change=self._changed.set
        )
        in_process = self.worker is None
        # A worker's agent identity is only known once it joins ("agent-<job id>").
        self.caller.agent_identity = self.agent_identity if in_process else None
        self.observer = SessionObserver(
            self.caller.room,
            self.record,
            agent_identity=self.agent_identity if in_process else None,
            on_change=self._changed.set,
        )
        # Before connect: session events that arrive with no handler are dropped.
        await self.observer.start()
        await self.caller.connect(
            self.url,
            caller_token(
                self._api_key,
                self._api_secret,
                self.room_name,
                identity="caller",
            ),
        )
        if self.worker is not None:
            await self._start_dispatched(self.worker)
        else:
            await self._start_in_process()
        self.timings["setup"] = time.monotonic() - t0
        return self

    async def _start_dispatched(self, worker: AgentWorker) -> None:
        assert self.caller is not None and self.observer is not None
        http_url = self.url.replace("ws://", "http://").replace("wss://", "https://")
        agent = DispatchedAgent(
            worker,
            room_name=self.room_name,
            http_url=http_url,
            api_key=self._api_key,
            api_secret=self._api_secret,
        )
        self.agent = agent
        agent.on_failure(self._changed.set)
        await agent.start()
        identity = await self._guard(
            agent.find_identity(self.caller.room, self._changed, self.join_timeout)
        )
        self.agent_identity = identity
        self.caller.agent_identity = identity
        self.observer.set_agent_identity(identity)
        await self._guard(self.caller.wait_for_agent(identity, self.join_timeout))
        self.timings["redispatches"] = float(agent.redispatches)

    async def _start_in_process(self) -> None:
        assert self.caller is not None
        self.agent = InProcessAgent(
            self.agent_target,
            url=self.url,
            token=agent_token(
                self._api_key,
                self._api_secret,
                self.room_name,
                identity=self.agent_identity,
                agent_name=self.agent_target.agent_name,
            ),
            identity=self.agent_identity,
        )
        self.agent.on_failure(self._changed.set)
        await self.agent.start()
        await self._guard(self.caller.wait_for_agent(self.agent_identity, self.join_timeout))

    async def aclose(self) -> None:
        """Hang up, stop the agent, delete the room and write the artifacts (always)."""
        t0 = time.monotonic()
        try:
            if self.caller is not None:
                await self.caller.aclose()
            if self.agent is not None:
                await self.agent.aclose()
            if self.observer is not None:
                await self.observer.aclose()
            await self._delete_room()
        finally:
            self.write_artifacts()
        self.timings["teardown"] = time.monotonic() - t0

    async def __aenter__(self) -> LivekitCall:
        try:
            return await self.start()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _delete_room(self) -> None:
        from livekit import api

        http_url = self.url.replace("ws://", "http://").replace("wss://", "https://")
        async with api.LiveKitAPI(http_url, self._api_key, self._api_secret) as lkapi:
            with contextlib.suppress(Exception):  # already gone when everyone left
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=self.room_name))

    def write_artifacts(self) -> Path | None:
        """Write the recording and ``call.json``; returns the folder (None if not configured)."""
        if self.artifacts_dir is None:
            return None
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.caller is not None:
            self.caller.recording.write(self.artifacts_dir)
        self.record.save(self.artifacts_dir / "call.json")
        return self.artifacts_dir

    # -- guards -----------------------------------------------------------------------------
    async def _guard(self, awaitable: Any) -> Any:
        """Await ``awaitable`` but fail at once with the agent's traceback if the agent crashes."""
        assert self.agent is not None
        task = asyncio.ensure_future(awaitable)
        crash = asyncio.ensure_future(self.agent._failed.wait())  # noqa: SLF001
        try:
            await asyncio.wait({task, crash}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            crash.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.agent.raise_if_failed()
        return task.result()

    def _check_agent(self) -> None:
        if self.agent is not None:
            self.agent.raise_if_failed()

    # -- the script ---------------------------------------------------------------------------
    def synthesize(self, text: str) -> CallerAudio:
        """Speak ``text`` with the offline TTS into 48 kHz caller audio."""
        if not text or not text.strip():
            raise ConfigError("say() needs some text to speak; got an empty string.")
        from .offline.tts import synthesize_speech

        pcm, rate = synthesize_speech(text, voice=self.voice, words_per_minute=self.words_per_minute)
        audio = float_to_pcm16(resample(to_mono_float(pcm), rate, CALL_SAMPLE_RATE))
        return CallerAudio(pcm=audio, source=f"tts:{self.voice}@{self.words_per_minute}wpm", text=text)

    async def say(self, text: str, *, wait_for_listening: bool = True) -> CallerTurn:
        """Speak ``text`` (offline TTS) and return when its last frame is on the wire."""
        return await self.speak(self.synthesize(text), wait_for_listening=wait_for_listening)

    async def play(
        self, path: str | Path, *, text: str | None = None, wait_for_listening: bool = True
    ) -> CallerTurn:
        """Play a WAV file (any rate/channels); ``text`` is its transcript for ASR scoring.

        Relative paths are resolved against the test file's folder.
        """
        p = Path(path)
        if not p.is_absolute():
            p = self.audio_root / p
        return await self.speak(load_wav(p, text=text), wait_for_listening=wait_for_listening)

    async def speak(self, audio: CallerAudio, *, wait_for_listening: bool = True) -> CallerTurn:
        """Send a prepared clip; by default first wait until the agent is listening."""
        assert self.caller is not None, "call not started"
        self._check_agent()
        if wait_for_listening:
            await self.wait_for_agent_state("listening", timeout=DEFAULT_REPLY_TIMEOUT)
        future = self.caller.enqueue(audio)
        turn: CallerTurn = await self._guard(_within(future, audio.duration + 10.0, "the caller's clip to be sent"))
        return turn

    async def wait_for_agent_state(self, state: str, *, timeout: float = 10.0) -> None:
        """Wait until the agent's ``lk.agent.state`` attribute equals ``state``."""
        assert self.caller is not None
        caller = self.caller
        ok = await self._guard(wait_until(lambda: caller.agent_state() == state, self._changed, timeout))
        if not ok:
            raise CallTimeoutError(
                f"agent did not reach state {state!r} within {timeout:.1f} s "
                f"(it is {caller.agent_state()!r}).\n"
                f"Timeline:\n{self.record.timeline()}"
            )

    async def wait_for_agent_reply(self, *, timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        """Wait until the agent answered the caller's last turn and finished speaking.

        Done means, all from the caller's side: agent audio was heard after the caller's speech
        ended, the agent's reply message was added, the agent is ``listening`` again, and its
        audio has gone quiet.
        """
        assert self.caller is not None
        caller = self.caller
        record = self.record
        if not record.caller_turns or record.caller_turns[-1].ended_at is None:
            raise CallTimeoutError(
                "wait_for_agent_reply() needs a finished caller turn first: await call.say(...)."
            )
        turn_end = record.caller_turns[-1].ended_at

        def replied() -> bool:
            heard = any(s.start >= turn_end for s in caller.heard_segments())
            said = any(i.role == "assistant" and i.t >= turn_end for i in record.items)
            return heard and said and caller.agent_state() == "listening" and not caller.detector.active

        ok = await self._guard(wait_until(replied, self._changed, timeout))
        if not ok:
            heard = any(s.start >= turn_end for s in caller.heard_segments())
            raise CallTimeoutError(
                f"the agent did not finish a reply within {timeout:.1f} s after the caller's turn "
                f"ended at {turn_end:.2f} s (heard agent audio: {'yes' if heard else 'no'}; agent "
                f"state {caller.agent_state()!r}).\n"
                f"Timeline:\n{record.timeline()}\n"
                f"Recording (written at teardown): {record.recording_path}"
            )

    async def wait_for_agent_audio(self, *, timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        """Wait until the caller heard a complete stretch of agent audio after its last turn ended
        (audio only: for agents without an AgentSession, e.g. tone or IVR bots).
        """
        assert self.caller is not None
        caller = self.caller
        turn = self.record.caller_turns[-1] if self.record.caller_turns else None
        if turn is None or turn.ended_at is None:
            raise CallTimeoutError("wait_for_agent_audio() needs a finished caller turn first.")
        end = turn.ended_at
        ok = await self._guard(
            wait_until(lambda: any(s.start >= end for s in self.record.heard), self._changed, timeout)
        )
        if not ok:
            raise CallTimeoutError(
                f"no agent audio heard within {timeout:.1f} s after the caller's turn ended at "
                f"{end:.2f} s (detector {'open' if caller.detector.active else 'idle'}).\n"
                f"Timeline:\n{self.record.timeline()}"
            )

    def __repr__(self) -> str:
        return f"<LivekitCall room={self.room_name!r} type={self.record.call_type!r}>"



async def _within(future: asyncio.Future[Any], timeout: float, what: str) -> Any:
    """Await ``future`` for at most ``timeout`` s (asyncio.wait: cancellation-safe on 3.11)."""
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        raise CallTimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
    return future.result()
