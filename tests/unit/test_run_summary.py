"""RunSummary: the run table and the session files from traces alone (what a merge of earlier
runs needs), without pytest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment, ToolCall
from pytest_livekit.metrics.thresholds import parse_call_types
from pytest_livekit.outputs.run_summary import OutputOptions, RunSummary, render_lines, row_from_trace
from pytest_livekit.outputs.trace import build_trace


def _trace(name: str, ttfa: float, outcome: str = "passed") -> dict[str, Any]:
    rec = CallRecord(call_id=f"{name}-abcd", call_type="refund", started_at_epoch=1_800_000_000.0)
    rec.artifacts_dir = f"/runs/calls/{name}"
    rec.caller_turns = [CallerTurn(0, "tts", "I want a refund", 0.5, 2.0)]
    rec.heard = [HeardSegment(2.0 + ttfa, 4.0)]
    rec.tool_calls = [ToolCall(3.0, "lookup_order", {"order_id": "1234"})]
    metrics = {"turns": [{"index": 0, "ttfa": ttfa, "wer": 0.0}], "wer": 0.0, "outcome": "completed"}
    breaches = ["ttfa_ms_max: 1840 > 1500 allowed (turn 1)"] if ttfa > 1.5 else []
    return build_trace(rec, metrics=metrics, breaches=breaches, test={"nodeid": f"t.py::{name}", "outcome": outcome})


def test_row_from_trace_has_what_the_table_shows() -> None:
    row = row_from_trace(_trace("test_a", 0.6))
    assert row["call_type"] == "refund"
    assert row["tools"] == ["lookup_order(order_id='1234')"]
    assert row["artifacts"] == "/runs/calls/test_a"
    assert row["outcome_test"] == "passed"
    assert row["metrics"]["turns"][0]["ttfa"] == 0.6


def test_table_and_slos_from_traces(tmp_path: Path) -> None:
    types = parse_call_types({"refund": {"ttfa_ms_max": 1500, "slo": {"ttfa_p95_ms_max": 1000}}})
    summary = RunSummary([_trace("test_a", 0.6), _trace("test_b", 1.84, "failed")],
                         OutputOptions(session_dir=tmp_path, call_type_configs=types))
    assert summary.check_slos() == ["ttfa_p95_ms_max: 1778 > 1000 allowed (refund)"]
    text = render_lines(summary.table_lines())
    assert "livekit calls" in text.splitlines()[0]
    assert "t.py::test_a [refund] passed: ttfa 600ms · wer 0.00 · lookup_order(order_id='1234')" in text
    assert "t.py::test_b [refund] failed: ttfa 1840ms · wer 0.00 · lookup_order(order_id='1234') · breached ttfa_ms_max" in text
    assert [line.style for line in summary.table_lines() if line.text.startswith("SLO breach")] == ["bad"]
    quiet = summary.table_lines(verbosity=-1)
    assert not any("t.py::" in line.text for line in quiet)


def test_write_files_writes_calls_jsonl(tmp_path: Path) -> None:
    summary = RunSummary([_trace("test_b", 0.7), _trace("test_a", 0.6)], OutputOptions(session_dir=tmp_path))
    assert summary.write_files() == [f"calls: {tmp_path / 'calls.jsonl'}"]
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["test"]["nodeid"] for line in lines] == ["t.py::test_a", "t.py::test_b"]
    assert not summary.failed
