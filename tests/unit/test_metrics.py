"""Unit tests of :mod:`pytest_livekit.metrics.turns` on hand-built call records: time to first audio,
the agent's raw user transcript per turn, WER text normalisation and word error rate."""

from __future__ import annotations

import pytest

from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment, Transcript
from pytest_livekit.metrics.turns import (
    jitter_buffer_delay,
    normalize_text,
    spell_out_digits,
    time_to_first_audio,
    user_transcript,
    word_error_rate,
)


def _record(
    turns: list[tuple[float, float | None, str | None]],
    heard: list[tuple[float, float]] | None = None,
    transcripts: list[tuple[float, str, bool]] | None = None,
) -> CallRecord:
    """A record with caller turns ``(start, end, text)``, heard ``(start, end)`` and transcripts
    ``(t, text, is_final)``."""
    rec = CallRecord(call_id="call-1", call_type="refund", started_at_epoch=1_700_000_000.0)
    rec.caller_turns = [
        CallerTurn(index=i, source="tts:test", text=text, started_at=s, ended_at=e)
        for i, (s, e, text) in enumerate(turns)
    ]
    rec.heard = [HeardSegment(start=s, end=e) for s, e in heard or []]
    rec.transcripts = [Transcript(t=t, text=text, is_final=f) for t, text, f in transcripts or []]
    return rec


# -- time_to_first_audio -----------------------------------------------------------------------
def test_ttfa_is_first_heard_segment_after_turn_end() -> None:
    rec = _record(
        [(1.0, 3.0, "I want a refund"), (8.0, 10.0, "order 1234")],
        heard=[(4.2, 6.0), (6.5, 7.0), (11.5, 13.0)],
    )
    assert time_to_first_audio(rec, 0) == pytest.approx(1.2)
    assert time_to_first_audio(rec, 1) == pytest.approx(1.5)
    assert time_to_first_audio(rec) == pytest.approx(1.5)  # default: last turn


# -- jitter_buffer_delay ------------------------------------------------------------------------
def _sample(start: float, t: float, delay_total: float, emitted: float) -> dict[str, float]:
    return {"segment_start": start, "t": t, "delay_total": delay_total, "emitted": emitted,
            "target_delay_total": 0.0}


def test_jitter_buffer_delay_is_the_answers_own_share_of_the_counters() -> None:
    rec = _record([(1.0, 3.0, "hi"), (8.0, 10.0, "again")], heard=[(4.2, 6.0), (11.5, 13.0)])
    # counters at the first answer's onset and close, then the second's (48 kHz samples)
    rec.jitter_buffer = [
        _sample(4.2, 4.21, 10.0, 100_000), _sample(4.2, 6.1, 10.0 + 0.03 * 96_000, 196_000),
        _sample(11.5, 11.51, 20.0, 300_000), _sample(11.5, 13.1, 20.0 + 0.05 * 48_000, 348_000),
    ]
    assert jitter_buffer_delay(rec, 0) == pytest.approx(0.03)
    assert jitter_buffer_delay(rec, 1) == pytest.approx(0.05)


def test_jitter_buffer_delay_is_none_without_an_answer_or_both_samples() -> None:
    rec = _record([(1.0, 3.0, "hi"), (8.0, 10.0, "again")], heard=[(4.2, 6.0)])
    rec.jitter_buffer = [_sample(4.2, 4.21, 10.0, 100_000)]  # the call ended before it closed
    assert jitter_buffer_delay(rec, 0) is None
    assert jitter_buffer_delay(rec, 1) is None  # never answered


def test_ttfa_uses_earliest_segment_even_if_unsorted() -> None:
    rec = _record([(1.0, 3.0, "hi")], heard=[(6.0, 7.0), (4.0, 5.0), (9.0, 9.5)])
    assert time_to_first_audio(rec, 0) == pytest.approx(1.0)


def test_ttfa_ignores_audio_that_started_before_the_caller_finished() -> None:
    # The agent was still talking (2.5-3.5) when the caller finished at 3.0.
    rec = _record([(1.0, 3.0, "hi")], heard=[(0.2, 0.9), (2.5, 3.5), (4.0, 5.0)])
    assert time_to_first_audio(rec, 0) == pytest.approx(1.0)


def test_ttfa_segment_starting_exactly_at_turn_end_counts_as_zero() -> None:
    rec = _record([(1.0, 3.0, "hi")], heard=[(3.0, 4.0)])
    assert time_to_first_audio(rec, 0) == 0.0


def test_ttfa_only_inside_the_turn_window() -> None:
    # The agent never answered turn 0; its first audio comes during/after turn 1.
    rec = _record([(1.0, 3.0, "hello?"), (5.0, 7.0, "anyone?")], heard=[(6.0, 6.5), (7.5, 9.0)])
    assert time_to_first_audio(rec, 0) is None
    assert time_to_first_audio(rec, 1) == pytest.approx(0.5)


def test_ttfa_none_when_nothing_heard() -> None:
    assert time_to_first_audio(_record([(1.0, 3.0, "hi")])) is None


def test_ttfa_none_while_caller_still_speaking() -> None:
    rec = _record([(1.0, None, "hi")], heard=[(4.0, 5.0)])
    assert time_to_first_audio(rec) is None


def test_ttfa_without_turns_raises_clear_index_error() -> None:
    with pytest.raises(IndexError, match="not said anything"):
        time_to_first_audio(_record([], heard=[(1.0, 2.0)]))


# -- user_transcript ---------------------------------------------------------------------------
def _transcript_record() -> CallRecord:
    return _record(
        [(1.0, 3.0, "I want a refund"), (8.0, 10.0, "order 1234")],
        transcripts=[
            (0.5, "before the call", True),  # before turn 0's window
            (2.0, "i want", False),  # interim: never used
            (3.4, "I want a refund.", True),
            (4.0, "   ", True),  # blank final: skipped
            (4.5, " please ", True),
            (8.0, "order", True),  # exactly at turn 1 start: turn 1
            (9.0, "order one two", False),
            (10.5, "one two three four", True),
        ],
    )


def test_user_transcript_joins_finals_inside_window() -> None:
    rec = _transcript_record()
    assert user_transcript(rec, 0) == "I want a refund. please"
    assert user_transcript(rec, 1) == "order one two three four"
    assert user_transcript(rec) == user_transcript(rec, 1)


def test_user_transcript_empty_when_no_finals() -> None:
    rec = _record([(1.0, 3.0, "hi")], transcripts=[(2.0, "hi", False), (3.5, "hi there", False)])
    assert user_transcript(rec) == ""


# -- normalize_text / spell_out_digits ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  I   WANT a\trefund. ", "i want a refund"),
        ("Don't stop", "don't stop"),
        ("it's 'quoted' text", "it's quoted text"),
        ("snake_case-word", "snake case word"),
        ("What?!...", "what"),
        ("", ""),
    ],
)
def test_normalize_text_folds_case_and_punctuation(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_text_exact_only_collapses_whitespace() -> None:
    assert normalize_text("  Hello,   World!\n", exact=True) == "Hello, World!"


def test_normalize_text_numbers_opt_in() -> None:
    assert normalize_text("Order 1234.") == "order 1234"
    assert normalize_text("Order 1234.", normalize_numbers=True) == "order one two three four"


def test_spell_out_digits_words() -> None:
    spelled = spell_out_digits("order 1234, room 0 and 9")
    assert spelled.split() == [
        "order", "one", "two", "three", "four", ",", "room", "zero", "and", "nine",
    ]
    assert spell_out_digits("no digits here") == "no digits here"


def test_spell_out_digits_matches_docstring_example() -> None:
    assert spell_out_digits("order 1234") == "order one two three four"


# -- word_error_rate ---------------------------------------------------------------------------
def test_wer_perfect_after_normalisation() -> None:
    errs = word_error_rate("Hello, World!", "hello world")
    assert errs.wer == 0.0
    assert errs.hits == 2
    assert (errs.substitutions, errs.deletions, errs.insertions) == (0, 0, 0)
    assert errs.reference == "hello world"
    assert errs.hypothesis == "hello world"


def test_wer_one_substitution_in_four_words() -> None:
    errs = word_error_rate("I want a refund", "I want the refund")
    assert errs.wer == pytest.approx(0.25)
    assert errs.substitutions == 1
    assert errs.hits == 3


def test_wer_deletion_and_insertion_counted() -> None:
    dropped = word_error_rate("i want a refund", "i want refund")
    assert (dropped.deletions, dropped.insertions, dropped.substitutions) == (1, 0, 0)
    assert dropped.wer == pytest.approx(1 / 4)
    added = word_error_rate("i want a refund", "i want a refund now please")
    assert (added.deletions, added.insertions, added.substitutions) == (0, 2, 0)
    assert added.wer == pytest.approx(2 / 4)


def test_wer_empty_hypothesis_is_one() -> None:
    errs = word_error_rate("i want a refund", "")
    assert errs.wer == 1.0
    assert errs.deletions == 4
    assert errs.hits == 0


def test_wer_empty_reference() -> None:
    assert word_error_rate("", "").wer == 0.0
    assert word_error_rate("  ", "...").wer == 0.0
    errs = word_error_rate("", "uh hello")
    assert errs.wer == 2.0
    assert errs.insertions == 2


def test_wer_normalize_numbers_makes_digits_match_words() -> None:
    assert word_error_rate("order 1234", "order one two three four").wer > 0.5
    errs = word_error_rate("order 1234", "order one two three four", normalize_numbers=True)
    assert errs.wer == 0.0
    assert errs.reference == "order one two three four"


def test_wer_exact_mode_is_case_sensitive() -> None:
    assert word_error_rate("Hello world", "hello world").wer == 0.0
    assert word_error_rate("Hello world", "hello world", exact=True).wer == pytest.approx(0.5)
