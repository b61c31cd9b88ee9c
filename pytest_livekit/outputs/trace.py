"""The call trace: one versioned JSON document per call (``trace.json`` in the call's folder).

The trace is what people and tools read after a run: the HTML report, the session JSONL, the
OpenTelemetry export, baselines and replay are all built from it. It is plain data built from a
:class:`~pytest_livekit.call.record.CallRecord` plus the computed metrics and the test's outcome.

Schema ``pytest-livekit/call-trace``, version :data:`TRACE_SCHEMA_VERSION`. Times are seconds
since the call started (``call.started_at``, an ISO-8601 UTC time, is time zero) unless a key
says otherwise (``*_ms`` milliseconds, ``*_epoch`` Unix seconds). Top-level keys:

- ``schema``, ``schema_version``: what this document is; readers refuse newer major versions.
- ``test``: ``nodeid``, ``outcome`` (``passed``, ``failed``, ``error``, ``timeout``, ``skipped``,
  or ``unknown`` outside pytest), ``phase`` that decided it, ``message`` (first lines of the
  failure, secrets redacted), ``duration_s``.
- ``call``: ``call_id`` (= room name), ``room_sid``, ``call_type``, ``agent`` (module:attribute),
  ``agent_mode``, ``started_at``, ``started_at_epoch``, ``duration_s``, ``outcome`` (the call's own
  outcome from the metrics: ``resolved``, ``escalated``, ``incomplete``, ...).
- ``participants``: ``[{identity, sid, role, kind}]``.
- ``versions``: ``plugin``, ``livekit_server``, ``livekit_agents``, ``livekit_rtc``, ``python``.
- ``machine``: ``platform``, ``cpus``, ``hostname_hash`` (a hash, not the name).
- ``media``: negotiated audio ``codecs``, ``sample_rate`` (Hz) and channel layout of the files.
- ``conditions``: the call-wide conditions with their ``seed`` (``{}`` when clean).
- ``script``: the steps the test ran (what :mod:`pytest_livekit.outputs.replay` re-runs).
- ``turns``: caller turns and agent turns in time order, each ``{who, index, start, end, text,
  ...}``; caller turns carry ``kind`` (``say``/``barge_in``/...), ``conditions`` and per-turn
  metrics (``ttfa_ms``, ``wer``, ``jitter_buffer_ms``: how much of ``ttfa_ms`` the answer's
  first heard segment spent in the caller's receive jitter buffer, mean per sample); agent turns span the agent's ``speaking`` state, carry
  ``added_at`` (when the reply entered the conversation), ``interrupted`` and the agent's
  self-reported ``latency`` (``e2e_latency_s``, ``llm_node_ttft_s``, ``tts_node_ttfb_s``).
- ``conversation``: every chat item with livekit-agents' own per-turn metrics (model latencies,
  seconds).
- ``heard``: ``[{start, end}]`` when the caller heard agent audio.
- ``transcripts``: ``raw`` (every STT event, interim and final, never cleaned) and ``final``.
- ``tool_calls``: ``[{t, name, arguments, output, is_error, call_id}]``.
- ``handoffs``: ``[{t, old_agent_id, new_agent_id}]`` (agent switches; ``old_agent_id`` is
  ``None`` for the session's start).
- ``state_changes``, ``errors``, ``reconnects``, ``receive_gaps``.
- ``network``: ``{}`` on the plain network; for a call through the packet relay ``shaped``
  (per side, ``caller``/``agent``: the ``path`` and the flow ``addresses``), ``links`` (per link,
  per direction: packets in, forwarded, dropped by loss / queue / outage, duplicated, reordered,
  queue and added delay p50/p95/max in ms) and ``outages`` the test started.
- ``scenario``: ``{}`` unless the caller played a scenario (:mod:`pytest_livekit.call.scenarios`):
  its ``name``, ``source``, ``goal``, ``cohort``, ``character``, ``facts``, table ``variation``,
  ``steps`` (``{agent_said, caller_said, chosen_by}``: every line the caller chose and why),
  ``completed``, ``goal_reached``, ``stopped``, ``tool_accuracy``, ``tools_matched``,
  ``tools_missing``, ``outcome`` and ``judge``.
- ``clock``: ``realtime`` is False when the caller could not keep real time (a frame left or
  arrived > 20 ms late; each one in ``misses``: ``{t, direction, late_ms}``): its timings are
  then not to be trusted.
- caller turns also carry ``speech_end``: the end of the last audible frame sent (where
  time-to-first-audio starts).
- ``metrics``: :func:`pytest_livekit.metrics.call_metrics.compute_metrics` output (seconds, ratios).
- ``limits`` and ``breaches``: the call type's limits and the ones this call broke.
- ``rtc``: caller-side WebRTC statistics at hang-up.
- ``server``: where the call ran on a cluster (``--livekit-server=cluster``): ``signal_node_id``
  (the node the caller signalled to), ``room_node_id`` (the room's media), ``agent_node_id``
  and ``nodes`` (every node id in node order); ``{}`` on a single server.
- ``artifacts``: file names in the folder (``recording`` stereo, ``caller`` and ``agent``
  channels, ``record`` = ``call.json``).

Never contains the API secret or an access token: :func:`write_trace` redacts any JWT-shaped
text and the strings it is told are secret before writing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_livekit._files import atomic_write_text
from pytest_livekit.call.record import CallRecord

#: Name of the trace document type.
TRACE_SCHEMA = "pytest-livekit/call-trace"
#: Version of the trace layout; bump on any incompatible change (additions keep the version).
TRACE_SCHEMA_VERSION = 1
#: File name of the trace in a call's folder.
TRACE_FILE = "trace.json"

from pytest_livekit.redaction import redact  # noqa: E402
from pytest_livekit.units import to_ms  # noqa: E402


def versions(server_version: str = "unknown") -> dict[str, str]:
    """Versions that change what a call measures: plugin, server, livekit-agents, rtc, Python."""
    from importlib import metadata

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "plugin": dist("pytest-livekit"),
        "livekit_server": server_version,
        "livekit_agents": dist("livekit-agents"),
        "livekit_rtc": dist("livekit"),
        "python": platform.python_version(),
    }


def machine() -> dict[str, Any]:
    """The machine, enough to tell two apart without naming it (the host name is hashed)."""
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count() or 0,
        "hostname_hash": hashlib.sha256(platform.node().encode()).hexdigest()[:12],
    }


def _turn_metrics(metrics: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(t["index"]): t for t in metrics.get("turns") or [] if "index" in t}


def _unique(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for item in items:
        if dict(item) not in seen:
            seen.append(dict(item))
    return seen


def build_trace(
    record: CallRecord,
    *,
    metrics: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    breaches: Iterable[str] = (),
    test: Mapping[str, Any] | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """The trace document of one call (see the module docstring for the schema).

    Args:
        record: the call's record.
        metrics: :meth:`CallMetrics.to_dict` output, if computed.
        limits: the call type's limits for this call.
        breaches: descriptions of the limits this call broke.
        test: ``{"nodeid", "outcome", "phase", "message", "duration_s"}`` from pytest.
        duration_s: the call's length in seconds (default: the last recorded event).
    """
    from pytest_livekit.audio import (
        CALL_SAMPLE_RATE,  # here, not at import: the plugin loads this module light
    )
    from pytest_livekit.metrics.turns import jitter_buffer_delay

    metrics = dict(metrics or {})
    per_turn = _turn_metrics(metrics)
    turns: list[dict[str, Any]] = []
    for turn in record.caller_turns:
        m = per_turn.get(turn.index, {})
        turns.append({
            "who": "caller",
            "index": turn.index,
            "kind": turn.kind,
            # a clip still queued when the call ended never started (the recorder's -1)
            "start": turn.started_at if turn.started_at >= 0 else None,
            "end": turn.ended_at,
            "speech_end": turn.speech_ended_at,
            "text": turn.text,
            "source": turn.source,
            "conditions": turn.conditions,
            "pause": list(turn.pause) if turn.pause else None,
            "stt_text": m.get("stt_text"),
            "ttfa_ms": to_ms(m.get("ttfa")),
            # part of ttfa_ms: WebRTC's receive buffer, which it re-adapts during a call
            "jitter_buffer_ms": to_ms(jitter_buffer_delay(record, turn.index)),
            "wer": m.get("wer"),
        })
    speaking = _agent_speaking_intervals(record)
    agent_index = 0
    for item in record.items:
        if item.role != "assistant":
            continue
        # the item is added when the reply ends; its speech is the last "speaking" stretch
        # that began before that
        began = [iv for iv in speaking if iv[0] <= item.t + 0.05]
        speech_start, speech_end = began[-1] if began else (item.t, item.t)
        latency = {
            f"{key}_s": item.metrics[key]
            for key in ("e2e_latency", "llm_node_ttft", "tts_node_ttfb", "transcription_delay",
                        "end_of_turn_delay")
            if isinstance(item.metrics.get(key), (int, float))
        }
        turns.append({
            "who": "agent",
            "index": agent_index,
            "kind": "reply",
            "start": speech_start,
            "end": speech_end,
            "added_at": item.t,
            "text": item.text,
            "interrupted": item.interrupted,
            "latency": latency,
        })
        agent_index += 1
    turns.sort(key=lambda t: (float("inf") if t["start"] is None else t["start"], t["who"]))
    end: float | None = duration_s
    if end is None:
        times: list[float] = [0.0]
        times += [t.ended_at or t.started_at for t in record.caller_turns]
        times += [s.end for s in record.heard] + [i.t for i in record.items]
        end = max(times)
    started = _dt.datetime.fromtimestamp(record.started_at_epoch, tz=_dt.UTC)
    test_part = {"nodeid": "", "outcome": "unknown", "phase": "", "message": "", "duration_s": None}
    test_part.update(dict(test or {}))
    return {
        "schema": TRACE_SCHEMA,
        "schema_version": TRACE_SCHEMA_VERSION,
        "test": test_part,
        "call": {
            "call_id": record.call_id,
            "room_sid": record.room_sid,
            "call_type": record.call_type,
            "agent": record.agent_spec,
            "agent_mode": record.agent_mode,
            # offline: the agent's cloud parts were replaced by doubles (listed when in-process)
            "providers": record.providers,
            "substitutions": list(record.substitutions),
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "started_at_epoch": record.started_at_epoch,
            "duration_s": end,
            "outcome": metrics.get("outcome"),
        },
        "participants": list(record.participants),
        "versions": versions(record.server_version),
        "machine": machine(),
        "media": {
            "codecs": _unique(record.media.get("codecs", [])),
            "sample_rate": CALL_SAMPLE_RATE,
            "recording": "stereo: left = caller as sent, right = agent as heard by the caller",
        },
        "conditions": dict(record.conditions),
        "script": list(record.script),
        "turns": turns,
        "heard": [{"start": s.start, "end": s.end} for s in record.heard],
        "conversation": [
            {"t": i.t, "role": i.role, "text": i.text, "interrupted": i.interrupted,
             "metrics": dict(i.metrics)}
            for i in record.items
        ],
        "transcripts": {
            "raw": [{"t": t.t, "text": t.text, "is_final": t.is_final} for t in record.transcripts],
            "final": [{"t": t.t, "text": t.text} for t in record.transcripts if t.is_final],
        },
        "tool_calls": [
            {"t": c.t, "name": c.name, "arguments": c.arguments, "output": c.output,
             "is_error": c.is_error, "call_id": c.call_id}
            for c in record.tool_calls
        ],
        "handoffs": [
            {"t": h.t, "old_agent_id": h.old_agent_id, "new_agent_id": h.new_agent_id}
            for h in record.handoffs
        ],
        "state_changes": [
            {"t": c.t, "who": c.who, "old": c.old, "new": c.new} for c in record.state_changes
        ],
        "errors": [{"t": e.t, "message": e.message, "source": e.source} for e in record.errors],
        "reconnects": list(record.reconnects),
        "receive_gaps": [{"start": a, "duration": b} for a, b in record.receive_gaps],
        "clock": {
            "source": "caller monotonic clock, 10 ms frame slots",
            "realtime": not record.clock_misses,
            "misses": list(record.clock_misses),
        },
        "metrics": metrics,
        "limits": dict(limits or {}),
        "breaches": list(breaches),
        "rtc": dict(record.rtc),
        "network": dict(record.network),
        "server": dict(record.server),
        "scenario": dict(record.scenario),
        "artifacts": {
            "folder": record.artifacts_dir,
            "recording": "call.wav",
            "caller": "caller.wav",
            "agent": "agent.wav",
            "record": "call.json",
            "trace": TRACE_FILE,
        },
    }


def _agent_speaking_intervals(record: CallRecord) -> list[tuple[float, float]]:
    """``(start, end)`` of each stretch the agent reported ``speaking`` (state changes)."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for change in sorted((c for c in record.state_changes if c.who == "agent"), key=lambda c: c.t):
        if change.new == "speaking" and start is None:
            start = change.t
        elif change.new != "speaking" and start is not None:
            out.append((start, change.t))
            start = None
    if start is not None:
        out.append((start, start))
    return out


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every JWT-shaped token and every given secret replaced by ``[redacted]``
    (the plugin's one rule: :mod:`pytest_livekit.redaction`).
    """
    return redact(text, secrets)


def dumps(trace: Mapping[str, Any], secrets: Iterable[str] = ()) -> str:
    """The trace as JSON text, redacted (see :func:`redact_text`)."""
    return redact_text(json.dumps(json_safe(trace), indent=1, default=str, allow_nan=False), secrets)


def write_trace(trace: Mapping[str, Any], folder: str | Path, secrets: Iterable[str] = ()) -> Path:
    """Write ``trace.json`` into ``folder`` atomically (temp file, then rename)."""
    return atomic_write_text(Path(folder) / TRACE_FILE, dumps(trace, secrets))


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a trace from a ``trace.json`` or a call folder; refuses unknown schemas/versions."""
    p = Path(path)
    if p.is_dir():
        p = p / TRACE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no call trace at {p} (a call folder holds trace.json)")
    data = json.loads(p.read_text())
    if data.get("schema") != TRACE_SCHEMA:
        raise ValueError(f"{p} is not a pytest-livekit call trace (schema {data.get('schema')!r})")
    if int(data.get("schema_version", 0)) > TRACE_SCHEMA_VERSION:
        raise ValueError(
            f"{p} has trace schema version {data['schema_version']}; this pytest-livekit reads "
            f"up to {TRACE_SCHEMA_VERSION}. Upgrade pytest-livekit to read it."
        )
    return dict(data)


def finite_number(value: Any) -> float | None:
    """A trace value as a finite float, or None (missing, NaN/inf, not a number; a bool is not a
    number here). What every trace reader (report, baseline, OTel) uses for optional figures.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (not JSON) by None, recursively."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_safe(trace: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``trace`` that ``json.dumps(..., allow_nan=False)`` accepts."""
    return dict(_json_safe(dict(trace)))

