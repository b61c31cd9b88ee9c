"""The call record: everything one test call observed, on one clock.

All times are float **seconds since the call started**, on the caller's clock: the caller's
process times every frame it sends and receives with ``time.monotonic()`` on a 10 ms grid (see
:mod:`pytest_livekit.call.caller`). Events the agent reports (states, transcripts, tools) carry its
wall-clock epoch and are converted with ``started_at_epoch``, taken at the same instant as the
monotonic time zero. The record is plain data: metrics and assertions are pure functions of it,
and it serialises to JSON (``call.json`` next to the recording).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_livekit._files import atomic_write_text

#: Version of the ``call.json`` layout; bump on any incompatible change.
RECORD_FORMAT_VERSION = 1


@dataclass
class CallerTurn:
    """One thing the caller said (a ``say`` or ``play``)."""

    index: int
    """0-based position among the caller's turns."""
    source: str
    """``tts:<voice>`` or the WAV path."""
    text: str | None
    """What the caller said (ASR reference); ``None`` for a WAV without a given text."""
    started_at: float
    """When its first frame went to WebRTC, in seconds since call start."""
    ended_at: float | None = None
    """When its last frame went to WebRTC (end of the clip on the wire), in seconds since call start."""
    speech_ended_at: float | None = None
    """End of its last audible frame on the wire (level above the detector's -45 dBFS), in seconds
    since call start: where time-to-first-audio starts. ``None`` for a silent clip."""
    kind: str = "say"
    """``say``, ``barge_in``, ``backchannel`` or ``pause`` (a sentence with a mid-sentence pause)."""
    pause: tuple[float, float] | None = None
    """For ``pause`` turns: the pause's (start, end) offsets into the clip, in seconds."""
    conditions: str = ""
    """Description of the conditions applied to this turn's audio (with the seed)."""

    @property
    def duration(self) -> float | None:
        """Speech length on the wire in seconds."""
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass
class HeardSegment:
    """An interval in which the caller heard the agent (energy detector on received audio)."""

    start: float
    """Seconds since call start (arrival of the first loud frame)."""
    end: float
    """Seconds since call start (arrival of the last loud frame)."""


@dataclass
class Transcript:
    """A user transcript the agent's STT produced (raw, as emitted by the session)."""

    t: float
    """Seconds since call start when the agent emitted it."""
    text: str
    """Raw STT text, never cleaned up."""
    is_final: bool
    """False for interim results."""


@dataclass
class StateChange:
    """An agent or user state change reported by the agent session."""

    t: float
    """Seconds since call start (user changes are VAD-backdated by livekit-agents)."""
    who: str
    """``"agent"`` or ``"user"``."""
    old: str
    """Previous state (``listening``, ``thinking``, ``speaking``, ...)."""
    new: str
    """New state."""


@dataclass
class ConversationItem:
    """A chat message added to the conversation, with its per-turn metrics."""

    t: float
    """Seconds since call start when it was added."""
    role: str
    """``user`` or ``assistant``."""
    text: str
    """Message text."""
    interrupted: bool = False
    """True if the agent was interrupted while saying it."""
    metrics: dict[str, float] = field(default_factory=dict)
    """livekit-agents' self-reported per-turn metrics (seconds; ``*_at`` are absolute epochs)."""
    seq: int = -1
    """Position among the session's conversation events (messages, tool executions, handoffs)
    in the order the agent emitted them; ``-1`` when unknown (records from older versions)."""


@dataclass
class ToolCall:
    """A function tool the agent executed."""

    t: float
    """Seconds since call start when execution was reported."""
    name: str
    """Tool name."""
    arguments: dict[str, Any]
    """Arguments as parsed from the model's JSON."""
    output: str | None = None
    """The tool's output text."""
    is_error: bool = False
    """True if the tool raised."""
    call_id: str = ""
    """The model's call id."""
    seq: int = -1
    """Position of the session event that reported it among the conversation events (see
    :attr:`ConversationItem.seq`); tools reported together share it. ``-1`` when unknown."""


@dataclass
class Handoff:
    """The session switched to another agent (livekit-agents' ``AgentHandoff`` chat item)."""

    t: float
    """Seconds since call start when it was reported."""
    new_agent_id: str
    """Id of the agent that took over (by default its class name in snake case)."""
    old_agent_id: str | None = None
    """Id of the agent it replaced; ``None`` at the session's start (the first agent)."""
    seq: int = -1
    """Position among the conversation events (see :attr:`ConversationItem.seq`)."""


@dataclass
class AgentError:
    """An error the agent session reported, or the agent's crash."""

    t: float
    """Seconds since call start."""
    message: str
    """Error text (a traceback for crashes)."""
    source: str = "session"
    """``session`` (error event) or ``crash`` (exception in the agent)."""


@dataclass
class CallRecord:
    """Everything one call observed. Built live by :class:`~pytest_livekit.call.livekit_call.LivekitCall`."""

    call_id: str
    """Unique id (also the room name)."""
    call_type: str | None
    """The call type from the marker (``refund``, ``booking``, ...)."""
    started_at_epoch: float
    """Wall-clock epoch seconds of the call's time zero."""
    agent_mode: str = "in-process"
    """How the agent ran: ``in-process`` or ``worker``."""
    server_version: str = "unknown"
    """livekit-server version."""
    caller_turns: list[CallerTurn] = field(default_factory=list)
    """What the caller said, in order."""
    heard: list[HeardSegment] = field(default_factory=list)
    """When the caller heard the agent."""
    transcripts: list[Transcript] = field(default_factory=list)
    """User transcripts from the agent's STT, interim and final."""
    state_changes: list[StateChange] = field(default_factory=list)
    """Agent and user state changes."""
    items: list[ConversationItem] = field(default_factory=list)
    """Conversation messages (user and assistant)."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Tools the agent executed."""
    handoffs: list[Handoff] = field(default_factory=list)
    """Agent handoffs, including the session's start when the caller was there to see it."""
    errors: list[AgentError] = field(default_factory=list)
    """Errors reported by the agent."""
    receive_gaps: list[tuple[float, float]] = field(default_factory=list)
    """``(start s, duration s)`` of stalls > 30 ms between audio frames the caller received
    (caller's vantage point: dropped or late audio)."""
    conditions: dict[str, Any] = field(default_factory=dict)
    """The call-wide :class:`~pytest_livekit.conditions.media.Conditions` (``to_dict()``: specs and seed)."""
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    """Caller reconnects: ``{"t": s, "kind": "full"|"signal", "ok": bool, "took": s}``."""
    jitter_buffer: list[dict[str, float]] = field(default_factory=list)
    """The caller's receive jitter buffer for the agent's audio, sampled after each heard segment
    closed: ``{"segment_start": s, "t": s, "delay_total": s, "emitted": samples,
    "target_delay_total": s}`` (W3C cumulative counters; see :func:`jitter_buffer_delays`)."""
    clock_misses: list[dict[str, Any]] = field(default_factory=list)
    """Moments the caller could not keep real time: ``{"t": s, "direction": "send"|"receive",
    "late_ms": ms}`` for every frame that left or arrived more than 20 ms late. Timing metrics of a
    call with misses are flagged in its trace and in failure messages."""
    frames_in_turns: int = 0
    """10 ms frames of caller speech the microphone handled."""
    frames_dropped: int = 0
    """Of those, frames deliberately not sent (frame-loss condition)."""
    rtc: dict[str, float] = field(default_factory=dict)
    """Caller-side WebRTC stats at hang-up: ``packets_lost``, ``packets_received``, ``jitter`` (s),
    ``concealed_samples``, ``total_samples_received`` (agent audio received), ``round_trip_time`` (s,
    caller to server), and the caller's own audio: ``uplink_packets_sent``, ``uplink_packets_lost``
    and ``uplink_fraction_lost`` (from the server's receiver reports)."""
    room_sid: str = ""
    """The server's id of the room (``RM_...``), when known."""
    providers: str = "offline"
    """``offline`` (the agent's cloud providers replaced by doubles) or ``real``."""
    substitutions: list[dict[str, str]] = field(default_factory=list)
    """What offline mode replaced in an in-process agent: ``{"where", "original", "replacement"}``."""
    participants: list[dict[str, Any]] = field(default_factory=list)
    """Who was in the call: ``{"identity", "sid", "role": "caller"|"agent", "kind"}``."""
    media: dict[str, Any] = field(default_factory=dict)
    """Codecs the caller's connection negotiated: ``{"codecs": [{"mime_type", "clock_rate",
    "channels", "payload_type"}]}`` (from the WebRTC codec stats at hang-up)."""
    network: dict[str, Any] = field(default_factory=dict)
    """The shaped network, when the call ran through the packet relay (empty on the plain
    network): ``shaped`` (per side, ``caller``/``agent``: ``{"path": NetworkPath.to_dict(),
    "addresses": [[ip, port], ...]}``), ``links`` (per link: ``{"flows", "uplink": LinkStats,
    "downlink": LinkStats}`` as dicts), ``outages`` (``{"t", "seconds", "direction", "who"}``) and,
    with an in-process agent, ``agent_rtc``: the agent's receive stats of the caller's audio (the
    far end of the caller's uplink; keys as :attr:`rtc`)."""
    scenario: dict[str, Any] = field(default_factory=dict)
    """The scenario the caller played, when it played one (:meth:`ScenarioResult.to_dict
    <pytest_livekit.call.scenarios.ScenarioResult.to_dict>`: name, cohort, facts, table row, the
    exchanges with why each caller line was chosen, completed, tool accuracy); else empty."""
    server: dict[str, Any] = field(default_factory=dict)
    """Where the call ran: ``signal_node_id``, ``room_node_id``, ``agent_node_id``, ``nodes``
    (a cluster's node ids in node order); empty on a single server."""
    agent_spec: str = ""
    """The agent under test as ``module:attribute`` (for replay)."""
    script: list[dict[str, Any]] = field(default_factory=list)
    """What the test asked the caller to do, in order (``say``, ``play``, ``barge_in``,
    ``backchannel``, ``stay_silent``, ``reconnect`` and the waits), with the arguments needed to
    replay it: see :mod:`pytest_livekit.outputs.replay`."""
    recording_path: str | None = None
    """Stereo WAV (left: caller sent, right: agent heard), when written."""
    artifacts_dir: str | None = None
    """Folder holding this call's artifacts."""

    def rel(self, epoch: float) -> float:
        """Convert a wall-clock epoch to seconds since call start."""
        return epoch - self.started_at_epoch

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with the format version."""
        data = asdict(self)
        data["format_version"] = RECORD_FORMAT_VERSION
        return data

    def save(self, path: str | Path, secrets: Iterable[str] = ()) -> Path:
        """Write ``call.json`` atomically (write to a temp file, then rename), with every
        JWT-shaped token and every given secret redacted (the one rule of :mod:`pytest_livekit.redaction`).
        """
        from pytest_livekit.redaction import redact as redact_text

        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        return atomic_write_text(path, redact_text(text, secrets))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        """Rebuild a record from :meth:`to_dict` output (for offline recomputation)."""
        data = dict(data)
        data.pop("format_version", None)
        rec = cls(
            call_id=data.pop("call_id"),
            call_type=data.pop("call_type"),
            started_at_epoch=data.pop("started_at_epoch"),
        )
        builders: dict[str, Any] = {
            "caller_turns": CallerTurn,
            "heard": HeardSegment,
            "transcripts": Transcript,
            "state_changes": StateChange,
            "items": ConversationItem,
            "tool_calls": ToolCall,
            "handoffs": Handoff,
            "errors": AgentError,
        }
        for key, value in data.items():
            if key in builders:
                setattr(rec, key, [builders[key](**v) for v in value])
            elif key == "receive_gaps":
                rec.receive_gaps = [(float(a), float(b)) for a, b in value]
            else:
                setattr(rec, key, value)
        return rec

    @classmethod
    def load(cls, path: str | Path) -> CallRecord:
        """Read a ``call.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- views used by metrics and failure messages -------------------------------------------
    def turn(self, index: int = -1) -> CallerTurn:
        """The caller turn at ``index`` (negative counts from the end)."""
        if not self.caller_turns:
            raise IndexError("the caller has not said anything in this call")
        return self.caller_turns[index]

    def turn_window(self, index: int = -1) -> tuple[float, float]:
        """``(start, end)`` of a caller turn's window: until the next caller turn starts."""
        turns = self.caller_turns
        if not turns:
            raise IndexError("the caller has not said anything in this call")
        if not -len(turns) <= index < len(turns):
            raise IndexError(f"caller turn {index} does not exist (the call has {len(turns)})")
        i = index % len(turns)
        start = turns[i].started_at
        end = turns[i + 1].started_at if i + 1 < len(turns) else float("inf")
        return start, end

    def timeline(self, around: float | None = None, width: float = 15.0) -> str:
        """Human-readable merged timeline (caller, agent heard, transcripts, tools), optionally
        limited to ``around ± width`` seconds.
        """
        rows: list[tuple[float, str]] = []
        for turn in self.caller_turns:
            end = f"{turn.ended_at:06.2f}" if turn.ended_at is not None else "  …   "
            rows.append((turn.started_at, f"caller  {_ts(turn.started_at)}–{end}  {turn.text!r}"))
        for seg in self.heard:
            rows.append((seg.start, f"heard   {_ts(seg.start)}–{seg.end:06.2f}  (agent audio)"))
        for item in self.items:
            flag = " [interrupted]" if item.interrupted else ""
            rows.append((item.t, f"{item.role:<7} {_ts(item.t)}         {item.text!r}{flag}"))
        for tr in self.transcripts:
            if tr.is_final:
                rows.append((tr.t, f"stt     {_ts(tr.t)}         {tr.text!r}"))
        for tool in self.tool_calls:
            args = ", ".join(f"{k}={v!r}" for k, v in tool.arguments.items())
            rows.append((tool.t, f"tool    {_ts(tool.t)}         {tool.name}({args}) -> {tool.output!r}"))
        for h in self.handoffs:
            rows.append((h.t, f"handoff {_ts(h.t)}         {h.old_agent_id or '(start)'} -> {h.new_agent_id}"))
        for err in self.errors:
            rows.append((err.t, f"error   {_ts(err.t)}         {err.message.splitlines()[0] if err.message else ''}"))
        rows.sort(key=lambda r: r[0])
        if around is not None:
            rows = [r for r in rows if abs(r[0] - around) <= width]
        return "\n".join(r[1] for r in rows) if rows else "(nothing recorded)"


def _ts(t: float) -> str:
    return f"{t:06.2f}"
