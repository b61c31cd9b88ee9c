"""Unit tests of :mod:`pytest_livekit.call.record`: the call record's JSON round trip (dict and
``call.json`` file), its format version, the human-readable timeline and turn windows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_livekit.call.record import (
    RECORD_FORMAT_VERSION,
    AgentError,
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    StateChange,
    ToolCall,
    Transcript,
)


def _full_record() -> CallRecord:
    """A record with at least one entry of every kind and non-default scalar fields."""
    return CallRecord(
        call_id="room-abc123",
        call_type="refund",
        started_at_epoch=1_700_000_000.25,
        agent_mode="worker",
        server_version="1.13.5",
        caller_turns=[
            CallerTurn(
                index=0, source="tts:en-us", text="I want a refund", started_at=1.0, ended_at=3.0
            ),
            CallerTurn(index=1, source="/tmp/order.wav", text=None, started_at=8.0, ended_at=None),
        ],
        heard=[HeardSegment(start=4.2, end=6.0)],
        transcripts=[
            Transcript(t=2.5, text="i want", is_final=False),
            Transcript(t=3.4, text="I want a refund", is_final=True),
        ],
        state_changes=[StateChange(t=3.5, who="agent", old="listening", new="thinking")],
        items=[
            ConversationItem(t=3.4, role="user", text="I want a refund"),
            ConversationItem(
                t=4.1,
                role="assistant",
                text="Sure, what is your order number?",
                interrupted=True,
                metrics={"llm_ttft": 0.31, "tts_ttfb": 0.12},
            ),
        ],
        tool_calls=[
            ToolCall(
                t=9.5,
                name="lookup_order",
                arguments={"order_id": 1234, "notes": ["a", "b"], "nested": {"x": 1.5}},
                output="found",
                call_id="call_1",
            ),
            ToolCall(t=9.9, name="refund", arguments={}, is_error=True),
        ],
        errors=[
            AgentError(t=10.0, message="Traceback (most recent call last):\n  boom", source="crash")
        ],
        recording_path="/tmp/artifacts/room-abc123/recording.wav",
        artifacts_dir="/tmp/artifacts/room-abc123",
    )


# -- serialisation -----------------------------------------------------------------------------
def test_to_dict_has_format_version_and_is_json_ready() -> None:
    data = _full_record().to_dict()
    assert data["format_version"] == RECORD_FORMAT_VERSION == 1
    assert data["call_id"] == "room-abc123"
    assert data["caller_turns"][0] == {
        "index": 0,
        "source": "tts:en-us",
        "text": "I want a refund",
        "started_at": 1.0,
        "ended_at": 3.0,
        "speech_ended_at": None,
        "kind": "say",
        "pause": None,
        "conditions": "",
    }
    assert json.loads(json.dumps(data)) == data


def test_dict_round_trip_is_equal() -> None:
    rec = _full_record()
    data = rec.to_dict()
    back = CallRecord.from_dict(data)
    assert back == rec
    assert isinstance(back.caller_turns[0], CallerTurn)
    assert isinstance(back.tool_calls[0], ToolCall)
    assert isinstance(back.errors[0], AgentError)
    assert "format_version" in data  # from_dict does not consume its input


def test_dict_round_trip_of_minimal_record() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    assert CallRecord.from_dict(rec.to_dict()) == rec


def test_to_dict_is_a_deep_copy() -> None:
    rec = _full_record()
    data = rec.to_dict()
    data["tool_calls"][0]["arguments"]["order_id"] = 9999
    assert rec.tool_calls[0].arguments["order_id"] == 1234


def test_save_load_round_trip(tmp_path: Path) -> None:
    rec = _full_record()
    target = tmp_path / "artifacts" / "room-abc123" / "call.json"
    written = rec.save(target)
    assert written == target
    assert target.is_file()
    assert list(target.parent.iterdir()) == [target]  # no leftover temp file
    on_disk = json.loads(target.read_text())
    assert on_disk["format_version"] == RECORD_FORMAT_VERSION
    assert CallRecord.load(target) == rec


def test_save_overwrites_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "call.json"
    _full_record().save(target)
    small = CallRecord(call_id="other", call_type=None, started_at_epoch=1.0)
    small.save(target)
    assert CallRecord.load(target) == small


# -- small views -------------------------------------------------------------------------------
def test_rel_and_turn_duration() -> None:
    rec = _full_record()
    assert rec.rel(1_700_000_002.25) == pytest.approx(2.0)
    assert rec.caller_turns[0].duration == pytest.approx(2.0)
    assert rec.caller_turns[1].duration is None


def test_turn_indexing_and_empty_record() -> None:
    rec = _full_record()
    assert rec.turn().index == 1
    assert rec.turn(0).text == "I want a refund"
    with pytest.raises(IndexError, match="not said anything"):
        CallRecord(call_id="c", call_type=None, started_at_epoch=0.0).turn()


def test_turn_window_runs_until_next_turn() -> None:
    rec = _full_record()
    assert rec.turn_window(0) == (1.0, 8.0)
    start, end = rec.turn_window(1)
    assert start == 8.0
    assert math.isinf(end)
    assert rec.turn_window() == rec.turn_window(1)
    assert rec.turn_window(-2) == (1.0, 8.0)


def test_turn_window_out_of_range_raises_index_error() -> None:
    with pytest.raises(IndexError):
        _full_record().turn_window(5)


def test_turn_window_without_turns_raises_clear_index_error() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    with pytest.raises(IndexError, match="not said anything"):
        rec.turn_window()


# -- timeline ----------------------------------------------------------------------------------
def test_timeline_contains_caller_text_tools_and_is_time_ordered() -> None:
    text = _full_record().timeline()
    lines = text.splitlines()
    assert "'I want a refund'" in lines[0] and lines[0].startswith("caller")
    assert "001.00–003.00" in lines[0]
    assert any("lookup_order(order_id=1234" in line and "'found'" in line for line in lines)
    assert any(line.startswith("heard") and "004.20" in line for line in lines)
    assert any("[interrupted]" in line for line in lines)
    assert any(line.startswith("error") and "Traceback" in line for line in lines)
    assert "boom" not in text  # only the first line of an error
    assert "'i want'" not in text  # interim transcripts are not shown
    assert any(line.startswith("stt") for line in lines)
    # Rows are sorted by their time column.
    times = [float(line.split()[1][:6]) for line in lines]
    assert times == sorted(times)


def test_timeline_open_turn_and_none_text() -> None:
    text = _full_record().timeline()
    (row,) = [line for line in text.splitlines() if "008.00" in line and line.startswith("caller")]
    assert "None" in row
    assert "…" in row


def test_timeline_around_limits_rows() -> None:
    rec = _full_record()
    rec.caller_turns.append(
        CallerTurn(index=2, source="tts:en-us", text="far later", started_at=100.0, ended_at=101.0)
    )
    near = rec.timeline(around=100.0, width=5.0)
    assert "far later" in near
    assert "I want a refund" not in near
    assert "far later" not in rec.timeline(around=2.0, width=10.0)


def test_timeline_of_empty_record() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    assert rec.timeline() == "(nothing recorded)"
