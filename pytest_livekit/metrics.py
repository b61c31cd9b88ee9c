"""Per-call metrics: pure functions of a :class:`~pytest_livekit.record.CallRecord`.

Every duration is in float seconds, like livekit-agents' own metrics. Each function states the
vantage point its number is measured from.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .record import CallRecord

_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def time_to_first_audio(record: CallRecord, turn: int = -1) -> float | None:
    """Seconds from the end of the caller's speech on the wire to the first agent audio the caller
    heard after it (caller's vantage point). ``None`` if the agent never answered that turn.

    Includes everything a real caller waits for: endpointing, STT, LLM, TTS, the agent's output
    queue, Opus framing, the server hop and the caller's jitter buffer.
    """
    t = record.turn(turn)
    if t.ended_at is None:
        return None
    # from the end of audible speech (the clip's trailing silence is not the caller talking)
    end = t.speech_ended_at if t.speech_ended_at is not None else t.ended_at
    _, window_end = record.turn_window(turn)
    for seg in sorted(record.heard, key=lambda s: s.start):
        if end <= seg.start < window_end:
            return seg.start - end
    return None


def user_transcript(record: CallRecord, turn: int = -1) -> str:
    """The agent's raw final STT text for a caller turn: every final user transcript emitted
    between the turn's start and the next caller turn, joined with spaces (never the LLM's or a
    summariser's rewording).
    """
    start, end = record.turn_window(turn)
    finals = [tr.text.strip() for tr in record.transcripts if tr.is_final and start <= tr.t < end]
    return " ".join(f for f in finals if f)


def spell_out_digits(text: str) -> str:
    """Replace every digit by its English word: ``"order 1234"`` -> ``"order one two three four"``.

    Opt-in number normalisation for WER, for agents whose STT writes digits where the caller
    spoke them digit by digit.
    """
    spelled = re.sub(r"\d", lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    return " ".join(spelled.split())


def normalize_text(text: str, *, exact: bool = False, normalize_numbers: bool = False) -> str:
    """Standard WER scoring normalisation: lowercase, drop punctuation (keeping apostrophes
    inside words), collapse spaces. ``exact=True`` only collapses whitespace.
    """
    return fold_text(
        text, fold_case=not exact, strip_punctuation=not exact, normalize_numbers=normalize_numbers
    )


def fold_text(
    text: str,
    *,
    fold_case: bool = True,
    strip_punctuation: bool = True,
    normalize_numbers: bool = False,
    rules: tuple[tuple[str, str], ...] = (),
) -> str:
    """The one text normalisation behind WER/CER scoring: digits spelled out (opt-in), lowercase,
    punctuation removed (apostrophes inside words kept), then ``rules`` (regex, replacement) in
    order, then whitespace collapsed to single spaces.
    """
    if normalize_numbers:
        text = spell_out_digits(text)
    if fold_case:
        text = text.lower()
    if strip_punctuation:
        text = re.sub(r"[^\w\s']|_", " ", text)
        text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text)
    return " ".join(text.split())


@dataclass(frozen=True)
class WordErrors:
    """Word error rate and its parts, from jiwer."""

    wer: float
    """(substitutions + deletions + insertions) / reference words; 0.0 is perfect, can exceed 1."""
    substitutions: int
    """Reference words replaced by another word."""
    deletions: int
    """Reference words missing from the hypothesis."""
    insertions: int
    """Hypothesis words not in the reference."""
    hits: int
    """Words recognised correctly."""
    reference: str
    """The reference after normalisation."""
    hypothesis: str
    """The hypothesis after normalisation."""


def word_error_rate(
    reference: str, hypothesis: str, *, exact: bool = False, normalize_numbers: bool = False
) -> WordErrors:
    """WER of ``hypothesis`` against ``reference`` after :func:`normalize_text` on both sides.

    An empty reference gives 0.0 for an empty hypothesis, else 1.0 per inserted word count.
    """
    import jiwer

    ref = normalize_text(reference, exact=exact, normalize_numbers=normalize_numbers)
    hyp = normalize_text(hypothesis, exact=exact, normalize_numbers=normalize_numbers)
    if not ref:
        n = len(hyp.split())
        return WordErrors(float(n), 0, 0, n, 0, ref, hyp)
    if not hyp:
        n = len(ref.split())
        return WordErrors(1.0, 0, n, 0, 0, ref, hyp)
    out = jiwer.process_words(ref, hyp)
    return WordErrors(
        wer=float(out.wer),
        substitutions=int(out.substitutions),
        deletions=int(out.deletions),
        insertions=int(out.insertions),
        hits=int(out.hits),
        reference=ref,
        hypothesis=hyp,
    )


def barge_in_stop_latency(record: CallRecord, turn: int = -1) -> float | None:
    """Seconds from the start of a barge-in turn on the wire until the agent audio stopped, as
    the caller heard it: the end of the last stretch of agent audio that began before the caller
    finished the interrupting turn. ``None`` if the agent was not audible during the turn.

    Includes the agent's VAD/interruption decision, its output queue flush and the transport. A
    pause between the agent's sentences does not count as stopping: audio that resumes while the
    caller is still talking extends the latency.
    """
    t = record.turn(turn)
    end_of_turn = t.ended_at if t.ended_at is not None else t.started_at
    overlapping = [s for s in record.heard if s.start < end_of_turn and s.end > t.started_at]
    if not overlapping:
        return None
    return max(s.end for s in overlapping) - t.started_at


def reply_after_reconnect(record: CallRecord, reconnect: int = -1) -> float | None:
    """Time-to-first-audio (s) of the first caller turn that started after a reconnect finished
    (caller's vantage point); ``None`` if no turn followed or the agent did not answer it.
    """
    if not record.reconnects:
        return None
    r = record.reconnects[reconnect]
    done = float(r["t"]) + float(r.get("took") or 0.0)
    for i, turn in enumerate(record.caller_turns):
        if turn.started_at >= done:
            return time_to_first_audio(record, i)
    return None
