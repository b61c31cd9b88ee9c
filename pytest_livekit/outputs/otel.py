"""OpenTelemetry export: a run's calls as OTLP/JSON spans, for the tracing tool a team already uses.

``--livekit-otel=FILE`` (or the ``livekit_otel`` ini value) writes every call of the run to
``FILE`` as one OTLP/JSON ``ExportTraceServiceRequest`` (``{"resourceSpans": [...]}``) on a single
line: the OTLP/JSON encoding of https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding
(``traceId``/``spanId`` as lowercase hex, enums as integers, 64-bit integers as decimal strings,
camelCase keys). A one-line document is also a valid OTLP JSON Lines file, so the Collector's
``otlpjsonfile`` receiver reads it as is, and so does anything that imports OTLP JSON.

Needs the ``otel`` extra (``pip install "pytest-livekit[otel]"``: the OpenTelemetry SDK and its
OTLP protobuf encoder, which livekit-agents already brings). The spans are built as SDK
``ReadableSpan`` objects and encoded by the SDK's own OTLP encoder, so the document has exactly
the OTLP structure; this module only turns the protobuf into OTLP/JSON. The global tracer
provider is never touched (the agent under test may use it), and no ``OTEL_*`` environment
variable changes the output: the same traces always give the same document.

Layout, one OpenTelemetry trace per call (see :mod:`pytest_livekit.outputs.trace` for the fields):

- **trace id**: the first 16 bytes of ``sha256(call_id)``; span ids are derived from the call id
  and the span's position the same way. Exporting the same call twice gives the same ids.
- **root span** ``call <test node id>``: from the call's start (``started_at_epoch``) to its end
  (``+ duration_s``). Status ``ERROR`` with the (redacted) failure message when the test did not
  pass (``failed``, ``error``, ``timeout``); ``OK`` when it passed; unset when skipped or
  ``unknown``. Events: agent/user state changes (``agent thinking``, ``user speaking``, ...),
  agent errors (``exception``), caller reconnects (``reconnect``) and audio receive gaps
  (``receive gap``).
- **turn spans** ``caller turn N`` / ``agent turn N`` (N counts from 1, like failure messages;
  the attribute ``voice.turn.index`` keeps the trace's 0-based index), children of the root,
  from the turn's ``start`` to its ``end``. A turn without an end (still going at hang-up, or a
  trace from an older version) ends with the call and has ``voice.turn.open = true``. An agent
  turn has an event ``conversation item added`` at ``added_at``.
- **tool spans** ``tool <name>``, children of the root. A tool call only has the time ``t`` at
  which livekit-agents reported the finished execution, not when it started, so the span has
  zero length at ``t``: any invented length would read as the tool's latency.

Attributes (``None`` values, NaN and empty lists are left out; numbers keep their trace units,
named by the suffix):

- resource: ``service.name`` = ``pytest-livekit``, ``service.version`` (plugin),
  ``livekit.agents.version``, ``livekit.rtc.version``, ``process.runtime.version`` (Python),
  ``test.machine.platform``, ``test.machine.cpus``, ``test.machine.hostname_hash``.
- root: ``test.nodeid``, ``test.outcome``, ``test.phase``, ``test.duration_s`` and the semantic
  conventions' ``test.case.name`` and ``test.case.result.status`` (``pass``/``fail``);
  ``livekit.room.name`` (= call id), ``livekit.room.sid``, ``lk.room_sid`` (the join key
  livekit-agents' and livekit-server's own telemetry use, to find the agent's spans of this
  call), ``livekit.call_type``, ``livekit.call.outcome``, ``livekit.agent.spec``,
  ``livekit.agent.mode``, ``livekit.server.version``, ``livekit.participant.identities`` /
  ``.sids`` / ``.roles`` / ``.kinds`` (parallel arrays), ``livekit.media.codecs`` (MIME types),
  ``livekit.media.sample_rate`` (Hz), ``livekit.conditions.seed``, ``livekit.conditions`` (the
  conditions as JSON), ``livekit.limit.<name>``, ``livekit.breaches``, ``livekit.artifacts.dir``
  and ``voice.metric.<name>`` (doubles) for every number in ``metrics``, one level of nesting
  included (``voice.metric.wer``, ``voice.metric.caller_quality.snr_db``, ...).
- turns: ``voice.turn.<key>`` for the trace turn's keys (``who``, ``index``, ``kind``,
  ``text``, ``source``, ``conditions``, ``pause_s``, ``stt_text``, ``ttfa_ms``, ``wer``,
  ``interrupted``) and ``voice.turn.latency.<key>`` for the agent's self-reported latencies
  (``e2e_latency_s``, ``llm_node_ttft_s``, ``tts_node_ttfb_s``, seconds).
- tools, with the GenAI semantic conventions trace tools already display:
  ``gen_ai.operation.name`` = ``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
  ``gen_ai.tool.call.arguments`` (JSON text), ``gen_ai.tool.call.result``, plus
  ``livekit.tool.is_error``; a failed tool has status ``ERROR`` and ``error.type`` =
  ``tool_error``.

Nothing is added beyond the trace, which is already redacted (no environment, no tokens).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_livekit._files import atomic_write_text
from pytest_livekit.errors import ConfigError
from pytest_livekit.outputs.trace import finite_number

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Status

#: What to install when the OpenTelemetry packages are missing.
OTEL_INSTALL_HINT = 'pip install "pytest-livekit[otel]"'
#: ``service.name`` of the exported spans' resource.
SERVICE_NAME = "pytest-livekit"
#: Name of the instrumentation scope of the exported spans.
SCOPE_NAME = "pytest_livekit"
#: Test outcomes that make the call's root span an ``ERROR``.
FAILED_OUTCOMES = frozenset({"failed", "error", "timeout"})

_NS_PER_S = 1_000_000_000
_INT64 = 2**63
# OTLP/JSON writes these bytes fields as hex; protobuf's JSON mapping writes base64
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


class OtelUnavailableError(ConfigError, ImportError):
    """The OpenTelemetry SDK or its OTLP encoder is not installed (the ``otel`` extra)."""


def require_otel() -> None:
    """Check that the OpenTelemetry packages the export needs can be imported.

    Raises:
        OtelUnavailableError: a package is missing; the message says what to install.
    """
    try:
        import opentelemetry.exporter.otlp.proto.common.trace_encoder  # noqa: F401
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise OtelUnavailableError(
            f"the OpenTelemetry export (--livekit-otel) needs the OpenTelemetry SDK and its OTLP "
            f"encoder, which cannot be imported ({exc}).\nHint: {OTEL_INSTALL_HINT}"
        ) from exc


def write_otlp_json(path: Path, traces: Sequence[Mapping[str, Any]]) -> Path:
    """Write the calls as one OTLP/JSON document to ``path`` atomically (temp file, then rename).

    Args:
        path: the file to write (its folder is created).
        traces: call traces (:func:`pytest_livekit.outputs.trace.build_trace` documents).

    Returns:
        ``path``.

    Raises:
        OtelUnavailableError: the ``otel`` extra is not installed (nothing is written).
    """
    # build first: a missing package or a bad trace must not leave a half-written file behind
    text = json.dumps(traces_to_otlp(traces), separators=(",", ":"), allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def traces_to_otlp(traces: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The calls as an OTLP/JSON ``ExportTraceServiceRequest`` (``{"resourceSpans": [...]}``).

    One OpenTelemetry trace per call: see the module docstring for the spans and attributes.
    Deterministic: the same traces give the same document.

    Args:
        traces: call traces (:func:`pytest_livekit.outputs.trace.build_trace` documents).

    Raises:
        OtelUnavailableError: the ``otel`` extra is not installed.
        ValueError: a trace has no call id or no start time.
    """
    require_otel()
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    resources: dict[str, Resource] = {}
    spans: list[ReadableSpan] = []
    for trace in traces:
        spans += _call_spans(trace, resources)
    document = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _ids_to_hex(document)
    # protobuf's JSON mapping leaves out empty repeated fields; OTLP readers expect the key
    document.setdefault("resourceSpans", [])
    return document


# ------------------------------------------------------------------------------------------------
# Spans
# ------------------------------------------------------------------------------------------------
def _call_spans(trace: Mapping[str, Any], resources: dict[str, Resource]) -> list[ReadableSpan]:
    """The root, turn and tool spans of one call (root first)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    call = _mapping(trace.get("call"))
    test = _mapping(trace.get("test"))
    call_id = call.get("call_id")
    if not call_id:
        raise ValueError("cannot export a call trace without call.call_id")
    call_id = str(call_id)
    zero_ns = _start_ns(call, call_id)
    trace_id = _id(call_id, "", 16)
    resource = _resource(trace, resources)
    scope = _scope(trace)

    def context(key: str) -> SpanContext:
        return SpanContext(
            trace_id=trace_id, span_id=_id(call_id, key, 8), is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )

    def at(t: Any) -> int:
        return zero_ns + round(float(t) * _NS_PER_S)

    turns = [_mapping(t) for t in _list(trace.get("turns"))]
    tools = [_mapping(c) for c in _list(trace.get("tool_calls"))]
    duration = finite_number(call.get("duration_s"))
    call_end = at(duration) if duration is not None and duration >= 0 else zero_ns
    # a child that outlasts the recorded duration stretches the root: children stay inside it
    for turn in turns:
        for key in ("start", "end"):
            if finite_number(turn.get(key)) is not None:
                call_end = max(call_end, at(turn[key]))
    for tool in tools:
        if finite_number(tool.get("t")) is not None:
            call_end = max(call_end, at(tool["t"]))

    root = context("call")
    nodeid = str(test.get("nodeid") or "")
    spans = [
        ReadableSpan(
            name=f"call {nodeid or call_id}",
            context=root,
            resource=resource,
            attributes=_call_attributes(trace, call, test),
            events=_call_events(trace, at),
            status=_test_status(test),
            start_time=zero_ns,
            end_time=call_end,
            instrumentation_scope=scope,
        )
    ]
    for position, turn in enumerate(turns):
        start = finite_number(turn.get("start"))
        if start is None:
            continue  # a turn that never started has no place on a timeline
        end = finite_number(turn.get("end"))
        who = str(turn.get("who") or "turn")
        index = turn.get("index")
        number = f" {int(index) + 1}" if isinstance(index, int) else ""
        attributes = _turn_attributes(turn)
        if end is None:
            attributes["voice.turn.open"] = True
        events = []
        if finite_number(turn.get("added_at")) is not None:
            events.append(_event("conversation item added", {}, at(turn["added_at"])))
        spans.append(
            ReadableSpan(
                name=f"{who} turn{number}",
                context=context(f"turn/{position}"),
                parent=root,
                resource=resource,
                attributes=attributes,
                events=events,
                start_time=at(start),
                end_time=max(at(start), at(end) if end is not None else call_end),
                instrumentation_scope=scope,
            )
        )
    for position, tool in enumerate(tools):
        t = finite_number(tool.get("t"))
        if t is None:
            continue
        spans.append(
            ReadableSpan(
                name=f"tool {tool.get('name') or '?'}",
                context=context(f"tool/{position}"),
                parent=root,
                resource=resource,
                attributes=_tool_attributes(tool),
                status=_tool_status(tool),
                start_time=at(t),
                end_time=at(t),
                instrumentation_scope=scope,
            )
        )
    return spans


def _id(call_id: str, key: str, size: int) -> int:
    """A stable id of ``size`` bytes for span ``key`` of a call (``""``: the trace id)."""
    digest = hashlib.sha256(f"{call_id}\x00{key}".encode() if key else call_id.encode()).digest()
    # an all-zero id is invalid in OTLP; 2**-64 odds, but the fix costs nothing
    return int.from_bytes(digest[:size], "big") or 1


def _start_ns(call: Mapping[str, Any], call_id: str) -> int:
    """The call's time zero in Unix nanoseconds."""
    epoch = finite_number(call.get("started_at_epoch"))
    if epoch is None and call.get("started_at"):
        text = str(call["started_at"]).replace("Z", "+00:00")
        epoch = _dt.datetime.fromisoformat(text).timestamp()
    if epoch is None:
        raise ValueError(f"call trace {call_id!r} has no start time (call.started_at_epoch)")
    return round(epoch * _NS_PER_S)


def _resource(trace: Mapping[str, Any], cache: dict[str, Resource]) -> Resource:
    """The resource of the run that placed the call (shared by calls with the same versions)."""
    from opentelemetry.sdk.resources import Resource

    versions = _mapping(trace.get("versions"))
    machine = _mapping(trace.get("machine"))
    attributes: dict[str, Any] = {"service.name": SERVICE_NAME}
    _put(attributes, "service.version", versions.get("plugin"))
    _put(attributes, "livekit.agents.version", versions.get("livekit_agents"))
    _put(attributes, "livekit.rtc.version", versions.get("livekit_rtc"))
    _put(attributes, "process.runtime.version", versions.get("python"))
    _put(attributes, "test.machine.platform", machine.get("platform"))
    _put(attributes, "test.machine.cpus", machine.get("cpus"))
    _put(attributes, "test.machine.hostname_hash", machine.get("hostname_hash"))
    key = json.dumps(attributes, sort_keys=True)
    if key not in cache:
        # Resource(...) rather than Resource.create(...): create() reads OTEL_* variables and
        # adds the SDK's own attributes, which would make the file depend on the environment
        cache[key] = Resource(attributes)
    return cache[key]


def _scope(trace: Mapping[str, Any]) -> InstrumentationScope:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    version = _mapping(trace.get("versions")).get("plugin")
    return InstrumentationScope(SCOPE_NAME, str(version) if version else None)


def _test_status(test: Mapping[str, Any]) -> Status:
    from opentelemetry.trace import Status, StatusCode

    outcome = test.get("outcome")
    if outcome in FAILED_OUTCOMES:
        message = str(test.get("message") or "").strip()
        return Status(StatusCode.ERROR, message or f"test {outcome}")
    if outcome == "passed":
        return Status(StatusCode.OK)
    return Status(StatusCode.UNSET)


def _tool_status(tool: Mapping[str, Any]) -> Status:
    from opentelemetry.trace import Status, StatusCode

    if tool.get("is_error"):
        return Status(StatusCode.ERROR, str(tool.get("output") or "tool failed"))
    return Status(StatusCode.UNSET)


def _event(name: str, attributes: dict[str, Any], time_ns: int) -> Event:
    from opentelemetry.sdk.trace import Event

    return Event(name, attributes or None, time_ns)


# ------------------------------------------------------------------------------------------------
# Attributes
# ------------------------------------------------------------------------------------------------
def _call_attributes(
    trace: Mapping[str, Any], call: Mapping[str, Any], test: Mapping[str, Any]
) -> dict[str, Any]:
    """Attributes of a call's root span (see the module docstring)."""
    attrs: dict[str, Any] = {}
    nodeid = test.get("nodeid") or None
    outcome = test.get("outcome")
    _put(attrs, "test.nodeid", nodeid)
    _put(attrs, "test.outcome", outcome)
    _put(attrs, "test.phase", test.get("phase") or None)
    _put(attrs, "test.duration_s", test.get("duration_s"))
    _put(attrs, "test.case.name", nodeid)
    semconv_status = {"passed": "pass", **{o: "fail" for o in FAILED_OUTCOMES}}.get(str(outcome))
    _put(attrs, "test.case.result.status", semconv_status)
    _put(attrs, "livekit.room.name", call.get("call_id"))
    _put(attrs, "livekit.room.sid", call.get("room_sid") or None)
    _put(attrs, "lk.room_sid", call.get("room_sid") or None)
    _put(attrs, "livekit.call_type", call.get("call_type"))
    _put(attrs, "livekit.call.outcome", call.get("outcome"))
    _put(attrs, "livekit.agent.spec", call.get("agent") or None)
    _put(attrs, "livekit.agent.mode", call.get("agent_mode"))
    _put(attrs, "livekit.server.version", _mapping(trace.get("versions")).get("livekit_server"))
    participants = [_mapping(p) for p in _list(trace.get("participants"))]
    for field in ("identity", "sid", "role", "kind"):
        plural = "identities" if field == "identity" else f"{field}s"
        _put(attrs, f"livekit.participant.{plural}", [str(p.get(field) or "") for p in participants])
    media = _mapping(trace.get("media"))
    mimes = {_mapping(c).get("mime_type") for c in _list(media.get("codecs"))}
    _put(attrs, "livekit.media.codecs", sorted(m for m in mimes if isinstance(m, str) and m))
    _put(attrs, "livekit.media.sample_rate", media.get("sample_rate"))
    conditions = _mapping(trace.get("conditions"))
    if conditions:
        _put(attrs, "livekit.conditions.seed", conditions.get("seed"))
        _put(attrs, "livekit.conditions", _json(conditions))
    for name, value in _mapping(trace.get("limits")).items():
        _put(attrs, f"livekit.limit.{name}", value)
    for name, value in _mapping(trace.get("rtc")).items():  # caller-side WebRTC stats at hang-up
        _put_metric(attrs, f"livekit.rtc.{name}", value)
    _put(attrs, "livekit.script", _json(_list(trace.get("script"))) if trace.get("script") else None)
    _put(attrs, "livekit.breaches", [str(b) for b in _list(trace.get("breaches"))])
    _put(attrs, "livekit.artifacts.dir", _mapping(trace.get("artifacts")).get("folder"))
    for name, value in _mapping(trace.get("metrics")).items():
        if isinstance(value, Mapping):
            for sub, sub_value in value.items():
                _put_metric(attrs, f"voice.metric.{name}.{sub}", sub_value)
        else:
            _put_metric(attrs, f"voice.metric.{name}", value)
    return attrs


def _turn_attributes(turn: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes of a turn span: ``voice.turn.<key>`` for the trace turn's keys."""
    attrs: dict[str, Any] = {}
    for key in ("who", "index", "kind", "text", "source", "stt_text", "interrupted"):
        _put(attrs, f"voice.turn.{key}", turn.get(key))
    for key in ("ttfa_ms", "wer"):
        _put_metric(attrs, f"voice.turn.{key}", turn.get(key))
    _put(attrs, "voice.turn.conditions", turn.get("conditions") or None)
    pause = turn.get("pause")
    if isinstance(pause, (list, tuple)):
        _put(attrs, "voice.turn.pause_s", [float(p) for p in pause if finite_number(p) is not None])
    for key, value in _mapping(turn.get("latency")).items():
        _put_metric(attrs, f"voice.turn.latency.{key}", value)
    return attrs


def _tool_attributes(tool: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes of a tool span (GenAI semantic conventions plus ``livekit.tool.is_error``)."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool"}
    _put(attrs, "gen_ai.tool.name", tool.get("name"))
    _put(attrs, "gen_ai.tool.call.id", tool.get("call_id") or None)
    arguments = tool.get("arguments")
    if arguments is not None:
        _put(attrs, "gen_ai.tool.call.arguments", _json(arguments))
    _put(attrs, "gen_ai.tool.call.result", tool.get("output"))
    is_error = bool(tool.get("is_error"))
    attrs["livekit.tool.is_error"] = is_error
    if is_error:
        attrs["error.type"] = "tool_error"
    return attrs


def _call_events(trace: Mapping[str, Any], at: Callable[[Any], int]) -> list[Event]:
    """Root-span events: state changes, agent errors, reconnects, receive gaps, STT transcripts
    (time order).
    """
    events: list[tuple[float, int, Event]] = []

    def add(t: Any, name: str, attrs: dict[str, Any]) -> None:
        if finite_number(t) is not None:
            events.append((float(t), len(events), _event(name, attrs, at(t))))

    for change in map(_mapping, _list(trace.get("state_changes"))):
        attrs: dict[str, Any] = {}
        for key in ("who", "old", "new"):
            _put(attrs, f"livekit.state.{key}", change.get(key))
        add(change.get("t"), f"{change.get('who')} {change.get('new')}", attrs)
    for error in map(_mapping, _list(trace.get("errors"))):
        message = str(error.get("message") or "")
        attrs = {"livekit.error.source": str(error.get("source") or "session")}
        if error.get("source") == "crash":
            # a crash's message is the agent's traceback; its last line names the exception
            lines = [line for line in message.splitlines() if line.strip()]
            _put(attrs, "exception.message", lines[-1] if lines else None)
            _put(attrs, "exception.stacktrace", message or None)
        else:
            _put(attrs, "exception.message", message or None)
        add(error.get("t"), "exception", attrs)
    for reconnect in map(_mapping, _list(trace.get("reconnects"))):
        attrs = {}
        _put(attrs, "livekit.reconnect.kind", reconnect.get("kind"))
        _put(attrs, "livekit.reconnect.ok", reconnect.get("ok"))
        _put(attrs, "livekit.reconnect.took_s", reconnect.get("took"))
        add(reconnect.get("t"), "reconnect", attrs)
    for gap in map(_mapping, _list(trace.get("receive_gaps"))):
        attrs = {}
        _put_metric(attrs, "voice.gap.duration_s", gap.get("duration"))
        add(gap.get("start"), "receive gap", attrs)
    # every STT event, interim and final, raw (the turn spans carry each turn's final text)
    for transcript in map(_mapping, _list(_mapping(trace.get("transcripts")).get("raw"))):
        attrs = {}
        _put(attrs, "voice.transcript.text", transcript.get("text"))
        _put(attrs, "voice.transcript.is_final", bool(transcript.get("is_final")))
        add(transcript.get("t"), "transcript", attrs)
    return [event for _, _, event in sorted(events, key=lambda e: (e[0], e[1]))]


# ------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------
def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set ``attrs[key]`` to ``value`` as an attribute value; ``None``, NaN and ``[]`` are left out.

    Scalars stay scalars (``str``, ``bool``, ``int``, finite ``float``); lists of scalars become
    arrays; anything else (a mapping, a list of mappings) becomes JSON text.
    """
    converted = _value(value)
    if converted is not None:
        attrs[key] = converted


def _put_metric(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set a numeric attribute as a double (metrics compare across calls as one type)."""
    number = finite_number(value)
    if number is not None:
        attrs[key] = number


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # OTLP ints are int64; a bigger Python int would not encode
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        items = [_value(v) for v in value]
        items = [v for v in items if v is not None]
        if not items:
            return None
        if all(isinstance(v, str) for v in items) or all(isinstance(v, bool) for v in items):
            return items
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            # attribute arrays are homogeneous: one float makes them all doubles
            return items if all(isinstance(v, int) for v in items) else [float(v) for v in items]
        return _json(value)
    return _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _ids_to_hex(node: Any) -> None:
    """Rewrite protobuf-JSON's base64 trace/span ids as the lowercase hex OTLP/JSON requires."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)
