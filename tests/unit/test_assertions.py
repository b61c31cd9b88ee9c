"""Unit tests of :mod:`pytest_livekit.assertions` on hand-built call records: pass/fail behaviour,
the content of failure messages (measured vs allowed, conversation, recording path, tool calls)
and argument validation."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from pytest_livekit.assertions import (
    assert_asr_accuracy,
    assert_time_to_first_audio,
    assert_tool_called,
    assert_within_limits,
    limits_breached_message,
)
from pytest_livekit.call.record import (
    CallerTurn,
    CallRecord,
    HeardSegment,
    ToolCall,
    Transcript,
)

RECORDING = "/tmp/pytest-livekit-artifacts/test_refund/recording.wav"


def _record(
    *,
    ttfa: float | None = 1.2,
    heard_text: tuple[str, str] = ("I want a refund.", "Order 1234"),
    tool_calls: list[ToolCall] | None = None,
) -> CallRecord:
    """Two caller turns (1-3 s, 8-10 s); the agent answers each ``ttfa`` s after it ends."""
    rec = CallRecord(
        call_id="room-1",
        call_type="refund",
        started_at_epoch=1_700_000_000.0,
        recording_path=RECORDING,
    )
    rec.caller_turns = [
        CallerTurn(index=0, source="tts:en", text="I want a refund", started_at=1.0, ended_at=3.0),
        CallerTurn(index=1, source="tts:en", text="order 1234", started_at=8.0, ended_at=10.0),
    ]
    if ttfa is not None:
        rec.heard = [HeardSegment(3.0 + ttfa, 6.0), HeardSegment(10.0 + ttfa, 13.0)]
    rec.transcripts = [
        Transcript(t=3.3, text=heard_text[0], is_final=True),
        Transcript(t=10.3, text=heard_text[1], is_final=True),
    ]
    rec.tool_calls = tool_calls if tool_calls is not None else []
    return rec


class _CallLike:
    """Stands in for a LivekitCall: the assertions only use its ``record`` attribute."""

    def __init__(self, record: CallRecord) -> None:
        self.record = record


# -- assert_time_to_first_audio ----------------------------------------------------------------
def test_ttfa_starts_at_the_end_of_audible_speech() -> None:
    rec = _record(ttfa=1.2)
    rec.caller_turns[0].speech_ended_at = 2.8  # the clip's last 200 ms were silence
    assert assert_time_to_first_audio(rec, max_ms=1500, turn=0) == pytest.approx(1400.0)


def test_ttfa_passes_and_returns_ms() -> None:
    assert assert_time_to_first_audio(_record(ttfa=1.2), max_ms=1500) == pytest.approx(1200.0)
    assert assert_time_to_first_audio(_record(ttfa=1.2), max_ms=1200.5) == pytest.approx(1200.0)


def test_ttfa_accepts_a_call_object() -> None:
    ms = assert_time_to_first_audio(_CallLike(_record(ttfa=0.8)), max_ms=1000.0, turn=0)
    assert ms == pytest.approx(800.0)


def test_ttfa_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="LivekitCall or CallRecord"):
        assert_time_to_first_audio({"record": None}, max_ms=1000)  # type: ignore[arg-type]


def test_ttfa_failure_message_shows_measured_allowed_text_and_recording() -> None:
    with pytest.raises(AssertionError) as info:
        assert_time_to_first_audio(_record(ttfa=1.84), max_ms=1500, turn=0)
    msg = str(info.value)
    assert "1840 ms > 1500 ms allowed" in msg
    assert "I want a refund" in msg
    assert RECORDING in msg
    assert "turn 1" in msg
    assert 'call type "refund"' in msg


def test_ttfa_failure_says_when_the_caller_could_not_keep_real_time() -> None:
    rec = _record(ttfa=1.84)
    with pytest.raises(AssertionError) as clean:
        assert_time_to_first_audio(rec, max_ms=1500, turn=0)
    assert "clock" not in str(clean.value)
    rec.clock_misses = [
        {"t": 2.5, "direction": "send", "late_ms": 31.0},
        {"t": 4.1, "direction": "receive", "late_ms": 57.5},
    ]
    with pytest.raises(AssertionError) as info:
        assert_time_to_first_audio(rec, max_ms=1500, turn=0)
    msg = str(info.value)
    assert "could not keep real time: 2 frame(s)" in msg
    assert "worst 57.5 ms, receive, at 4.10 s" in msg


def test_ttfa_failure_when_nothing_heard() -> None:
    with pytest.raises(AssertionError) as info:
        assert_time_to_first_audio(_record(ttfa=None), max_ms=1500)
    msg = str(info.value)
    assert "heard no agent audio after turn 2" in msg
    assert "allowed 1500 ms" in msg
    assert "order 1234" in msg
    assert RECORDING in msg


def test_ttfa_failure_without_recording_says_so() -> None:
    rec = _record(ttfa=2.0)
    rec.recording_path = None
    with pytest.raises(AssertionError, match="not recorded"):
        assert_time_to_first_audio(rec, max_ms=1000)


@pytest.mark.parametrize("bad", [-1, 0, -0.5, "1500", None, True])
def test_ttfa_rejects_bad_max_ms(bad: object) -> None:
    with pytest.raises(ValueError, match="max_ms"):
        assert_time_to_first_audio(_record(), max_ms=bad)  # type: ignore[arg-type]


def test_ttfa_rejects_nan_max_ms() -> None:
    with pytest.raises(ValueError, match="max_ms"):
        assert_time_to_first_audio(_record(ttfa=60.0), max_ms=math.nan)


def test_ttfa_accepts_numpy_integer_threshold() -> None:
    assert assert_time_to_first_audio(_record(ttfa=1.2), max_ms=np.int64(1500)) == pytest.approx(
        1200.0
    )


def test_ttfa_without_turns_fails_clearly() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    rec.heard = [HeardSegment(1.0, 2.0)]
    with pytest.raises((AssertionError, IndexError), match="not said anything"):
        assert_time_to_first_audio(rec, max_ms=1500)


# -- assert_asr_accuracy -----------------------------------------------------------------------
def test_asr_passes_on_perfect_transcript_after_normalisation() -> None:
    assert assert_asr_accuracy(_record(), max_wer=0.0, turn=0) == 0.0


def test_asr_failure_message() -> None:
    rec = _record(heard_text=("I want the refund", "order 1234"))
    with pytest.raises(AssertionError) as info:
        assert_asr_accuracy(rec, max_wer=0.1, turn=0)
    msg = str(info.value)
    assert "ASR word error rate 0.25 > 0.10 allowed" in msg
    assert "1 substituted, 0 deleted, 0 inserted of 4 words" in msg
    assert "said:  'i want a refund'" in msg
    assert "heard: 'i want the refund'" in msg
    assert "I want a refund" in msg  # the caller's text in the conversation excerpt
    assert RECORDING in msg


def test_asr_threshold_is_inclusive() -> None:
    rec = _record(heard_text=("I want the refund", "order 1234"))
    assert assert_asr_accuracy(rec, max_wer=0.25, turn=0) == pytest.approx(0.25)


def test_asr_numbers_need_opt_in() -> None:
    rec = _record(heard_text=("I want a refund", "order one two three four"))
    with pytest.raises(AssertionError, match="ASR word error rate"):
        assert_asr_accuracy(rec, max_wer=0.2)
    assert assert_asr_accuracy(rec, max_wer=0.0, normalize_numbers=True) == 0.0


def test_asr_exact_mode_counts_case() -> None:
    rec = _record(heard_text=("i want a refund", "order 1234"))
    with pytest.raises(AssertionError):
        assert_asr_accuracy(rec, max_wer=0.0, turn=0, exact=True)


def test_asr_all_turns_together() -> None:
    rec = _record(heard_text=("I want a refund", "order 1 2 3 4"))
    wer = assert_asr_accuracy(rec, max_wer=1.0, turn=None)
    # "i want a refund order 1234" vs "i want a refund order 1 2 3 4": 1 sub + 3 ins over 6 words.
    assert wer == pytest.approx(4 / 6)
    assert assert_asr_accuracy(rec, max_wer=0.0, turn=None, normalize_numbers=True) == 0.0


def test_asr_turn_without_reference_text() -> None:
    rec = _record()
    rec.caller_turns[0].text = None
    rec.caller_turns[0].source = "/tmp/clip.wav"
    with pytest.raises(ValueError, match="no reference text") as info:
        assert_asr_accuracy(rec, max_wer=0.2, turn=0)
    assert "/tmp/clip.wav" in str(info.value)


@pytest.mark.parametrize("bad", ["x", -0.1, None, True])
def test_asr_rejects_bad_max_wer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_wer"):
        assert_asr_accuracy(_record(), max_wer=bad)  # type: ignore[arg-type]


def test_asr_rejects_nan_max_wer() -> None:
    rec = _record(heard_text=("completely different words", "nothing alike"))
    with pytest.raises(ValueError, match="max_wer"):
        assert_asr_accuracy(rec, max_wer=math.nan)


def test_asr_without_turns_fails_clearly() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    with pytest.raises((AssertionError, IndexError), match="not said anything"):
        assert_asr_accuracy(rec, max_wer=0.2)


def test_asr_all_turns_without_turns_fails() -> None:
    rec = CallRecord(call_id="c", call_type=None, started_at_epoch=0.0)
    rec.transcripts = [Transcript(t=1.0, text="something the agent heard", is_final=True)]
    with pytest.raises((AssertionError, IndexError, ValueError)):
        assert_asr_accuracy(rec, max_wer=0.2, turn=None)


# -- assert_tool_called ------------------------------------------------------------------------
_CALLS = [
    ToolCall(t=4.0, name="lookup_order", arguments={"order_id": 1111, "region": "eu"}),
    ToolCall(t=11.0, name="lookup_order", arguments={"order_id": 1234, "region": "eu"}),
    ToolCall(t=12.0, name="issue_refund", arguments={"order_id": "1234", "amount": 19.5}),
]


def test_tool_called_by_name_only() -> None:
    found = assert_tool_called(_record(tool_calls=list(_CALLS)), "issue_refund")
    assert found is _CALLS[2]


def test_tool_called_subset_match_returns_first_matching_call() -> None:
    rec = _record(tool_calls=list(_CALLS))
    assert assert_tool_called(rec, "lookup_order") is _CALLS[0]
    assert assert_tool_called(rec, "lookup_order", order_id=1234) is _CALLS[1]
    assert assert_tool_called(rec, "lookup_order", region="eu", order_id=1234) is _CALLS[1]


def test_tool_called_string_matches_number_and_back() -> None:
    rec = _record(tool_calls=list(_CALLS))
    assert assert_tool_called(rec, "lookup_order", order_id="1234") is _CALLS[1]
    assert assert_tool_called(rec, "issue_refund", order_id=1234) is _CALLS[2]
    assert assert_tool_called(rec, "issue_refund", amount="19.5") is _CALLS[2]


def test_tool_called_accepts_a_call_object() -> None:
    call = _CallLike(_record(tool_calls=list(_CALLS)))
    assert assert_tool_called(call, "issue_refund", amount=19.5) is _CALLS[2]


def test_tool_not_called_lists_calls_made() -> None:
    rec = _record(tool_calls=list(_CALLS))
    with pytest.raises(AssertionError) as info:
        assert_tool_called(rec, "lookup_order", order_id=9999)
    msg = str(info.value)
    assert 'tool lookup_order(order_id=9999) was not called' in msg
    assert 'lookup_order(order_id=1111, region="eu") at 004.00' in msg
    assert 'lookup_order(order_id=1234, region="eu") at 011.00' in msg
    assert 'issue_refund(order_id="1234", amount=19.5) at 012.00' in msg
    assert RECORDING in msg
    assert "I want a refund" in msg


def test_tool_wrong_name_or_missing_argument_fails() -> None:
    rec = _record(tool_calls=list(_CALLS))
    with pytest.raises(AssertionError, match="cancel_order"):
        assert_tool_called(rec, "cancel_order")
    with pytest.raises(AssertionError, match="was not called"):
        assert_tool_called(rec, "issue_refund", reason="damaged")


def test_tool_not_called_when_no_calls() -> None:
    with pytest.raises(AssertionError) as info:
        assert_tool_called(_record(), "lookup_order", order_id="1234")
    msg = str(info.value)
    assert 'lookup_order(order_id="1234")' in msg
    assert "(no tool calls)" in msg


def test_tool_not_called_with_non_json_expected_value_is_an_assertion_error() -> None:
    with pytest.raises(AssertionError, match="was not called"):
        assert_tool_called(_record(tool_calls=list(_CALLS)), "issue_refund", amount=Decimal("20"))


# -- assert_within_limits / the plugin's limit-breach message -----------------------------------
class _CallWithLimits(_CallLike):
    def __init__(self, record: CallRecord, limits: dict[str, object]) -> None:
        super().__init__(record)
        self.limits = limits
        self.caller = None


def test_within_limits_message_leads_with_the_first_breach_in_words() -> None:
    call = _CallWithLimits(_record(ttfa=1.84), {"ttfa_ms_max": 1500, "expected_tools": ["lookup_order"]})
    with pytest.raises(AssertionError) as info:
        assert_within_limits(call)
    lines = str(info.value).splitlines()
    assert lines[0] == "time-to-first-audio 1840 ms > 1500 ms allowed (ttfa_ms_max, turn 1) (and 2 more)"
    assert lines[1:4] == [
        "  time-to-first-audio 1840 ms > 1500 ms allowed (ttfa_ms_max, turn 1)",
        "  time-to-first-audio 1840 ms > 1500 ms allowed (ttfa_ms_max, turn 2)",
        "  tools called (), expected ('lookup_order',) in this order (expected_tools)",
    ]
    assert lines[4] == '(call type "refund", turn 1)'  # the conversation around the first breach
    assert lines[-1] == f"  recording: {RECORDING}"


def test_limits_message_without_timeline_and_with_a_hint() -> None:
    from pytest_livekit.metrics.thresholds import Breach

    text = limits_breached_message(
        _record(), [Breach("ttfa_ms_max", "no reply", 1500.0, "turn 2")], hint="Hint: x", timeline=False
    )
    assert text.splitlines() == [
        "time-to-first-audio: no reply (1500 ms allowed; ttfa_ms_max, turn 2)",
        f'(call type "refund") recording: {RECORDING}',
        "Hint: x",
    ]


# -- one text-scoring engine -----------------------------------------------------------------
@pytest.mark.parametrize(
    "heard",
    [("I want a refund.", "Order 1234"), ("i want refund", "order one two three four"), ("", "odor 12 34 5")],
)
def test_the_assertion_and_the_report_score_the_same_wer(heard: tuple[str, str]) -> None:
    """assert_asr_accuracy and the report's per-turn metrics compute the same number."""
    from pytest_livekit.metrics.call_metrics import ScoringOptions, turn_metrics

    rec = _record(heard_text=heard)
    turns = turn_metrics(rec, ScoringOptions())
    for i, metrics in enumerate(turns):
        asserted = assert_asr_accuracy(rec, max_wer=100.0, turn=i)
        assert asserted == pytest.approx(metrics.wer)
    numbers = turn_metrics(rec, ScoringOptions(normalize_numbers=True))
    for i, metrics in enumerate(numbers):
        asserted = assert_asr_accuracy(rec, max_wer=100.0, turn=i, normalize_numbers=True)
        assert asserted == pytest.approx(metrics.wer)
