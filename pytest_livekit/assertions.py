"""Assertion helpers over a call. Each failure shows measured vs allowed, the conversation around
the turn, and where the recording is.

They accept a :class:`~pytest_livekit.call.livekit_call.LivekitCall` or a bare
:class:`~pytest_livekit.call.record.CallRecord` (so they also work on a saved ``call.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from numbers import Real
from typing import Any, Protocol, SupportsFloat, TypeAlias

from pytest_livekit.call.record import CallRecord, ToolCall
from pytest_livekit.metrics.turns import time_to_first_audio, user_transcript, word_error_rate
from pytest_livekit.units import ms_to_seconds, to_ms


class HasRecord(Protocol):
    """Anything that carries a call's record, such as a
    :class:`~pytest_livekit.call.livekit_call.LivekitCall` (``livekit_call``, ``make_livekit_call()``).
    """

    @property
    def record(self) -> CallRecord:
        """The call's :class:`~pytest_livekit.call.record.CallRecord`."""
        ...


#: What every assertion takes: a call (anything with a ``record``: a LivekitCall) or its record
#: (also one loaded from a saved ``call.json``).
CallLike: TypeAlias = HasRecord | CallRecord

__all__ = [
    "assert_answers_interruption",
    "assert_asr_accuracy",
    "assert_backchannel_ignored",
    "assert_barge_in_stopped",
    "assert_no_reply_during_pause",
    "assert_task_completed",
    "assert_reply_after_reconnect",
    "assert_no_duplicated_turns",
    "assert_outcome",
    "assert_time_to_first_audio",
    "assert_tool_called",
    "assert_tool_not_called",
    "assert_tools_called_in_order",
    "assert_within_limits",
]


def _is_number(value: Any) -> bool:
    # NaN would make every comparison false, so an assertion with it could never fail.
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(float(value))


def _check_max_ms(max_ms: Any) -> None:
    if not _is_number(max_ms) or not max_ms > 0:
        raise ValueError(f"max_ms must be a positive number of milliseconds, got {max_ms!r}")


def _record(call: object) -> CallRecord:
    if isinstance(call, CallRecord):
        return call
    rec = getattr(call, "record", None)
    if isinstance(rec, CallRecord):
        return rec
    raise TypeError(
        f"expected a LivekitCall or CallRecord (e.g. the livekit_call fixture), got {type(call).__name__}"
    )


def _context(rec: CallRecord, turn: int | None) -> str:
    around = None
    label = ""
    if turn is not None and rec.caller_turns:
        t = rec.turn(turn)
        around = t.started_at
        label = f", turn {t.index + 1}"
    lines = [f"  {line}" for line in rec.timeline(around=around, width=20.0).splitlines()]
    where = rec.recording_path or "(not recorded: no artifacts folder)"
    kind = f'call type "{rec.call_type}"' if rec.call_type else "no call type"
    return f"({kind}{label})\n" + "\n".join(lines) + f"\n  recording: {where}" + clock_note(rec)


def clock_note(rec: CallRecord) -> str:
    """A line for failure messages when the caller could not keep real time ("" when it did)."""
    misses = getattr(rec, "clock_misses", None) or []
    if not misses:
        return ""
    worst = max(misses, key=lambda m: float(m.get("late_ms", 0.0)))
    return (
        f"\n  clock: the caller could not keep real time: {len(misses)} frame(s) left or arrived "
        f"> 20 ms late (worst {worst.get('late_ms')} ms, {worst.get('direction')}, at "
        f"{float(worst.get('t', 0.0)):.2f} s); this call's timings are not to be trusted (an "
        "overloaded machine: fewer concurrent calls or xdist workers)"
    )


def _turn_label(rec: CallRecord, turn: int) -> str:
    return f"turn {rec.turn(turn).index + 1}"


def assert_time_to_first_audio(call: CallLike, *, max_ms: SupportsFloat, turn: int = -1) -> float:
    """Assert the caller heard the agent within ``max_ms`` milliseconds after it stopped speaking.

    Measured at the caller (see :func:`~pytest_livekit.metrics.turns.time_to_first_audio`).
    Returns the measured value in milliseconds.
    """
    __tracebackhide__ = True
    _check_max_ms(max_ms)
    allowed = float(max_ms)  # any real number type (a numpy threshold from a table, too)
    rec = _record(call)
    ttfa = time_to_first_audio(rec, turn)
    if ttfa is None:
        raise AssertionError(
            f"time-to-first-audio: the caller heard no agent audio after {_turn_label(rec, turn)} "
            f"(allowed {allowed:.0f} ms) {_context(rec, turn)}"
        )
    ms = float(to_ms(ttfa, digits=None) or 0.0)
    if ms > allowed:
        raise AssertionError(
            f"time-to-first-audio {ms:.0f} ms > {allowed:.0f} ms allowed "
            f"{_context(rec, turn)}"
        )
    return ms


def assert_asr_accuracy(
    call: CallLike,
    *,
    max_wer: float,
    turn: int | None = -1,
    normalize_numbers: bool = False,
    exact: bool = False,
) -> float:
    """Assert the agent's raw final STT transcript matches what the caller said.

    WER (jiwer) between the caller's script text and the agent's raw final transcript; case and
    punctuation are folded on both sides (standard WER scoring) unless ``exact=True``. Digits are
    spelled out on both sides only with ``normalize_numbers=True``. ``turn=None`` scores all
    caller turns together. Returns the measured WER.
    """
    __tracebackhide__ = True
    if not _is_number(max_wer) or not max_wer >= 0:
        raise ValueError(f"max_wer must be a number >= 0 (0.2 = 20 % word errors), got {max_wer!r}")
    rec = _record(call)
    if not rec.caller_turns:
        raise AssertionError(
            f"ASR accuracy: the caller has not said anything in this call {_context(rec, None)}"
        )
    indices = range(len(rec.caller_turns)) if turn is None else [turn]
    refs, hyps = [], []
    for i in indices:
        t = rec.turn(i)
        if t.text is None:
            raise ValueError(
                f"caller {_turn_label(rec, i)} ({t.source}) has no reference text; "
                "pass text=... to call.play() to score ASR on a WAV file."
            )
        refs.append(t.text)
        hyps.append(user_transcript(rec, i))
    errors = word_error_rate(
        " ".join(refs), " ".join(hyps), exact=exact, normalize_numbers=normalize_numbers
    )
    if errors.wer > max_wer:
        raise AssertionError(
            f"ASR word error rate {errors.wer:.2f} > {max_wer:.2f} allowed "
            f"({errors.substitutions} substituted, {errors.deletions} deleted, "
            f"{errors.insertions} inserted of {len(errors.reference.split())} words)\n"
            f"  said:  {errors.reference!r}\n  heard: {errors.hypothesis!r}\n"
            f"{_context(rec, turn)}"
        )
    return errors.wer


def _matches(call: ToolCall, expected: dict[str, Any]) -> bool:
    for key, value in expected.items():
        if key not in call.arguments:
            return False
        got = call.arguments[key]
        if got != value and str(got) != str(value):
            return False
    return True


def _fmt_value(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _fmt_call(c: ToolCall) -> str:
    args = ", ".join(f"{k}={_fmt_value(v)}" for k, v in c.arguments.items())
    return f"{c.name}({args}) at {c.t:06.2f}"


def assert_tool_called(call: CallLike, name: str, /, **expected_args: Any) -> ToolCall:
    """Assert the agent executed tool ``name`` with at least ``expected_args`` (subset match;
    ``"1234"`` matches ``1234``). Returns the first matching call.
    """
    __tracebackhide__ = True
    rec = _record(call)
    for c in rec.tool_calls:
        if c.name == name and _matches(c, expected_args):
            return c
    made = "\n".join(f"    {_fmt_call(c)}" for c in rec.tool_calls) or "    (no tool calls)"
    wanted = ", ".join(f"{k}={_fmt_value(v)}" for k, v in expected_args.items())
    raise AssertionError(
        f"tool {name}({wanted}) was not called. Calls made:\n{made}\n{_context(rec, None)}"
    )


def assert_within_limits(call: CallLike, **overrides: Any) -> None:
    """Assert a call meets every limit of its call type (``[tool.pytest_livekit.call_types.*]``,
    after marker overrides, then ``overrides``), reporting every breach at once.

    Needs a :class:`~pytest_livekit.call.livekit_call.LivekitCall` (the limits and the audio live on it).
    """
    __tracebackhide__ = True
    from pytest_livekit.metrics.call_metrics import compute_metrics
    from pytest_livekit.metrics.thresholds import CALL_LIMITS, check_call, validate_limits

    rec = _record(call)
    limits = {**getattr(call, "limits", {}), **validate_limits("assert_within_limits", overrides, CALL_LIMITS)}
    if not limits:
        raise ValueError(
            f"call type {rec.call_type!r} has no limits: add [tool.pytest_livekit.call_types."
            f"{rec.call_type or '<name>'}] to pyproject.toml, or pass limits as keyword arguments."
        )
    caller = getattr(call, "caller", None)
    stereo = caller.recording.stereo() if caller is not None else None
    metrics = compute_metrics(rec, stereo).to_dict()
    breaches = check_call(metrics, limits)
    if breaches:
        raise AssertionError(limits_breached_message(rec, breaches))


def limits_breached_message(call: CallLike, breaches: Sequence[Any], *, hint: str = "", timeline: bool = True) -> str:
    """The failure message for a call's breached limits (:class:`~pytest_livekit.metrics.thresholds.Breach`
    list): the first breach, measured vs allowed, on the first line (pytest's short summary shows
    it), every breach below, then the call type, the conversation around the first breached turn
    and the recording.

    Args:
        call: the call or its record.
        breaches: what :func:`~pytest_livekit.metrics.thresholds.check_call` returned (not empty).
        hint: a last line (how to change the limit or the mode).
        timeline: include the conversation around the turn (warnings leave it out).
    """
    rec = _record(call)
    more = f" (and {len(breaches) - 1} more)" if len(breaches) > 1 else ""
    text = f"{breaches[0].describe()}{more}"
    if len(breaches) > 1:
        text += "\n" + "\n".join(f"  {b.describe()}" for b in breaches)
    turn = next((_turn_of(b.detail) for b in breaches if _turn_of(b.detail) is not None), None)
    if turn is not None and not 0 <= turn < len(rec.caller_turns):
        turn = None
    if timeline:
        text += f"\n{_context(rec, turn)}"
    else:
        kind = f'call type "{rec.call_type}"' if rec.call_type else "no call type"
        text += f"\n({kind}) recording: {rec.recording_path or '(not recorded: no artifacts folder)'}"
        text += clock_note(rec)
    return text + (f"\n{hint}" if hint else "")


def _turn_of(detail: str) -> int | None:
    """``"turn 2"`` -> 1 (the index), else None."""
    number = detail.removeprefix("turn ")
    return int(number) - 1 if number != detail and number.isdigit() else None


def assert_tool_not_called(call: CallLike, name: str, /) -> None:
    """Assert the agent never executed tool ``name``."""
    __tracebackhide__ = True
    rec = _record(call)
    made = [c for c in rec.tool_calls if c.name == name]
    if made:
        raise AssertionError(
            f"tool {name} was called {len(made)} time(s), expected never: "
            f"{', '.join(_fmt_call(c) for c in made)}\n{_context(rec, None)}"
        )


def assert_tools_called_in_order(call: CallLike, *names: str) -> None:
    """Assert the tools ``names`` were executed in this order (others may come in between)."""
    __tracebackhide__ = True
    rec = _record(call)
    called = [c.name for c in rec.tool_calls]
    it = iter(called)
    if not all(n in it for n in names):
        raise AssertionError(
            f"tools not called in order {list(names)}; calls made in order: {called}\n{_context(rec, None)}"
        )


def assert_no_duplicated_turns(call: CallLike) -> None:
    """Assert the agent never answered one caller turn twice with the same words."""
    __tracebackhide__ = True
    from pytest_livekit.metrics.call_metrics import turn_metrics

    rec = _record(call)
    dups = [t for t in turn_metrics(rec) if t.duplicated]
    if dups:
        raise AssertionError(
            f"the agent answered {len(dups)} caller turn(s) twice: turns "
            f"{', '.join(str(t.index + 1) for t in dups)}\n{_context(rec, None)}"
        )


def assert_outcome(call: CallLike, expected: str, *, completion_tools: tuple[str, ...] = (),
                   transfer_tools: tuple[str, ...] = ("transfer_to_human",)) -> None:
    """Assert the call ended as ``expected``: completed, transferred, hung_up or incomplete."""
    __tracebackhide__ = True
    from pytest_livekit.metrics.call_metrics import call_outcome
    from pytest_livekit.metrics.thresholds import OUTCOMES

    if expected not in OUTCOMES:
        raise ValueError(f"{expected!r} is not an outcome. Valid outcomes: {', '.join(OUTCOMES)}.")
    rec = _record(call)
    got = call_outcome(rec, completion_tools=completion_tools, transfer_tools=transfer_tools)
    if got != expected:
        raise AssertionError(f"call outcome {got!r}, expected {expected!r}\n{_context(rec, None)}")


def assert_task_completed(result: Any) -> None:
    """Assert a scenario's task was done, judged from what happened: the goal phrase was said,
    every expected tool ran with its arguments, the outcome matches (and the LLM judge agreed,
    where one ran). ``result`` is what :meth:`LivekitCall.run_scenario
    <pytest_livekit.call.livekit_call.LivekitCall.run_scenario>` returned; the failure shows the
    conversation, the table row and how to re-run this one alone.
    """
    __tracebackhide__ = True
    if not hasattr(result, "completed") or not hasattr(result, "explain"):
        raise TypeError(f"assert_task_completed takes the ScenarioResult run_scenario returned, got {result!r}.")
    if not result.completed:
        raise AssertionError(result.explain())


def assert_barge_in_stopped(call: CallLike, *, max_ms: float, turn: int = -1) -> float:
    """Assert the agent stopped speaking within ``max_ms`` after the caller talked over it
    (caller's vantage point, see :func:`~pytest_livekit.metrics.turns.barge_in_stop_latency`).
    """
    __tracebackhide__ = True
    from pytest_livekit.metrics.turns import barge_in_stop_latency

    _check_max_ms(max_ms)
    rec = _record(call)
    latency = barge_in_stop_latency(rec, turn)
    if latency is None:
        raise AssertionError(
            f"barge-in: the agent was not audible when caller {_turn_label(rec, turn)} started, "
            f"so nothing was interrupted {_context(rec, turn)}"
        )
    latency_ms = float(to_ms(latency, digits=None) or 0.0)
    if latency_ms > max_ms:
        raise AssertionError(
            f"barge-in stop latency {latency_ms:.0f} ms > {max_ms:.0f} ms allowed "
            f"{_context(rec, turn)}"
        )
    return latency_ms


def assert_answers_interruption(call: CallLike, *, turn: int = -1) -> None:
    """Assert the agent answered the interrupting caller turn (it was heard again after the turn
    ended, and added a reply).
    """
    __tracebackhide__ = True
    from pytest_livekit.metrics.turns import time_to_first_audio

    rec = _record(call)
    t = rec.turn(turn)
    replied = any(i.role == "assistant" and t.ended_at is not None and i.t >= t.ended_at for i in rec.items)
    if time_to_first_audio(rec, turn) is None or not replied:
        raise AssertionError(
            f"the agent did not answer the interrupting {_turn_label(rec, turn)} {t.text!r} "
            f"{_context(rec, turn)}"
        )


def assert_no_reply_during_pause(call: CallLike, *, turn: int = -1, grace_ms: float = 100.0) -> None:
    """Assert the agent did not start talking during the caller's mid-sentence pause (a reply
    there means the agent's endpointing cut the caller off).
    """
    __tracebackhide__ = True
    rec = _record(call)
    t = rec.turn(turn)
    if t.pause is None:
        raise ValueError(f"caller {_turn_label(rec, turn)} has no pause: use call.say(text, pause=Pause(...))")
    start, end = t.started_at + t.pause[0], t.started_at + t.pause[1] + ms_to_seconds(grace_ms)
    talked = [s for s in rec.heard if start <= s.start < end]
    if talked:
        raise AssertionError(
            f"the agent started talking {talked[0].start - start:.2f} s into the caller's "
            f"{t.pause[1] - t.pause[0]:.2f} s pause (premature end of turn) {_context(rec, turn)}"
        )


def assert_reply_after_reconnect(call: CallLike, *, max_s: float, reconnect: int = -1) -> float:
    """Assert that after a caller reconnect, the agent answered the next caller turn within
    ``max_s`` seconds (caller's time-to-first-audio).
    """
    __tracebackhide__ = True
    from pytest_livekit.metrics.turns import reply_after_reconnect

    rec = _record(call)
    if not rec.reconnects:
        raise ValueError("the call has no reconnect: use await call.reconnect() first")
    value = reply_after_reconnect(rec, reconnect)
    if value is None or value > max_s:
        got = "no answer" if value is None else f"{value:.2f} s"
        raise AssertionError(
            f"after the {rec.reconnects[reconnect]['kind']} reconnect at "
            f"{rec.reconnects[reconnect]['t']:.2f} s the agent answered: {got} (allowed {max_s:.2f} s) "
            f"{_context(rec, None)}"
        )
    return value


def assert_backchannel_ignored(call: CallLike, *, turn: int = -1) -> None:
    """Assert the agent kept talking through a backchannel ("mm-hmm"): it was audible when the
    backchannel started, was heard again after it ended, and the reply it was giving was not
    marked interrupted.
    """
    __tracebackhide__ = True
    rec = _record(call)
    t = rec.turn(turn)
    end = t.ended_at if t.ended_at is not None else t.started_at
    if not any(s.start <= t.started_at < s.end for s in rec.heard):
        raise AssertionError(
            f"the agent was not audible when backchannel {t.text!r} started {_context(rec, turn)}"
        )
    reply = next((i for i in rec.items if i.role == "assistant" and i.t >= t.started_at), None)
    if reply is not None and reply.interrupted:
        raise AssertionError(
            f"backchannel {t.text!r} interrupted the agent: {reply.text!r} was cut off "
            f"{_context(rec, turn)}"
        )
    if not any(s.end > end for s in rec.heard if reply is None or s.start <= reply.t):
        raise AssertionError(
            f"the agent went quiet after backchannel {t.text!r} {_context(rec, turn)}"
        )
