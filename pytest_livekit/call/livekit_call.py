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
import dataclasses
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from pytest_livekit.agent.in_process import AgentTarget, InProcessAgent
from pytest_livekit.agent.substitution import (
    PROVIDER_MODES,
    OfflinePlan,
    ViolationError,
    register_plan,
    substitutions_for_room,
    unregister_plan,
    watch_room,
)
from pytest_livekit.agent.worker import AgentWorker, DispatchedAgent, WorkerGroup
from pytest_livekit.audio import (
    CALL_SAMPLE_RATE,
    CallerAudio,
    float_to_pcm16,
    load_wav,
    resample,
    to_mono_float,
)
from pytest_livekit.call.caller import ScriptedCaller
from pytest_livekit.call.observer import wait_until
from pytest_livekit.call.record import AgentError, CallerTurn, CallRecord
from pytest_livekit.config import DEFAULT_JOIN_TIMEOUT, DEFAULT_REPLY_TIMEOUT
from pytest_livekit.errors import CallTimeoutError, ConfigError
from pytest_livekit.server.tokens import agent_token, caller_token

#: Seconds the test's event loop (shared with an in-process agent) may stall before the call fails
#: (s). livekit-agents warns from 0.1 s; 2 s stalls are a bug, not a slow machine.
LOOP_BLOCK_FAIL_SECONDS = 2.0


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
        conditions: :class:`~pytest_livekit.conditions.media.Conditions` applied to every caller turn
            (a turn may bring its own instead); bitrate conditions set the published encoder.
        providers: ``offline`` (default): the agent's cloud providers are replaced by the
            offline doubles and the network is guarded (:mod:`pytest_livekit.agent.substitution`);
            ``real``: the agent runs with the providers it was written with.
        offline_plan: what the doubles do in this call (LLM rules, STT vocabulary); default:
            the default reply only, with the generic vocabulary.
        network: a :class:`~pytest_livekit.conditions.network.NetworkPath` for the caller's own network link
            (uplink = caller to server): every packet of the caller passes the session's packet
            relay (relay-only ICE through the server's TURN), shaped by it from the first one.
        agent_network: the same for the agent's link (in-process agents).
        relay: the packet relay's address (in front of the server's TURN port): where shaped
            participants connect; the session sets it when ``livekit_packet_relay = on``.
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
        worker: AgentWorker | WorkerGroup | None = None,
        conditions: Any = None,
        providers: str = "offline",
        offline_plan: OfflinePlan | None = None,
        network: Any = None,
        agent_network: Any = None,
        relay: tuple[str, int] | None = None,
    ) -> None:
        if providers not in PROVIDER_MODES:
            raise ConfigError(
                f"providers={providers!r} is not valid. Valid values: {', '.join(PROVIDER_MODES)}."
            )
        self.providers = providers
        self.test_id = ""
        """The pytest node id of the test that placed this call (set by the fixtures), for re-run hints."""
        self.offline_plan = offline_plan or OfflinePlan(stt_model="generic")
        self._offline_started = False
        self._unwatch: Callable[[], None] | None = None
        self.url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self.agent_target = agent
        self.worker = worker
        self.conditions = conditions
        self.network = network
        self.agent_network = agent_network
        self.relay = relay
        self._ice_servers: dict[str, list[dict[str, Any]]] = {}
        if agent_network is not None and worker is not None:
            raise ConfigError(
                "agent_network= shapes an in-process agent's link: in worker mode the agent's "
                "sockets live in a job process the test cannot see. Shape the caller's link "
                "(network=) instead, or run this test with agent_mode='in-process'."
            )
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
            conditions=conditions.to_dict() if conditions is not None else {},
            artifacts_dir=str(self.artifacts_dir) if self.artifacts_dir else None,
            recording_path=str(self.artifacts_dir / "call.wav") if self.artifacts_dir else None,
        )
        self._changed = asyncio.Event()
        self._aborted = asyncio.Event()
        self._abort_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: Any = None
        self._error_log: Any = None
        self.ended_by: str | None = None
        """Why the server ended the caller's connection (``ROOM_DELETED``, ...), if it did."""
        self._expecting_end = False
        self.artifacts_error: str | None = None
        """Why the call's artifacts could not be written (disk full, read-only), else None."""
        self._t0 = time.monotonic()
        self._closed = False
        self.caller: ScriptedCaller | None = None
        self.agent: InProcessAgent | DispatchedAgent | None = None
        self.agent_identity = "agent-under-test"
        self.timings: dict[str, float] = {}
        """Setup/teardown durations in seconds (``setup``, ``teardown``)."""
        self.limits: dict[str, Any] = {}
        """Per-call limits of this call's type (set by the plugin from pyproject and the marker)."""
        self.on_progress: Callable[[LivekitCall, str, int, dict[str, Any]], None] | None = None
        """Called at each script step with ``(call, action, caller turns so far, arguments)``
        (the plugin's progress line)."""
        self.record.agent_spec = getattr(agent, "spec", "") or ""
        self.record.providers = providers
        self.placement: Callable[[], dict[str, Any]] | None = None
        """Where the call runs on a cluster (``signal_node_id``, ``room_node_id``,
        ``agent_node_id``, ``nodes``), read once it started into ``record.server`` (set by the
        session in cluster mode)."""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> LivekitCall:
        """Join the caller, start the agent, and wait until the agent listens."""
        from pytest_livekit.audio import freeze_loaded_objects, warm_imports

        warm_imports()  # before the clock starts: never on the loop the agent shares mid-call
        freeze_loaded_objects()  # no full collection walks the imports mid-call (see there)
        t0 = self._t0 = time.monotonic()
        self._loop = asyncio.get_running_loop()
        # the call's time zero, on both clocks at once: the caller's monotonic clock times every
        # frame; the agent reports its events in wall-clock epochs
        self.record.started_at_epoch = time.time()
        self.caller = ScriptedCaller(self.record, identity="caller", on_change=self._changed.set)
        self.caller.on_disconnect = self._caller_disconnected
        self.caller.set_time_zero(t0)
        in_process = self.worker is None
        if self.providers == "offline":
            self._start_offline(in_process)
        # A worker's agent identity is only known once it joins ("agent-<job id>").
        links, self._ice_servers = self._network_plan()
        connect = self.caller.connect(
            self.url,
            caller_token(
                self._api_key,
                self._api_secret,
                self.room_name,
                identity="caller",
            ),
            agent_identity=self.agent_identity if in_process else None,
            max_bitrate_bps=self._max_bitrate(),
            ice_servers=self._ice_servers.get("caller"),
            links=links,
        )
        if self.worker is not None:
            # The dispatch goes out while the caller joins (livekit-server creates the room for
            # whichever comes first): the job's start no longer waits for the caller's connect.
            agent = self._dispatched_agent(self.worker)
            results = await asyncio.gather(
                self._timed("setup.caller_connected", connect, t0),
                self._timed("setup.dispatched", agent.start(), t0),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            await self._wait_for_dispatched(agent)
        else:
            # The caller and the in-process agent join at the same time (the agent's RoomIO
            # waits for the caller; the caller waits below until the agent listens): the two
            # room connects no longer add up. Both finish before anything fails, so that
            # aclose() finds no half-started part.
            results = await asyncio.gather(
                self._timed("setup.caller_connected", connect, t0),
                self._timed("setup.agent_connected", self._connect_in_process(), t0),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            assert self.caller is not None
            await self._guard(self.caller.wait_for_agent(self.agent_identity, self.join_timeout, self._changed))
        self.timings["setup"] = time.monotonic() - t0
        assert self.caller is not None
        for step, at in self.caller.join_marks.items():
            self.timings[f"setup.{step}"] = at - t0
        if self.placement is not None:
            with contextlib.suppress(Exception):  # only a record: never fails the call
                self.record.server = dict(self.placement())
        return self

    def _link(self, who: str) -> str:
        return f"{self.room_name}:{who}"

    def _network_plan(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The relay links of this call and each shaped side's TURN server (the relay).

        Returns ``(links, ice_servers per side)``; both empty when nothing is shaped.

        Raises:
            ConfigError: a path was given but the session's server has no packet relay.
        """
        sides = [(who, path) for who, path in (("caller", self.network), ("agent", self.agent_network)) if path is not None]
        if not sides:
            return [], {}
        if self.relay is None:
            raise ConfigError(
                "network conditions need the packet relay in front of the session's server: set "
                "livekit_packet_relay = on (pytest.ini / pyproject) or --livekit-packet-relay=on, and "
                "run inside scripts/netns-run (the relay needs the namespace's two private addresses). "
                "An external server (--livekit-url) cannot be shaped: the relay needs the server's "
                "embedded TURN server, which only a server the plugin starts is configured with."
            )
        from pytest_livekit.conditions.turn_credentials import turn_credentials

        host, port = self.relay
        links, ice = [], {}
        shaped: dict[str, Any] = {}
        for who, path in sides:
            username, password = turn_credentials(self._api_key, self._api_secret, self._link(who))
            links.append({"link": self._link(who), "path": path.to_dict(), "usernames": [username]})
            ice[who] = [{"urls": [f"turn:{host}:{port}?transport=udp"], "username": username, "password": password}]
            shaped[who] = {"path": path.to_dict(), "describe": path.describe()}
        self.record.network = {**self.record.network, "shaped": shaped}
        return links, ice

    def wire(self, who: str = "caller") -> dict[str, Any]:
        """What the packet relay did to ``who``'s link (``caller`` or ``agent``) in this call, once
        it ended: ``{"flows", "uplink": {...}, "downlink": {...}}`` with packets in, forwarded,
        dropped by loss / queue / outage, duplicated, reordered, and queue / added delay
        p50/p95/max in ms (see :class:`~pytest_livekit.conditions.network.LinkStats`).

        Raises:
            ConfigError: that side's link was not shaped, or the call has not ended.
        """
        links = self.record.network.get("links") or {}
        if self._link(who) not in links:
            raise ConfigError(
                f"no wire stats for {who!r}: pass network= (caller) or agent_network= (agent) to the "
                "call, and read them after the call ended (after the 'async with' block)."
            )
        return dict(links[self._link(who)])

    async def network_outage(self, seconds: float, *, direction: str = "downlink", who: str = "caller") -> None:
        """Cut ``who``'s network link (``caller`` or ``agent``) in ``direction`` (``uplink``,
        ``downlink`` or ``both``) for ``seconds`` from now, as a handover does; traffic resumes
        after. Needs a ``network=`` (or ``agent_network=``) path for that side.
        """
        if direction not in ("uplink", "downlink", "both"):
            raise ConfigError(f"direction={direction!r} is not valid. Valid values: uplink, downlink, both.")
        if who not in ("caller", "agent"):
            raise ConfigError(f"who={who!r} is not valid. Valid values: caller, agent.")
        if not isinstance(seconds, (int, float)) or not 0 < seconds <= 60:
            raise ConfigError(f"seconds={seconds!r} is not valid: give a number of seconds in (0, 60].")
        if (self.network if who == "caller" else self.agent_network) is None:
            raise ConfigError(
                f"network_outage(who={who!r}) needs a shaped link: pass "
                f"{'network' if who == 'caller' else 'agent_network'}=NetworkPath() (clean) to the call."
            )
        assert self.caller is not None
        self.record.script.append({"action": "network_outage", "seconds": seconds, "direction": direction, "who": who})
        self.record.network.setdefault("outages", []).append(
            {"t": round(self._now(), 3), "seconds": seconds, "direction": direction, "who": who}
        )
        await self.caller.network_outage(self._link(who), direction, float(seconds))

    def _start_offline(self, in_process: bool) -> None:
        """Register the call's plan for its room; an in-process agent also gets the substitution
        and the network guard in this process (a worker has its own).
        """
        folder = self.worker.offline_dir if self.worker is not None else None
        register_plan(self.room_name, self.offline_plan, folder=folder)
        loop = asyncio.get_running_loop()

        def violated(message: str) -> None:  # any thread: the guard fires where the agent tried
            loop.call_soon_threadsafe(self._offline_violation, message)

        self._unwatch = watch_room(self.room_name, violated)
        if in_process:
            host = urlparse(self.url).hostname or ""
            _offline_in_process.acquire(host)
        self._offline_started = True

    def _offline_violation(self, message: str) -> None:
        """Offline mode broke in this call's agent: the call fails now, with that message."""
        self.record.errors.append(AgentError(t=self._now(), message=message, source="offline"))
        if isinstance(self.agent, InProcessAgent):
            self.agent.fail(ViolationError(message))
        self._changed.set()

    def _now(self) -> float:
        return self.caller.now() if self.caller is not None else 0.0

    def _stop_offline(self) -> None:
        if not self._offline_started:
            return
        self._offline_started = False
        folder = self.worker.offline_dir if self.worker is not None else None
        self.record.substitutions = [
            dataclasses.asdict(s) for s in substitutions_for_room(self.room_name, folder=folder)
        ]
        if self._unwatch is not None:
            self._unwatch()
        unregister_plan(self.room_name, folder=folder)
        if self.worker is None:
            _offline_in_process.release()

    async def _timed(self, name: str, awaitable: Any, t0: float) -> Any:
        """Await and note when it finished (``timings[name]``, seconds since ``t0``)."""
        result = await awaitable
        self.timings[name] = time.monotonic() - t0
        return result

    def _max_bitrate(self) -> int | None:
        if self.conditions is None:
            return None
        rate = self.conditions.publish_bitrate_bps
        return int(rate) if rate else None

    @property
    def condition_kinds(self) -> tuple[str, ...]:
        """Kinds of the call's non-clean conditions (cohorts for SLOs), e.g. ``("noise",)``."""
        return tuple(self.conditions.kinds()) if self.conditions is not None else ()

    @property
    def reconnects(self) -> tuple[int, int]:
        """``(reconnects made, reconnects after which the agent listened again)``."""
        return len(self.record.reconnects), sum(1 for r in self.record.reconnects if r["ok"])

    def _dispatched_agent(self, worker: AgentWorker | WorkerGroup) -> DispatchedAgent:
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
        return agent

    async def _wait_for_dispatched(self, agent: DispatchedAgent) -> None:
        assert self.caller is not None
        identity = await self._guard(
            agent.find_identity(self.caller.agents, self._changed, self.join_timeout)
        )
        self.agent_identity = identity
        await self.caller.set_agent(identity)
        await self._guard(self.caller.wait_for_agent(identity, self.join_timeout, self._changed))
        self.timings["redispatches"] = float(agent.redispatches)

    async def _connect_in_process(self) -> None:
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
            ice_servers=self._ice_servers.get("agent"),
        )
        self.agent.on_failure(self._changed.set)
        await self.agent.start()
        # the agent shares this loop: a stall would silently stretch every wait of the test
        from pytest_livekit.agent.loop_watchdog import LoopWatchdog

        self._watchdog = LoopWatchdog(
            # a ping every 0.25 s: enough to see a 2 s stall, little for the GIL the agent shares
            asyncio.get_running_loop(), self._loop_blocked, threshold=LOOP_BLOCK_FAIL_SECONDS, interval=0.25
        ).start()
        # a tool that raises or a provider stream that fails is only logged by livekit-agents
        from pytest_livekit.agent.error_log import AgentErrorLog

        self._error_log = AgentErrorLog(self.room_name, self._agent_fault).start()

    def _agent_fault(self, fault: Any) -> None:  # the thread that logged it
        from pytest_livekit.errors import AgentCrashedError

        self.record.errors.append(AgentError(t=self._now(), message=fault.describe(), source="agent"))
        self.abort(
            AgentCrashedError(
                f"{fault.describe()}.\nlivekit-agents caught it and went on, so the caller would hear "
                f"silence or an answer built on it.\n{fault.traceback.rstrip()[-2500:]}"
            )
        )

    def _caller_disconnected(self, reason: str) -> None:
        from pytest_livekit.errors import CallLostError

        if self._closed:
            return
        t = self._now()
        self.ended_by = reason
        if self._expecting_end:  # wait_for_call_end: the test waits for exactly this
            self._changed.set()
            return
        message = (
            f"the server ended the caller's connection {t:.2f} s into the call (reason {reason}).\n"
            + {
                "ROOM_DELETED": "Hint: something deleted the room mid-call (the agent, a test, or "
                "an admin call to DeleteRoom): the agent's hang-up tools often do.",
                "PARTICIPANT_REMOVED": "Hint: something removed the caller from the room (RemoveParticipant).",
                "SERVER_SHUTDOWN": "Hint: the server is shutting down.",
            }.get(reason, "Hint: read the livekit-server log around that time.")
        )
        self.record.errors.append(AgentError(t=round(t, 3), message=message, source="connection"))
        self.abort(CallLostError(message))

    def _loop_blocked(self, block: Any) -> None:  # watchdog thread
        from pytest_livekit.errors import EventLoopBlockedError

        message = (
            f"the test's event loop, which the in-process agent shares, did not run for "
            f"{block.seconds:.1f} s (from {block.started_at - self._t0:.2f} s into the call), stuck at "
            f"{block.where()}.\nHint: something in the agent (or the test) blocks the loop: a "
            "synchronous call, time.sleep, or heavy work in the entrypoint. Make it async, move it "
            "to a thread or the prewarm, or run the agent as a worker (--livekit-agent-mode=worker)."
        )
        self.record.errors.append(AgentError(t=round(block.started_at - self._t0, 3), message=message, source="loop_blocked"))
        self.abort(EventLoopBlockedError(message + "\n" + block.stack.rstrip()[-1500:]))

    async def aclose(self) -> None:
        """Hang up, stop the agent, delete the room and write the artifacts (always; once)."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._error_log is not None:
            self._error_log.stop()
        try:
            if isinstance(self.agent, InProcessAgent) and (self.network is not None or self.agent_network is not None):
                # the other end of the caller's link: what the agent received from the caller
                await self._read_agent_rtc()
            if self.caller is not None:
                await self.caller.aclose()
            if self.agent is not None:
                await self.agent.aclose()
            await self._delete_room()
        finally:
            self._stop_offline()
            self._record_agent_failure()
            self.write_artifacts()
        self.timings["teardown"] = time.monotonic() - t0

    async def _read_agent_rtc(self) -> None:
        """The in-process agent's receive stats, for a call whose network is shaped."""
        from pytest_livekit.call.rtc_stats import audio_rtc_stats

        if not isinstance(self.agent, InProcessAgent):
            return
        with contextlib.suppress(Exception):  # stats are a bonus; never fail a hang-up on them
            rtc_stats, _ = audio_rtc_stats(await asyncio.wait_for(self.agent.room.get_rtc_stats(), 5.0))
            self.record.network = {**self.record.network, "agent_rtc": rtc_stats}

    def _record_agent_failure(self) -> None:
        """Keep the agent's crash (or offline violation) in the record a failed call leaves."""
        agent = self.agent
        text = getattr(agent, "failure_traceback", None) or getattr(agent, "failure_text", None)
        if text and not any(e.source == "crash" for e in self.record.errors):
            self.record.errors.append(AgentError(t=self._now(), message=str(text), source="crash"))

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
        """Write the recording and ``call.json``; returns the folder (None if not configured, or
        if the folder cannot be written: :attr:`artifacts_error` then says why, and the call's
        own result is not changed by it).
        """
        if self.artifacts_dir is None:
            return None
        try:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            if self.caller is not None:
                self.caller.recording.write(self.artifacts_dir)
            # the record holds what the agent said and its tools returned: redact like the trace
            self.record.save(self.artifacts_dir / "call.json", secrets=[self._api_secret])
        except (OSError, RuntimeError) as exc:  # disk full, read-only folder (soundfile: RuntimeError)
            self.artifacts_error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, OSError):  # soundfile hides the errno ("System error."): say why
                import shutil

                with contextlib.suppress(OSError):
                    free = shutil.disk_usage(self.artifacts_dir).free
                    writable = os.access(self.artifacts_dir, os.W_OK)
                    self.artifacts_error += f" ({free // 1024} KiB free on that disk{'' if writable else ', folder not writable'})"
            return None
        return self.artifacts_dir

    def _script(self, action: str, **arguments: Any) -> None:
        """Note a step of the test's script (what replay re-runs), with its call time in s."""
        now = self.caller.now() if self.caller is not None else 0.0
        self.record.script.append({"action": action, "t": round(now, 3), **arguments})
        self._progress(action, arguments)

    def _progress(self, action: str, arguments: dict[str, Any]) -> None:
        if self.on_progress is not None:
            turn = len(self.record.caller_turns)
            with contextlib.suppress(Exception):  # a display problem must never fail a call
                self.on_progress(self, action, turn, arguments)

    # -- guards -----------------------------------------------------------------------------
    def abort(self, error: BaseException) -> None:
        """Fail the call's current wait and every later one at once with ``error``; callable from
        any thread (a server watchdog, the caller's connection). The first error wins.
        """

        def mark() -> None:
            if self._abort_error is None:
                self._abort_error = error
            self._aborted.set()
            self._changed.set()

        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            mark()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(mark)

    def raise_if_aborted(self) -> None:
        """Raise the error given to :meth:`abort`, if any."""
        if self._abort_error is not None:
            raise self._abort_error

    async def _guard(self, awaitable: Any) -> Any:
        """Await ``awaitable`` but fail at once with the agent's traceback if the agent crashes,
        with the reason if the caller's process went away, or with the error of :meth:`abort`.
        """
        assert self.agent is not None
        if self._abort_error is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started: close it rather than leave it un-awaited
            raise self._abort_error
        task = asyncio.ensure_future(awaitable)
        crash = asyncio.ensure_future(self.agent.wait_until_failed())
        aborted = asyncio.ensure_future(self._aborted.wait())
        try:
            await asyncio.wait({task, crash, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            crash.cancel()
            aborted.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.raise_if_aborted()
            self.agent.raise_if_failed()
        if self.caller is not None:
            self.caller.raise_if_lost()
        return task.result()

    def _check_agent(self) -> None:
        if self.agent is not None:
            self.agent.raise_if_failed()

    # -- the script ---------------------------------------------------------------------------
    def synthesize(self, text: str) -> CallerAudio:
        """Speak ``text`` with the offline TTS into 48 kHz caller audio."""
        from pytest_livekit.audio import SILENT_PEAK_DBFS, caller_text_problem
        from pytest_livekit.errors import AudioInputError
        from pytest_livekit.offline.tts import synthesize_speech

        problem = caller_text_problem(text)  # the same check the collection-time scan makes
        if problem is not None:
            raise problem
        pcm, rate = synthesize_speech(text, voice=self.voice, words_per_minute=self.words_per_minute)
        audio = float_to_pcm16(resample(to_mono_float(pcm), rate, CALL_SAMPLE_RATE))
        if not len(audio) or np.abs(audio.astype(np.float64)).max() / 32768.0 < 10.0 ** (SILENT_PEAK_DBFS / 20.0):
            raise AudioInputError(
                f"say({text!r}): the offline TTS produced no audible speech (nothing in the text is "
                "a word it can say).\nHint: give the caller words to say, or use "
                "'await call.stay_silent(seconds)' for a silent caller."
            )
        return CallerAudio(pcm=audio, source=f"tts:{self.voice}@{self.words_per_minute}wpm", text=text)

    async def say(
        self,
        text: str,
        *,
        wait_for_listening: bool = True,
        conditions: Any = None,
        pause: Any = None,
    ) -> CallerTurn:
        """Speak ``text`` (offline TTS) and return when its last frame is on the wire.

        Args:
            text: what the caller says (also the ASR reference).
            wait_for_listening: first wait until the agent is listening.
            conditions: :class:`~pytest_livekit.conditions.media.Conditions` for this turn only
                (instead of the call's).
            pause: a :class:`~pytest_livekit.conditions.media.Pause`: speak the sentence with a silent
                gap after word ``pause.at_word`` (probes premature endpointing).
        """
        self._script(
            "say", text=text, wait_for_listening=wait_for_listening,
            conditions=conditions.to_dict() if conditions is not None else None,
            pause=pause.to_dict() if pause is not None else None,
        )
        if pause is not None:
            from pytest_livekit.conditions.media import split_text_for_pause

            first, second = split_text_for_pause(text, pause.at_word)
            a, b = self.synthesize(first), self.synthesize(second)
            gap = np.zeros(int(round(pause.duration_s * CALL_SAMPLE_RATE)), dtype=np.int16)
            audio = CallerAudio(np.concatenate([a.pcm, gap, b.pcm]), a.source, text)
            window = (a.duration, a.duration + pause.duration_s)
            return await self._speak(
                audio, wait_for_listening=wait_for_listening, conditions=conditions, kind="pause", pause=window
            )
        return await self._speak(self.synthesize(text), wait_for_listening=wait_for_listening, conditions=conditions)

    async def play(
        self,
        path: str | Path,
        *,
        text: str | None = None,
        wait_for_listening: bool = True,
        conditions: Any = None,
    ) -> CallerTurn:
        """Play a WAV file (any rate/channels); ``text`` is its transcript for ASR scoring.

        Relative paths are resolved against the test file's folder.
        """
        p = Path(path)
        if not p.is_absolute():
            p = self.audio_root / p
        self._script(
            "play", path=str(p.resolve()), text=text, wait_for_listening=wait_for_listening,
            conditions=conditions.to_dict() if conditions is not None else None,
        )
        return await self._speak(load_wav(p, text=text), wait_for_listening=wait_for_listening, conditions=conditions)

    def _prepare(self, audio: CallerAudio, conditions: Any, turn_index: int) -> tuple[CallerAudio, Any, Any, str]:
        """Apply signal conditions; derive sender-side frame loss and jitter for this turn."""
        conds = conditions if conditions is not None else self.conditions
        if conds is None or conds.is_clean:
            return audio, None, None, ""
        from pytest_livekit.conditions.media import FrameLoss, Jitter

        # Frame loss happens on the wire (frames are not sent), not as zeroed samples.
        pcm = conds.apply(audio.pcm, skip=("loss",), turn=turn_index)
        n_frames = -(-len(pcm) // int(CALL_SAMPLE_RATE * 0.01))
        lost = delays = None
        for item in conds.items:
            rng = conds.rng_for(item, turn=turn_index)  # stable when other items change
            if isinstance(item, FrameLoss) and item.rate > 0:
                per = max(1, item.frame_ms // 10)
                lost = np.repeat(item.mask(-(-n_frames // per), rng), per)[:n_frames]
            elif isinstance(item, Jitter) and item.std_ms > 0:
                step = max(1, item.frame_ms // 10)
                delays = np.repeat(item.offsets(-(-n_frames // step), rng), step)[:n_frames]
                # offsets are cumulative send delays; the mic loop sleeps the increments
                delays = np.diff(np.concatenate([[0.0], delays])).clip(min=0.0)
        described = f"{conds.describe()} (turn {turn_index + 1})"
        return CallerAudio(pcm, audio.source, audio.text), lost, delays, described

    async def speak(
        self,
        audio: CallerAudio,
        *,
        wait_for_listening: bool = True,
        conditions: Any = None,
        kind: str = "say",
        start_at: float | None = None,
        pause: tuple[float, float] | None = None,
    ) -> CallerTurn:
        """Send a prepared clip; by default first wait until the agent is listening.

        The clip is also saved into the call's folder (``clips/turn-<n>.wav``, before conditions)
        so that a replay can send it again.
        """
        clip = None
        if self.artifacts_dir is not None:
            import soundfile as sf

            clip = self.artifacts_dir / "clips" / f"turn-{len(self.record.caller_turns) + 1}.wav"
            clip.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(clip), audio.pcm, CALL_SAMPLE_RATE, subtype="PCM_16", format="WAV")
        self._script(
            "speak", path=str(clip.resolve()) if clip else None, text=audio.text, source=audio.source,
            wait_for_listening=wait_for_listening, kind=kind, start_at=start_at,
            conditions=conditions.to_dict() if conditions is not None else None,
            pause=list(pause) if pause else None,
        )
        return await self._speak(
            audio, wait_for_listening=wait_for_listening, conditions=conditions, kind=kind,
            start_at=start_at, pause=pause,
        )

    async def _speak(
        self,
        audio: CallerAudio,
        *,
        wait_for_listening: bool = True,
        conditions: Any = None,
        kind: str = "say",
        start_at: float | None = None,
        pause: tuple[float, float] | None = None,
    ) -> CallerTurn:
        assert self.caller is not None, "call not started"
        self._check_agent()
        if wait_for_listening:
            await self._wait_for_agent_state("listening", timeout=DEFAULT_REPLY_TIMEOUT)
        index = len(self.record.caller_turns)
        audio, lost, delays, described = self._prepare(audio, conditions, index)
        future = self.caller.enqueue(
            audio, kind=kind, start_at=start_at, lost=lost, delays=delays, conditions=described
        )
        turn = self.record.caller_turns[index]
        turn.pause = pause
        wait = audio.duration + 10.0 + (max(0.0, start_at - self.caller.now()) if start_at else 0.0)
        await self._guard(_within(future, wait, "the caller's clip to be sent"))
        return turn

    async def _agent_onset_after(self, t: float, timeout: float) -> float:
        """Call time at which agent audio first became audible after ``t``."""
        assert self.caller is not None
        caller = self.caller

        def onset() -> float | None:
            starts = [s.start for s in caller.heard_segments() if s.start >= t]
            return min(starts) if starts else None

        if not await self._guard(wait_until(lambda: onset() is not None, self._changed, timeout)):
            raise CallTimeoutError(
                f"the agent did not start speaking within {timeout:.1f} s after {t:.2f} s.\n"
                f"Timeline:\n{self.record.timeline()}"
            )
        result = onset()
        assert result is not None
        return result

    async def barge_in(
        self, text: str, *, offset_s: float = 0.5, conditions: Any = None, kind: str = "barge_in",
        timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> CallerTurn:
        """Talk over the agent: start ``text`` ``offset_s`` seconds after the agent's reply to the
        last caller turn became audible at the caller (scheduled on the microphone's clock).
        """
        self._script(
            "barge_in", text=text, offset_s=offset_s, kind=kind, timeout=timeout,
            conditions=conditions.to_dict() if conditions is not None else None,
        )
        # synthesised first: bad text fails before the wait for the agent, and the speech is
        # ready when the agent's reply becomes audible (no synthesis between onset and start)
        audio = self.synthesize(text)
        last = self.record.caller_turns[-1] if self.record.caller_turns else None
        since = last.ended_at if last is not None and last.ended_at is not None else 0.0
        onset = await self._agent_onset_after(since, timeout)
        return await self._speak(
            audio, wait_for_listening=False, conditions=conditions, kind=kind, start_at=onset + offset_s,
        )

    async def backchannel(self, text: str = "mm-hmm", *, offset_s: float = 0.5) -> CallerTurn:
        """Say a short acknowledgement while the agent speaks (it should usually not stop)."""
        return await self.barge_in(text, offset_s=offset_s, kind="backchannel")

    async def stay_silent(self, duration_s: float) -> None:
        """Keep the microphone silent for ``duration_s`` seconds (a silent caller)."""
        assert self.caller is not None
        self._script("stay_silent", duration_s=duration_s)
        silence = CallerAudio(np.zeros(int(duration_s * CALL_SAMPLE_RATE), dtype=np.int16), "silence")
        future = self.caller.enqueue(silence, as_turn=False)
        await self._guard(_within(future, duration_s + 10.0, "the silence to pass"))

    async def reconnect(self, kind: str = "full", *, timeout: float = 30.0) -> float:
        """Drop and re-establish the caller's connection mid-call; returns the seconds it took.

        ``full``: the rtc SDK tears down its RTC session and joins again, re-publishing the
        microphone (a caller that leaves and rejoins). ``signal``: only the signalling connection
        is resumed. Waits until the SDK reports ``reconnected`` and the agent listens again.
        """
        assert self.caller is not None
        if kind not in ("full", "signal"):
            raise ConfigError(f"{kind!r} is not a reconnect kind. Valid kinds: full, signal.")
        self._script("reconnect", kind=kind, timeout=timeout)
        t0 = self.caller.now()
        caller = self.caller
        before = caller.reconnect_count
        await caller.reset_mic_subscription()
        entry: dict[str, Any] = {"t": t0, "kind": kind, "ok": False, "took": None}
        self.record.reconnects.append(entry)
        await caller.reconnect(kind)
        if not await self._guard(
            wait_until(lambda: caller.reconnect_count > before, self._changed, timeout)
        ):
            raise CallTimeoutError(f"the caller did not reconnect ({kind}) within {timeout:.0f} s")
        if kind == "full" and not await self._guard(
            # a full reconnect re-publishes the microphone: the agent must subscribe again
            wait_until(caller.mic_subscribed, self._changed, timeout)
        ):
            raise CallTimeoutError(
                f"after the full reconnect the agent did not subscribe to the caller's microphone "
                f"again within {timeout:.0f} s.\nTimeline:\n{self.record.timeline()}"
            )
        await self._wait_for_agent_state("listening", timeout=timeout)
        entry["took"] = self.caller.now() - t0
        entry["ok"] = True
        return float(entry["took"])

    async def hang_up(self) -> None:
        """End the call now (the fixture's teardown then has nothing left to do)."""
        if not self._closed:
            self._script("hang_up")
        await self.aclose()

    async def wait_for_call_end(self, *, timeout: float = DEFAULT_REPLY_TIMEOUT) -> str:
        """Wait until the agent (or anyone) ends the call from the server side: the room is
        deleted or the caller removed, as an agent's hang-up tool does. Returns the reason
        (``"ROOM_DELETED"``, ``"PARTICIPANT_REMOVED"``, ...).

        Outside this wait, the server ending the call fails the test's current wait at once
        (:class:`~pytest_livekit.errors.CallLostError`); here it is what the test waits for.

        Raises:
            CallTimeoutError: the call was still up after ``timeout`` seconds.
        """
        from pytest_livekit.errors import CallTimeoutError

        self._script("wait_for_call_end", timeout=timeout)
        self._expecting_end = True
        try:
            ended = await self._guard(wait_until(lambda: self.ended_by is not None, self._changed, timeout))
        finally:
            self._expecting_end = False
        if not ended or self.ended_by is None:
            raise CallTimeoutError(
                f"the call was still up {timeout:.1f} s later: nothing ended it (the room was not "
                "deleted and the caller not removed).\nHint: an agent ends a call by deleting the "
                "room (its hang-up tool calls ctx.delete_room() or the DeleteRoom API) or by removing "
                "the caller; check that the hang-up tool ran (call.record.tool_calls) and the agent's "
                "log, or raise timeout= if the agent hangs up later.\n"
                f"Timeline:\n{self.record.timeline()}"
            )
        return self.ended_by

    async def wait_for_agent_state(self, state: str, *, timeout: float = 10.0) -> None:
        """Wait until the agent's ``lk.agent.state`` attribute equals ``state``."""
        self._script("wait_for_agent_state", state=state, timeout=timeout)
        await self._wait_for_agent_state(state, timeout=timeout)

    async def _wait_for_agent_state(self, state: str, *, timeout: float) -> None:
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
        self._script("wait_for_agent_reply", timeout=timeout)
        caller = self.caller
        record = self.record
        if not record.caller_turns or record.caller_turns[-1].ended_at is None:
            raise CallTimeoutError(
                "wait_for_agent_reply() needs a finished caller turn first: await call.say(...)."
            )
        turn_end = record.caller_turns[-1].ended_at

        def replied() -> bool:
            # agent audio after the caller finished (a reply may run on from audio that began
            # while the caller was still talking, e.g. during a barge-in)
            heard = any(s.end > turn_end + 0.2 for s in caller.heard_segments())
            said = any(i.role == "assistant" and i.t >= turn_end for i in record.items)
            return heard and said and caller.agent_state() == "listening" and not caller.hearing_agent

        ok = await self._guard(wait_until(replied, self._changed, timeout))
        if not ok:
            heard = any(s.end > turn_end + 0.2 for s in caller.heard_segments())
            raise CallTimeoutError(
                f"the agent did not finish a reply within {timeout:.1f} s after the caller's turn "
                f"ended at {turn_end:.2f} s (heard agent audio: {'yes' if heard else 'no'}; agent "
                f"state {caller.agent_state()!r}).\n"
                f"Timeline:\n{record.timeline()}\n"
                f"Recording (written at teardown): {record.recording_path}"
            )

    def agent_lines(self, since: float = 0.0, *, interrupted: bool = True) -> list[str]:
        """What the agent said (its reply messages, in order) from ``since`` seconds into the
        call; ``interrupted=False`` leaves out replies the caller talked over.
        """
        return [
            i.text for i in self.record.items
            if i.role == "assistant" and i.t >= since and i.text and (interrupted or not i.interrupted)
        ]

    async def wait_for_agent_to_say(
        self, pattern: str | re.Pattern[str], *, timeout: float = DEFAULT_REPLY_TIMEOUT,
        since: float | None = None, interrupted: bool = True,
    ) -> str:
        """Wait until the agent said something matching ``pattern`` (a regular expression,
        searched case-insensitively in each reply since the caller's last turn, or since the call
        started, or since ``since`` seconds into the call) and finished saying it; returns that
        reply. ``interrupted=False`` waits for a reply the caller did not talk over.

        Raises:
            CallTimeoutError: nothing matching within ``timeout`` s (the message lists what the
                agent did say).
        """
        assert self.caller is not None
        regex = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
        self._script("wait_for_agent_to_say", pattern=regex.pattern, timeout=timeout)
        caller = self.caller
        if since is None:
            since = self._last_turn_end()
        found: list[str] = []

        def said() -> bool:
            if not found:
                found.extend(t for t in self.agent_lines(since, interrupted=interrupted) if regex.search(t))
            return bool(found) and caller.agent_state() == "listening" and not caller.hearing_agent

        if not await self._guard(wait_until(said, self._changed, timeout)):
            lines = self.agent_lines(since)
            raise CallTimeoutError(
                f"the agent did not say anything matching {regex.pattern!r} within {timeout:.1f} s"
                + (f" (it said: {lines!r})" if lines else " (it said nothing)")
                + f".\nTimeline:\n{self.record.timeline()}"
            )
        return found[0]

    async def converse(
        self,
        answers: Mapping[str, str | Callable[[str], str]],
        *,
        until: str | None = None,
        max_turns: int = 8,
        fallback: str | None = None,
        timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> list[tuple[str, str]]:
        """Answer the agent until it says ``until``: after each reply, say the answer of the
        first ``answers`` pattern (a regex searched case-insensitively in the reply; the value is
        the line to say, or a function of the reply that returns it).

        The caller speaks first only if the test did (``say`` before ``converse``); otherwise the
        first thing it waits for is the agent's greeting. Returns the ``(agent said, caller
        answered)`` exchanges. Every line said is in the call's script (a replay says the same).

        Raises:
            ConversationError: a reply no pattern matches and no ``fallback``; ``max_turns``
                replies without ``until``; or no reply within ``timeout`` s.
            ConfigError: no answers, or a ``max_turns`` below 1.
        """
        from pytest_livekit.errors import ConversationError

        if not answers:
            raise ConfigError("converse() needs answers: {'order number': 'one two three four', ...}")
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ConfigError(f"max_turns={max_turns!r} is not valid: give a whole number of replies >= 1.")
        compiled = [(re.compile(p, re.IGNORECASE), a) for p, a in answers.items()]
        done = re.compile(until, re.IGNORECASE) if until else None
        exchanges: list[tuple[str, str]] = []
        for _ in range(max_turns):
            try:
                reply = await self.wait_for_agent_to_say(r"\S", timeout=timeout)
            except CallTimeoutError as exc:
                raise ConversationError(f"the conversation stalled after {len(exchanges)} exchange(s): {exc}") from None
            reply = " ".join(self.agent_lines(self._last_turn_end()))  # every reply since the last turn
            if done is not None and done.search(reply):
                return exchanges
            answer = next((a for p, a in compiled if p.search(reply)), None)
            if answer is None and fallback is None:
                raise ConversationError(
                    f"the agent said {reply!r}, which none of the caller's answers matches "
                    f"({', '.join(repr(p.pattern) for p, _ in compiled)}) and there is no fallback.\n"
                    f"Conversation so far: {exchanges!r}"
                )
            line = fallback if answer is None else (answer(reply) if callable(answer) else answer)
            assert line is not None
            exchanges.append((reply, line))
            await self.say(line)
        if done is None:
            return exchanges
        raise ConversationError(
            f"the agent never said {until!r} in {max_turns} replies (the caller answered every one).\n"
            f"Conversation: {exchanges!r}"
        )

    def _last_turn_end(self) -> float:
        turns = self.record.caller_turns
        return turns[-1].ended_at if turns and turns[-1].ended_at is not None else 0.0

    async def wait_for_agent_audio(self, *, timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        """Wait until the caller heard a complete stretch of agent audio after its last turn ended
        (audio only: for agents without an AgentSession, e.g. tone or IVR bots).
        """
        assert self.caller is not None
        self._script("wait_for_agent_audio", timeout=timeout)
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
                f"{end:.2f} s (detector {'open' if caller.hearing_agent else 'idle'}).\n"
                f"Timeline:\n{self.record.timeline()}"
            )

    async def run_scenario(self, scenario: Any, *, persona_llm: Any = None, timeout: float | None = None) -> Any:
        """Play a declarative :class:`~pytest_livekit.call.scenarios.Scenario` (answers keyed by what
        the agent asks, fallback, hang-up phrase, turn budget, conditions, barge-in point,
        persona) and judge it: see :func:`pytest_livekit.call.scenarios.run_scenario`. Returns the
        :class:`~pytest_livekit.call.scenarios.ScenarioResult` (``completed``, ``explain()``), which
        is also the trace's ``scenario`` section. Hangs up at the end.
        """
        from pytest_livekit.call.scenarios import run_scenario

        return await run_scenario(self, scenario, persona_llm=persona_llm, timeout=timeout)

    # -- livekit's own assertion vocabulary -----------------------------------------------------
    def run_result(self) -> Any:
        """The call so far as livekit-agents' own ``RunResult`` (a snapshot with its own cursor):
        ``call.run_result().expect.next_event().is_function_call(name="lookup_order")``.

        See :func:`pytest_livekit.call.expect.voice_run_result`.
        """
        from pytest_livekit.call.expect import voice_run_result

        return voice_run_result(self)

    @property
    def expect(self) -> Any:
        """livekit-agents' ``RunAssert`` over the call's events so far, as in text tests:
        ``call.expect.next_event().is_message(role="user")``. The cursor is kept while no new
        event arrives; once the conversation went on, the next access starts a fresh snapshot
        (take :meth:`run_result` to hold one cursor across turns).
        """
        count = len(self.record.items) + len(self.record.tool_calls) + len(self.record.handoffs)
        cached = getattr(self, "_run_result", None)
        if cached is None or cached[0] != count:
            cached = (count, self.run_result())
            self._run_result = cached
        return cached[1].expect

    def __repr__(self) -> str:
        return f"<LivekitCall room={self.room_name!r} type={self.record.call_type!r}>"



class _OfflineInProcess:
    """Offline mode for in-process agents: on while at least one offline call runs here.

    While on, the process has the substitution, the network guard and placeholder provider
    credentials for the names that are unset (provider constructors check keys; nothing is ever
    sent with them). When the last offline call ends, the environment is as it was.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._listening = False
        self._saved_env: dict[str, str | None] = {}

    def acquire(self, server_host: str) -> None:
        """One more offline call in this process."""
        from pytest_livekit.agent import substitution
        from pytest_livekit.agent.netguard import guard

        with self._lock:
            if not self._listening:
                guard.on_blocked(
                    lambda attempt: substitution.report_violation(attempt.message(), attempt.room)
                )
                self._listening = True
            if self._count == 0:
                values = substitution.offline_environment(_placeholder_folder(), override=False)
                self._saved_env = {name: os.environ.get(name) for name in values}
                os.environ.update(values)
            self._count += 1
            substitution.activate()
            guard.activate([server_host])

    def release(self) -> None:
        """One offline call fewer; the last one restores the environment."""
        from pytest_livekit.agent import substitution
        from pytest_livekit.agent.netguard import guard

        with self._lock:
            self._count -= 1
            if self._count <= 0:
                self._count = 0
                substitution.deactivate()
                guard.deactivate()
                for name, value in self._saved_env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                self._saved_env = {}


def _placeholder_folder() -> Path:
    """A private folder for the placeholder credentials file (not in the user's project)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"pytest-livekit-offline-{os.getuid()}"


_offline_in_process = _OfflineInProcess()


async def _within(future: asyncio.Future[Any], timeout: float, what: str) -> Any:
    """Await ``future`` for at most ``timeout`` s (asyncio.wait: cancellation-safe on 3.11)."""
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        raise CallTimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
    return future.result()
