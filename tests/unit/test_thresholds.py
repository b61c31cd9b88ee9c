"""Pure threshold and SLO evaluation."""

from __future__ import annotations

import pytest

from pytest_livekit.errors import ConfigError
from pytest_livekit.metrics.thresholds import CallTypeSummary, check_call, parse_call_types, percentile


def _metrics(ttfas: list[float | None], **extra: object) -> dict[str, object]:
    return {"turns": [{"ttfa": t, "e2e_latency": None} for t in ttfas], **extra}


def test_check_call_reports_every_breach_at_once() -> None:
    breaches = check_call(
        _metrics([0.9, 1.8], wer=0.3, tools_called=["issue_refund"], outcome="transferred"),
        {"ttfa_ms_max": 1500, "wer_max": 0.2, "expected_tools": ("lookup_order",), "outcome": "completed"},
    )
    text = [str(b) for b in breaches]
    assert text == [
        "ttfa_ms_max: 1800 > 1500 allowed (turn 2)",
        "wer_max: 0.3 > 0.2 allowed",
        "expected_tools: ('issue_refund',) != ('lookup_order',) allowed (in order)",
        "outcome: 'transferred' != 'completed' allowed",
    ]


def test_check_call_passes_within_limits_and_flags_missing_reply() -> None:
    assert check_call(_metrics([0.5], wer=0.1), {"ttfa_ms_max": 1500, "wer_max": 0.2}) == []
    (breach,) = check_call(_metrics([None]), {"ttfa_ms_max": 1500})
    assert "no reply" in str(breach)


def test_expected_tools_order_and_forbidden() -> None:
    ok = _metrics([], tools_called=["lookup_order", "x", "issue_refund"])
    assert check_call(ok, {"expected_tools": ("lookup_order", "issue_refund")}) == []
    assert check_call(ok, {"expected_tools": ("issue_refund", "lookup_order")})
    assert [b.name for b in check_call(ok, {"forbidden_tools": ("x",)})] == ["forbidden_tools"]


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(101)], 95) == 95.0


def test_summary_slo_breaches_and_cohorts() -> None:
    summary = CallTypeSummary("refund")
    for i in range(10):
        summary.add({
            "outcome_test": "failed" if i == 0 else "passed",
            "metrics": {"turns": [{"ttfa": 0.5 + i * 0.1}], "wer": 0.1, "outcome": "completed"},
            "conditions": ["noise"] if i < 2 else ["clean"],
        })
    values = summary.values()
    assert values["ttfa_p50_ms"] == pytest.approx(950.0)
    assert values["failure_rate"] == pytest.approx(0.1)
    breaches = summary.check({"ttfa_p95_ms_max": 1000.0, "failure_rate_max": 0.2, "task_completion_min": 0.9})
    names = [(b.name, b.detail) for b in breaches]
    assert ("ttfa_p95_ms_max", "refund") in names
    assert ("failure_rate_max", "refund × noise") in names  # 1 of 2 noisy calls failed
    assert all(b.name != "task_completion_min" for b in breaches)


def test_parse_rejects_bad_tables() -> None:
    with pytest.raises(ConfigError, match="is not a known limit"):
        parse_call_types({"refund": {"nope": 1}})
    with pytest.raises(ConfigError, match="outcome = 'done' is not valid"):
        parse_call_types({"refund": {"outcome": "done"}})
    with pytest.raises(ConfigError, match="script must be a list"):
        parse_call_types({"refund": {"script": "hello"}})
    with pytest.raises(ConfigError, match="must be >= 0"):
        parse_call_types({"refund": {"wer_max": -1}})


def test_interruption_recovery_rate_from_rows() -> None:
    summary = CallTypeSummary("refund")
    summary.add({"metrics": {}, "interruptions": [2, 1]})
    summary.add({"metrics": {}, "interruptions": [1, 1]})
    assert summary.values()["interruption_recovery"] == pytest.approx(2 / 3)
    (breach,) = summary.check({"interruption_recovery_min": 0.9})
    assert breach.name == "interruption_recovery_min"


def test_interruption_recovery_from_a_record() -> None:
    from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment
    from pytest_livekit.metrics.call_metrics import interruption_recovery

    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    rec.caller_turns = [
        CallerTurn(0, "tts", "hi", started_at=1.0, ended_at=2.0),
        CallerTurn(1, "tts", "stop", started_at=3.5, ended_at=4.0),  # agent audible at 3.5
        CallerTurn(2, "tts", "again", started_at=6.5, ended_at=7.0),  # barge-in, no answer after
    ]
    rec.heard = [HeardSegment(3.0, 3.8), HeardSegment(4.5, 5.0), HeardSegment(6.0, 6.9)]
    assert interruption_recovery(rec) == (2, 1)


def test_breached_calls_count_as_failed_whatever_the_test_outcome() -> None:
    from pytest_livekit.metrics.thresholds import counts_as_failed

    assert counts_as_failed("passed", ["wer_max: 0.3 > 0.2 allowed"])
    assert counts_as_failed("failed", [])
    assert not counts_as_failed("passed", [])
    assert not counts_as_failed("skipped", None)
    summary = CallTypeSummary("refund")
    summary.add({"outcome_test": "passed", "metrics": {}, "breaches": ["wer_max: 0.3 > 0.2 allowed"]})
    summary.add({"outcome_test": "passed", "metrics": {}, "breaches": []})
    assert summary.failed == 1
    (breach,) = summary.check({"failure_rate_max": 0.0})
    assert str(breach) == "failure_rate_max: 0.5 > 0 allowed (refund)"


def test_breach_in_words() -> None:
    from pytest_livekit.metrics.thresholds import Breach

    assert Breach("ttfa_ms_max", 1840.0, 1500.0, "turn 1").describe() == (
        "time-to-first-audio 1840 ms > 1500 ms allowed (ttfa_ms_max, turn 1)"
    )
    assert Breach("agent_snr_db_min", 8.5, 12.0).describe() == "agent SNR 8.5 dB < 12 dB allowed (agent_snr_db_min)"
    assert Breach("wer_max", 0.35, 0.2).describe() == "word error rate 0.35 > 0.2 allowed (wer_max)"
    assert Breach("outcome", "incomplete", "completed").describe() == (
        "call outcome 'incomplete', expected 'completed' (outcome)"
    )
    assert Breach("forbidden_tools", ("issue_refund",), ("issue_refund",)).describe() == (
        "forbidden tools called: ('issue_refund',) (forbidden_tools)"
    )
