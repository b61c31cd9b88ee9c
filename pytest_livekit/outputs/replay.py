"""Replay a recorded call from its artifact folder: same script, same conditions, same seed.

A call's ``trace.json`` keeps the steps the test ran (``script``: ``say``, ``play``,
``speak`` (the clip is saved in the folder), ``barge_in``, ``backchannel``, ``stay_silent``,
``reconnect`` and the waits, with their
arguments, conditions and seeds), the agent under test and the call type's limits.
:class:`CallReplay` places a new call through a real livekit-server and runs those steps again;
the speech is re-synthesised by the same offline TTS (deterministic) or re-read from the same WAV
files, and every condition is rebuilt from its recorded spec and seed, so the caller's audio is
the same as in the original call. The agent is a live system, so its timing can differ: the
result compares the replay's metrics and limit breaches with the original's.

Command line (starts its own server, like the plugin's binary mode)::

    python -m pytest_livekit replay .livekit/calls/test_support_calls.test_refund_happy_path
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_livekit.errors import ConfigError
from pytest_livekit.outputs.trace import load_trace

#: Script actions replay knows, with the call method each maps to.
ACTIONS = (
    "say", "play", "speak", "barge_in", "stay_silent", "reconnect", "hang_up", "network_outage",
    "wait_for_agent_reply", "wait_for_agent_audio", "wait_for_agent_state", "wait_for_agent_to_say",
)
#: Metrics compared between the original call and its replay (trace ``metrics`` keys).
COMPARED = ("ttfa_p50", "wer", "cer", "duplicated_turns", "gap_seconds", "outcome")


@dataclass
class ReplayResult:
    """What a replay did and how it compares with the original call."""

    original: dict[str, Any]
    """The original call's trace."""
    trace: dict[str, Any] | None = None
    """The replay's trace (None if the call could not be placed)."""
    error: str | None = None
    """The exception a script step raised, as text (the original may have raised it too)."""
    breaches: list[str] = field(default_factory=list)
    """Limits of the call type the replay broke."""
    folder: Path | None = None
    """The replay's artifact folder."""

    @property
    def failed(self) -> bool:
        """True when the replay broke a limit or a step failed (the failure reproduced)."""
        return bool(self.error or self.breaches)

    def table(self) -> str:
        """Original vs replay, metric by metric (seconds and ratios as in the trace)."""
        before = self.original.get("metrics") or {}
        after = (self.trace or {}).get("metrics") or {}
        rows = [f"{'metric':<18}{'original':>14}{'replay':>14}"]
        for name in COMPARED:
            rows.append(f"{name:<18}{_fmt(before.get(name)):>14}{_fmt(after.get(name)):>14}")
        for i, turn in enumerate(before.get("turns") or []):
            again = (after.get("turns") or [{}] * (i + 1))[i] if i < len(after.get("turns") or []) else {}
            rows.append(f"{f'turn {i + 1} ttfa':<18}{_fmt(turn.get('ttfa')):>14}{_fmt(again.get('ttfa')):>14}")
            rows.append(f"{f'turn {i + 1} stt':<18}  {turn.get('stt_text')!r} -> {again.get('stt_text')!r}")
        rows.append(f"{'breaches':<18}{len(self.original.get('breaches') or []):>14}{len(self.breaches):>14}")
        rows.append(f"{'test outcome':<18}{self.original['test'].get('outcome', '?'):>14}"
                    f"{'failed' if self.failed else 'passed':>14}")
        return "\n".join(rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _voice(trace: dict[str, Any]) -> tuple[str, int]:
    """The TTS voice and speaking rate of the original caller (``tts:<voice>@<wpm>wpm``)."""
    for turn in trace.get("turns") or []:
        match = re.fullmatch(r"tts:(.+)@(\d+)wpm", str(turn.get("source") or ""))
        if match:
            return match.group(1), int(match.group(2))
    return "en-us", 140


class CallReplay:
    """Re-run a recorded call against the agent under test.

    Args:
        folder: the call's artifact folder (holding ``trace.json``).
        url: livekit-server WebSocket URL.
        api_key: server API key.
        api_secret: server API secret (never logged or saved).
        agent: agent spec overriding the recorded one (``module:attribute``).
        rootdir: folder the agent module is imported from (default: the recorded rootdir).
        out_dir: where the replay's artifacts go (default: ``<folder>-replay``).
        server_version: recorded in the replay's trace.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        agent: str | None = None,
        rootdir: str | Path | None = None,
        out_dir: str | Path | None = None,
        server_version: str = "unknown",
        relay: tuple[str, int] | None = None,
    ) -> None:
        self.relay = relay
        self.folder = Path(folder)
        self.trace = load_trace(self.folder)
        self.script = list(self.trace.get("script") or [])
        unknown = sorted({s.get("action", "?") for s in self.script} - set(ACTIONS))
        if unknown:
            raise ConfigError(f"{self.folder}: unknown script step(s) {', '.join(unknown)}; "
                              f"this pytest-livekit replays {', '.join(ACTIONS)}.")
        clipless = [s for s in self.script if s.get("action") == "speak" and not s.get("path")]
        if clipless:
            raise ConfigError(
                f"{self.folder}: a speak() step has no saved clip (the call had no artifacts folder), "
                "so its audio cannot be sent again."
            )
        if not any(s.get("action") in ("say", "play", "speak", "barge_in", "stay_silent") for s in self.script):
            raise ConfigError(
                f"{self.folder}: the trace has no caller steps to replay (was it written by "
                "pytest-livekit 0.1 with script recording?)."
            )
        self.agent_spec = agent or self.trace["call"].get("agent") or ""
        if not self.agent_spec:
            raise ConfigError(f"{self.folder}: the trace does not name the agent; pass agent=.")
        recorded_root = self.trace["test"].get("rootdir")
        self.rootdir = Path(rootdir or recorded_root or Path.cwd())
        self.out_dir = Path(out_dir) if out_dir else self.folder.with_name(self.folder.name + "-replay")
        self._url, self._key, self._secret = url, api_key, api_secret
        self.server_version = server_version

    async def run(self) -> ReplayResult:
        """Place the call, run the recorded steps, compute metrics; never raises for a failing
        step (that is the result), only for setup problems (agent import, server).
        """
        from pytest_livekit.agent.in_process import resolve_agent_target
        from pytest_livekit.call.livekit_call import LivekitCall
        from pytest_livekit.conditions.media import Conditions
        from pytest_livekit.outputs.artifacts import finish_call

        target = resolve_agent_target(self.agent_spec, rootdir=self.rootdir)
        recorded = self.trace.get("conditions") or {}
        voice, wpm = _voice(self.trace)
        call = LivekitCall(
            self._url, self._key, self._secret,
            agent=target,
            name=f"replay-{self.trace['call'].get('call_id', 'call')}",
            call_type=self.trace["call"].get("call_type"),
            artifacts_dir=self.out_dir,
            server_version=self.server_version,
            voice=voice,
            words_per_minute=wpm,
            conditions=Conditions.from_dict(recorded) if recorded.get("items") else None,
            network=self._network("caller"),
            agent_network=self._network("agent"),
            relay=self.relay,
        )
        call.limits = dict(self.trace.get("limits") or {})
        result = ReplayResult(original=self.trace, folder=self.out_dir)
        started = time.monotonic()
        try:
            async with call:
                for step in self.script:
                    await self._run_step(call, step)
        except Exception as exc:  # a failing step is what a replay is for: report it
            result.error = f"{type(exc).__name__}: {exc}"
        outcome = {
            "outcome": "failed" if result.error else "passed",
            "phase": "replay",
            "message": result.error or "",
            "duration_s": time.monotonic() - started,
            "replay_of": str(self.folder),
        }
        summary, trace = finish_call(call, nodeid=self.trace["test"].get("nodeid", ""),
                                     outcome=outcome, secrets=[self._secret])
        result.breaches = list(summary["breaches"])
        if result.breaches and not result.error:
            trace["test"]["outcome"] = "failed"
        result.trace = trace
        return result

    def _network(self, who: str) -> Any:
        """The recorded call's network path for ``who`` (same specs, same seed), if it had one."""
        from pytest_livekit.conditions.network import NetworkPath

        shaped = ((self.trace.get("network") or {}).get("shaped") or {}).get(who)
        return NetworkPath.from_dict(shaped["path"]) if shaped else None

    @property
    def shaped(self) -> bool:
        """Whether the recorded call ran through the packet relay (its replay needs one too)."""
        return bool((self.trace.get("network") or {}).get("shaped"))

    async def _run_step(self, call: Any, step: dict[str, Any]) -> None:
        from pytest_livekit.conditions.media import Conditions, spec_from_dict

        args = {k: v for k, v in step.items() if k not in ("action", "t")}
        if args.get("conditions"):
            args["conditions"] = Conditions.from_dict(args["conditions"])
        else:
            args.pop("conditions", None)
        action = step["action"]
        if action == "say":
            pause = args.pop("pause", None)
            await call.say(args.pop("text"), pause=spec_from_dict(pause) if pause else None, **args)
        elif action == "play":
            await call.play(args.pop("path"), **args)
        elif action == "speak":
            from pytest_livekit.audio import CallerAudio, load_wav

            clip = load_wav(args.pop("path"), text=args.pop("text", None))
            audio = CallerAudio(clip.pcm, str(args.pop("source", clip.source)), clip.text)
            pause = args.pop("pause", None)
            await call.speak(audio, pause=tuple(pause) if pause else None, **args)
        elif action == "barge_in":
            await call.barge_in(args.pop("text"), **args)
        elif action == "stay_silent":
            await call.stay_silent(float(args["duration_s"]))
        elif action == "reconnect":
            await call.reconnect(args.get("kind", "full"), timeout=float(args.get("timeout", 30.0)))
        elif action == "hang_up":
            await call.hang_up()
        elif action == "network_outage":
            await call.network_outage(float(args["seconds"]), direction=args["direction"], who=args["who"])
        elif action == "wait_for_agent_to_say":
            await call.wait_for_agent_to_say(args["pattern"], timeout=float(args.get("timeout", 30.0)))
        elif action == "wait_for_agent_state":
            await call.wait_for_agent_state(args["state"], timeout=float(args.get("timeout", 10.0)))
        else:  # wait_for_agent_reply / wait_for_agent_audio
            await getattr(call, action)(timeout=float(args.get("timeout", 30.0)))


async def replay_with_server(
    folder: str | Path,
    *,
    agent: str | None = None,
    server_binary: str | None = None,
    out_dir: str | Path | None = None,
) -> ReplayResult:
    """Start a livekit-server (binary mode, loopback, random secret), replay, stop the server."""
    import tempfile

    from pytest_livekit.server.binary import LivekitServer, find_server_binary

    folder = Path(folder)
    trace = load_trace(folder)
    root = Path(trace["test"].get("rootdir") or Path.cwd())
    binary = find_server_binary(server_binary, root=root)
    log = Path(tempfile.mkdtemp(prefix="pytest-livekit-replay-")) / "livekit-server.log"
    shaped = bool((trace.get("network") or {}).get("shaped"))
    node_ip = relay_ip = None
    if shaped:  # the call ran through the packet relay: so does its replay
        from pytest_livekit.session import relay_addresses

        node_ip, relay_ip = relay_addresses()
    with LivekitServer(binary, log_path=log, node_ip=node_ip, relay_ip=relay_ip) as server:
        relay = None
        if server.relay_addresses is not None:
            from pytest_livekit.call.caller import caller_host

            caller_host().start_relay(*server.relay_addresses)
            relay = server.relay_addresses[0]
        replay = CallReplay(
            folder, url=server.url, api_key=server.api_key, api_secret=server.api_secret,
            agent=agent, out_dir=out_dir, server_version=server.version, relay=relay,
        )
        return await replay.run()
