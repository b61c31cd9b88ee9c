"""Per-call metrics: pure functions of a :class:`~pytest_livekit.call.record.CallRecord`.

Every duration is in float seconds, like livekit-agents' own metrics. Each function states the
vantage point its number is measured from.
"""

from __future__ import annotations

from pytest_livekit.call.record import CallRecord

# Text scoring lives in one engine; these names stay importable from here.
from pytest_livekit.metrics.text_scoring import WordErrors as WordErrors
from pytest_livekit.metrics.text_scoring import fold_text as fold_text
from pytest_livekit.metrics.text_scoring import normalize_text as normalize_text
from pytest_livekit.metrics.text_scoring import spell_out_digits as spell_out_digits
from pytest_livekit.metrics.text_scoring import word_error_rate as word_error_rate


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


def jitter_buffer_delay(record: CallRecord, turn: int = -1) -> float | None:
    """Seconds the agent's first answer to a caller turn spent, on average per sample, in the
    caller's receive jitter buffer: part of :func:`time_to_first_audio` that WebRTC adapts during a
    call (typically 20-40 ms on loopback). Read from the receiver's cumulative counters sampled
    when the answer was first heard and when it closed; ``None`` without an answer or samples.
    """
    t = record.turn(turn)
    if t.ended_at is None:
        return None
    end = t.speech_ended_at if t.speech_ended_at is not None else t.ended_at
    _, window_end = record.turn_window(turn)
    starts = sorted(seg.start for seg in record.heard if end <= seg.start < window_end)
    if not starts:
        return None
    samples = [s for s in record.jitter_buffer if abs(s["segment_start"] - starts[0]) < 1e-6]
    if len(samples) < 2:
        return None
    first, last = samples[0], samples[-1]
    emitted = last["emitted"] - first["emitted"]
    if emitted <= 0:
        return None
    return (last["delay_total"] - first["delay_total"]) / emitted


def user_transcript(record: CallRecord, turn: int = -1) -> str:
    """The agent's raw final STT text for a caller turn: every final user transcript emitted
    between the turn's start and the next caller turn, joined with spaces (never the LLM's or a
    summariser's rewording).
    """
    start, end = record.turn_window(turn)
    finals = [tr.text.strip() for tr in record.transcripts if tr.is_final and start <= tr.t < end]
    return " ".join(f for f in finals if f)


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
