"""OpenTelemetry export: call traces as OTLP/JSON spans (pure, no server)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.call.record import (
    AgentError,
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    StateChange,
    ToolCall,
    Transcript,
)
from pytest_livekit.outputs.otel import (
    OTEL_INSTALL_HINT,
    OtelUnavailableError,
    traces_to_otlp,
    write_otlp_json,
)
from pytest_livekit.outputs.trace import build_trace

START = 1795658748.2729573
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def record(call_id: str = "test_barge_in_during_the_reply-f9edaae7") -> CallRecord:
    """A barge-in call shaped like a real one: two caller turns, two agent replies (the first
    interrupted), two tool calls (the second failed), an agent error, a crash and a reconnect.
    """
    rec = CallRecord(call_id=call_id, call_type="escalation", started_at_epoch=START,
                     server_version="1.13.5", room_sid="RM_gETQLu4kicEP",
                     agent_spec="support_agent:server")
    rec.caller_turns = [
        CallerTurn(0, "tts:en-us@140wpm", "I want a refund for order one two three four", 0.586, 3.449),
        CallerTurn(1, "tts:en-us@140wpm", "Can I speak to a human please", 4.838, 6.799, kind="barge_in",
                   conditions="noise pink 15 dB, seed 7 (turn 2)"),
    ]
    rec.state_changes = [
        StateChange(0.231, "agent", "initializing", "listening"),
        StateChange(0.643, "user", "listening", "speaking"),
        StateChange(4.495, "agent", "listening", "thinking"),
        StateChange(4.586, "agent", "thinking", "speaking"),
        StateChange(5.707, "agent", "speaking", "listening"),
        StateChange(7.968, "agent", "thinking", "speaking"),
        StateChange(11.110, "agent", "speaking", "listening"),
    ]
    rec.items = [
        ConversationItem(4.47, "user", "i want a refund for order one two three four"),
        ConversationItem(5.71, "assistant", "I found your order. Shall", interrupted=True,
                         metrics={"e2e_latency": 0.9009, "llm_node_ttft": 0.0037, "tts_node_ttfb": 0.0206}),
        ConversationItem(7.87, "user", "can i speak to a human please"),
        ConversationItem(11.11, "assistant", "Sure, I am transferring you to a colleague now.",
                         metrics={"e2e_latency": 0.8348, "llm_node_ttft": 0.0012, "tts_node_ttfb": 0.0088}),
    ]
    rec.heard = [HeardSegment(4.63, 5.774), HeardSegment(8.02, 11.124)]
    rec.transcripts = [Transcript(4.473, "i want a refund for order one two three four", True)]
    rec.tool_calls = [
        ToolCall(4.51, "lookup_order", {"order_id": "1234"}, "order 1234: blue kettle", call_id="call_1"),
        ToolCall(7.939, "transfer_to_human", {"reason": "caller asked for a human"}, "queue full",
                 is_error=True, call_id="call_2"),
    ]
    rec.errors = [AgentError(6.0, "llm timed out"),
                  AgentError(6.5, "Traceback (most recent call last):\n  ...\nValueError: boom", "crash")]
    rec.reconnects = [{"t": 9.0, "kind": "signal", "ok": True, "took": 0.4}]
    rec.receive_gaps = [(4.266, 0.19)]
    rec.conditions = {"format_version": 1, "seed": 7, "items": [{"kind": "noise", "snr_db": 15}]}
    rec.participants = [
        {"identity": "caller", "sid": "PA_YLzghUiUs3Gd", "role": "caller", "kind": "standard"},
        {"identity": "agent-under-test", "sid": "PA_Jt2axsRXDXiv", "role": "agent", "kind": "agent"},
    ]
    rec.media = {"codecs": [{"mime_type": "audio/opus", "clock_rate": 48000, "channels": 2,
                             "payload_type": 111}] * 2}
    return rec


METRICS: dict[str, Any] = {
    "turns": [
        {"index": 0, "stt_text": "i want a refund for order one two three four", "wer": 0.0, "ttfa": 1.1813},
        {"index": 1, "stt_text": "can i speak to a human please", "wer": 0.0, "ttfa": 1.2206},
    ],
    "wer": 0.0,
    "ttfa_p50": 1.2009,
    "duplicated_turns": 0,
    "gaps": 1,
    "caller_quality": {"snr_db": 100.0, "dnsmos": None},
    "rtc": {"packet_loss_ratio": 0.0, "jitter_s": 0.001},
    "outcome": "transferred",
    "tools_called": ["lookup_order", "transfer_to_human"],
    "scoring": "lowercased",
}


def make_trace(outcome: str = "passed", message: str = "", call_id: str | None = None) -> dict[str, Any]:
    """A trace built the way the plugin builds it (times in seconds since call start)."""
    rec = record(call_id) if call_id else record()
    test = {"nodeid": "test_conditions.py::test_barge_in_during_the_reply", "outcome": outcome,
            "phase": "call" if message else "", "message": message, "duration_s": 11.84}
    return build_trace(rec, metrics=METRICS, limits={"ttfa_ms_max": 1500.0, "expected_tools": ["x"]},
                       test=test, duration_s=11.685)


def spans_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def attributes(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kv["key"]: kv["value"] for kv in item.get("attributes", [])}


def ns(seconds_since_start: float) -> int:
    return round((START + seconds_since_start) * 1e9)


def test_document_is_otlp_json_with_hex_ids_and_one_trace_per_call() -> None:
    trace = make_trace()
    document = traces_to_otlp([trace])
    assert list(document) == ["resourceSpans"]
    (resource_spans,) = document["resourceSpans"]
    resource = attributes(resource_spans["resource"])
    assert resource["service.name"] == {"stringValue": "pytest-livekit"}
    assert resource["livekit.agents.version"]["stringValue"] == trace["versions"]["livekit_agents"]
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "pytest_livekit"
    spans = scope_spans["spans"]
    assert len(spans) == 1 + len(trace["turns"]) + len(trace["tool_calls"]) == 7
    root = spans[0]
    assert "parentSpanId" not in root
    assert all(HEX32.match(s["traceId"]) and HEX16.match(s["spanId"]) for s in spans)
    assert {s["traceId"] for s in spans} == {root["traceId"]}
    assert len({s["spanId"] for s in spans}) == len(spans)
    assert all(s["parentSpanId"] == root["spanId"] for s in spans[1:])
    assert all(s["kind"] == 1 for s in spans)  # SPAN_KIND_INTERNAL, as an integer
    assert [s["name"] for s in spans] == [
        "call test_conditions.py::test_barge_in_during_the_reply",
        "caller turn 1", "agent turn 1", "caller turn 2", "agent turn 2",
        "tool lookup_order", "tool transfer_to_human",
    ]


def test_span_times_are_unix_nanoseconds_matching_the_trace() -> None:
    trace = make_trace()
    spans = spans_of(traces_to_otlp([trace]))

    def close(value: str, seconds: float) -> bool:
        return abs(int(value) - ns(seconds)) < 1_000  # within 1 µs (float epoch resolution)

    root = spans[0]
    assert close(root["startTimeUnixNano"], 0.0) and close(root["endTimeUnixNano"], 11.685)
    turns = {s["name"]: s for s in spans if " turn " in s["name"]}
    for turn in trace["turns"]:
        span = turns[f"{turn['who']} turn {turn['index'] + 1}"]
        assert close(span["startTimeUnixNano"], turn["start"])
        assert close(span["endTimeUnixNano"], turn["end"])
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
    tools = [s for s in spans if s["name"].startswith("tool ")]
    for span, call in zip(tools, trace["tool_calls"], strict=True):
        # only the report time is known: a zero-length span at t
        assert span["startTimeUnixNano"] == span["endTimeUnixNano"]
        assert close(span["startTimeUnixNano"], call["t"])
    for span in spans[1:]:
        assert int(root["startTimeUnixNano"]) <= int(span["startTimeUnixNano"])
        assert int(span["endTimeUnixNano"]) <= int(root["endTimeUnixNano"])


def test_root_status_follows_the_test_outcome() -> None:
    failed = spans_of(traces_to_otlp([make_trace("failed", "E   AssertionError: ttfa 1623 > 1500")]))[0]
    assert failed["status"] == {"code": 2, "message": "E   AssertionError: ttfa 1623 > 1500"}
    assert attributes(failed)["test.case.result.status"] == {"stringValue": "fail"}
    timeout = spans_of(traces_to_otlp([make_trace("timeout")]))[0]
    assert timeout["status"] == {"code": 2, "message": "test timeout"}
    passed = spans_of(traces_to_otlp([make_trace("passed")]))[0]
    assert passed["status"] == {"code": 1}
    skipped = spans_of(traces_to_otlp([make_trace("skipped")]))[0]
    assert skipped["status"].get("code", 0) == 0
    assert "test.case.result.status" not in attributes(skipped)


def test_trace_id_is_derived_from_the_call_id() -> None:
    one = traces_to_otlp([make_trace()])
    again = traces_to_otlp([make_trace()])
    assert one == again  # span ids and everything else are stable too
    trace_id = spans_of(one)[0]["traceId"]
    assert trace_id == hashlib.sha256(b"test_barge_in_during_the_reply-f9edaae7").digest()[:16].hex()
    other = spans_of(traces_to_otlp([make_trace(call_id="another-call")]))[0]
    assert other["traceId"] != trace_id and other["spanId"] != spans_of(one)[0]["spanId"]


def test_attributes_carry_the_trace_fields_as_typed_any_values() -> None:
    spans = spans_of(traces_to_otlp([make_trace()]))
    root = attributes(spans[0])
    assert root["livekit.room.name"] == {"stringValue": "test_barge_in_during_the_reply-f9edaae7"}
    assert root["livekit.room.sid"] == root["lk.room_sid"] == {"stringValue": "RM_gETQLu4kicEP"}
    assert root["livekit.call_type"] == {"stringValue": "escalation"}
    assert root["livekit.server.version"] == {"stringValue": "1.13.5"}
    assert root["test.nodeid"] == {"stringValue": "test_conditions.py::test_barge_in_during_the_reply"}
    assert root["livekit.conditions.seed"] == {"intValue": "7"}  # int64 as a decimal string
    assert json.loads(root["livekit.conditions"]["stringValue"])["seed"] == 7
    assert root["livekit.media.codecs"] == {"arrayValue": {"values": [{"stringValue": "audio/opus"}]}}
    assert root["livekit.media.sample_rate"] == {"intValue": "48000"}
    assert root["voice.metric.wer"] == {"doubleValue": 0.0}
    assert root["voice.metric.gaps"] == {"doubleValue": 1.0}  # metrics are doubles, counts too
    assert root["voice.metric.caller_quality.snr_db"] == {"doubleValue": 100.0}
    assert "voice.metric.caller_quality.dnsmos" not in root  # None is left out
    assert root["livekit.limit.ttfa_ms_max"] == {"doubleValue": 1500.0}
    identities = root["livekit.participant.identities"]["arrayValue"]["values"]
    assert [v["stringValue"] for v in identities] == ["caller", "agent-under-test"]

    by_name = {s["name"]: attributes(s) for s in spans}
    caller = by_name["caller turn 2"]
    assert caller["voice.turn.kind"] == {"stringValue": "barge_in"}
    assert caller["voice.turn.index"] == {"intValue": "1"}
    assert caller["voice.turn.ttfa_ms"] == {"doubleValue": 1220.6}
    assert caller["voice.turn.stt_text"] == {"stringValue": "can i speak to a human please"}
    assert caller["voice.turn.conditions"]["stringValue"].startswith("noise pink")
    agent = by_name["agent turn 1"]
    assert agent["voice.turn.interrupted"] == {"boolValue": True}
    assert agent["voice.turn.latency.e2e_latency_s"] == {"doubleValue": 0.9009}
    assert "voice.turn.open" not in agent
    tool = by_name["tool lookup_order"]
    assert json.loads(tool["gen_ai.tool.call.arguments"]["stringValue"]) == {"order_id": "1234"}
    assert tool["gen_ai.tool.call.result"] == {"stringValue": "order 1234: blue kettle"}
    assert tool["livekit.tool.is_error"] == {"boolValue": False}
    for span in spans:
        for value in attributes(span).values():
            assert len(value) == 1 and next(iter(value)) in {
                "stringValue", "intValue", "doubleValue", "boolValue", "arrayValue"}
    failed_tool = next(s for s in spans if s["name"] == "tool transfer_to_human")
    assert failed_tool["status"] == {"code": 2, "message": "queue full"}
    assert attributes(failed_tool)["error.type"] == {"stringValue": "tool_error"}


def test_root_events_are_state_changes_errors_reconnects_gaps_and_transcripts_in_time_order() -> None:
    trace = make_trace()
    root = spans_of(traces_to_otlp([trace]))[0]
    events = root["events"]
    names = [e["name"] for e in events]
    assert names.count("agent speaking") == 2 and "user speaking" in names
    transcripts = [e for e in events if e["name"] == "transcript"]
    assert len(transcripts) == len(trace["transcripts"]["raw"])
    assert len(events) == len(trace["state_changes"]) + 2 + 1 + 1 + len(transcripts)
    times = [int(e["timeUnixNano"]) for e in events]
    assert times == sorted(times)
    errors = [attributes(e) for e in events if e["name"] == "exception"]
    assert errors[0]["exception.message"] == {"stringValue": "llm timed out"}
    assert errors[1]["exception.message"] == {"stringValue": "ValueError: boom"}
    assert errors[1]["exception.stacktrace"]["stringValue"].startswith("Traceback")
    reconnect = next(e for e in events if e["name"] == "reconnect")
    assert abs(int(reconnect["timeUnixNano"]) - ns(9.0)) < 1_000
    assert attributes(reconnect)["livekit.reconnect.ok"] == {"boolValue": True}


def test_a_turn_without_an_end_ends_with_the_call() -> None:
    trace = make_trace()
    trace["turns"][-1]["end"] = None  # as in traces written by earlier versions
    spans = spans_of(traces_to_otlp([trace]))
    span = next(s for s in spans if s["name"] == "agent turn 2")
    assert span["endTimeUnixNano"] == spans[0]["endTimeUnixNano"]
    assert attributes(span)["voice.turn.open"] == {"boolValue": True}


def test_several_calls_share_one_resource_and_keep_their_own_traces() -> None:
    document = traces_to_otlp([make_trace(), make_trace("failed", "boom", call_id="second")])
    assert len(document["resourceSpans"]) == 1
    spans = spans_of(document)
    assert len(spans) == 14
    assert len({s["traceId"] for s in spans}) == 2
    assert traces_to_otlp([]) == {"resourceSpans": []}


def test_round_trips_into_the_protobuf_export_request() -> None:
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    trace = make_trace("failed", "E   AssertionError")
    document = traces_to_otlp([trace])

    def hex_to_base64(node: Any) -> Any:
        # what a collector's OTLP/JSON reader does with ids; protobuf's JSON reader wants base64
        if isinstance(node, dict):
            return {k: base64.b64encode(bytes.fromhex(v)).decode()
                    if k in ("traceId", "spanId", "parentSpanId") else hex_to_base64(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [hex_to_base64(v) for v in node]
        return node

    request = ParseDict(hex_to_base64(document), ExportTraceServiceRequest())
    spans = request.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 7
    root = spans[0]
    assert root.trace_id.hex() == spans_of(document)[0]["traceId"] and len(root.trace_id) == 16
    assert all(s.parent_span_id == root.span_id for s in spans[1:])
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert root.start_time_unix_nano == int(spans_of(document)[0]["startTimeUnixNano"])
    assert len(root.events) == len(spans_of(document)[0]["events"])


def test_write_is_atomic_and_one_line_of_otlp_json(tmp_path: Path) -> None:
    path = tmp_path / "out" / "calls.otlp.json"
    assert write_otlp_json(path, [make_trace()]) == path
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1  # also a valid OTLP JSON Lines file
    assert json.loads(text) == traces_to_otlp([make_trace()])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left

    bad = make_trace()
    del bad["call"]["call_id"]
    with pytest.raises(ValueError, match="call_id"):
        write_otlp_json(path, [bad])
    assert path.read_text() == text  # the previous file is untouched
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_missing_opentelemetry_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with pytest.raises(OtelUnavailableError, match=re.escape(OTEL_INSTALL_HINT)) as info:
        write_otlp_json(tmp_path / "x.json", [make_trace()])
    assert isinstance(info.value, ImportError)
    assert not (tmp_path / "x.json").exists()


def test_global_tracer_provider_is_left_alone() -> None:
    from opentelemetry import trace as otel_trace

    before = otel_trace.get_tracer_provider()
    traces_to_otlp([make_trace()])
    assert otel_trace.get_tracer_provider() is before
