"""Hypothesis strategies for call conditions: they draw specs, never audio.

Each strategy returns frozen specs from :mod:`pytest_livekit.conditions.media`; the audio is only
ever transformed by the specs' ``apply``. Two rules make them useful for property tests of a
voice agent:

* **Severity shrinks to clean.** Every strategy draws an integer *severity* first, where 0 maps
  to the clean spec (no noise, no loss, ...) and larger values to worse conditions. Hypothesis
  shrinks integers towards 0, so a failing example shrinks to the *mildest* condition that
  still fails: ``noise()`` that fails below 15 dB SNR is reported as ``Noise(snr_db=14)``.
* **Bounds are validated when the strategy is built**, not when it draws, and the
  :class:`hypothesis.errors.InvalidArgument` message repeats ``name=value`` and the valid range.

``@given`` tests that place calls must use the ``make_livekit_call`` factory fixture: the
function-scoped ``livekit_call`` fixture is created once per test function, not once per
example, and hypothesis rejects that mix (``HealthCheck.function_scoped_fixture``). Calls are
slow, so load the ``livekit`` settings profile (:func:`settings_profile`)::

    from hypothesis import given
    from pytest_livekit.conditions import strategies as lks

    lks.register_profiles()

    @lks.settings_profile()
    @given(lks.conditions(lks.noise(max_snr_db=30), lks.frame_loss(max_rate=0.1)))
    async def test_booking_survives(make_livekit_call, conditions):
        call = await make_livekit_call(conditions=conditions)
        ...

Network strategies (:func:`bandwidth`, :func:`latency`, :func:`packet_jitter`,
:func:`packet_loss`, :func:`burst_loss`, :func:`duplicate`, :func:`outage`, bundled per
direction by :func:`network_specs` and per path by :func:`network_paths`) draw the specs of
:mod:`pytest_livekit.conditions.network` the same way, within realistic mobile ranges by default.

This module imports hypothesis at the top: only tests that use it import it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_livekit.conditions import network as _netem
from pytest_livekit.conditions.media import (
    NOISE_COLORS,
    BargeIn,
    Bitrate,
    CodecRoundTrip,
    Condition,
    Conditions,
    FrameLoss,
    Jitter,
    Level,
    Noise,
    Pause,
    Telephony,
)
from pytest_livekit.conditions.network import (
    Bandwidth,
    BurstLoss,
    Duplicate,
    Latency,
    NetworkPath,
    NetworkSpec,
    Outage,
    PacketJitter,
    PacketLoss,
)
from pytest_livekit.validation import check_int, check_number

__all__ = [
    "PROFILE",
    "bandwidth",
    "barge_in",
    "bitrate",
    "burst_loss",
    "codec",
    "conditions",
    "duplicate",
    "frame_loss",
    "jitter",
    "latency",
    "level",
    "network_paths",
    "network_specs",
    "noise",
    "outage",
    "packet_jitter",
    "packet_loss",
    "pause",
    "register_profiles",
    "settings_profile",
    "telephony",
]

PROFILE = "livekit"
"""Name of the hypothesis settings profile registered by :func:`settings_profile`."""

LOSS_STEP = 0.005
"""Loss-rate step of :func:`frame_loss` severities (0.5 percentage points)."""


# -- eager validation ------------------------------------------------------------------------
def _check_number(name: str, value: object, lo: float, hi: float) -> float:
    """The specs' own number check, raising hypothesis's ``InvalidArgument`` (the error users of
    strategies expect for bad arguments).
    """
    try:
        return check_number(name, value, lo, hi)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    """The specs' own int check, raising hypothesis's ``InvalidArgument``."""
    try:
        return check_int(name, value, lo, hi)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _check_interval(low_name: str, low: float, high_name: str, high: float) -> None:
    """Check ``low < high``, naming both in the message.

    Raises:
        InvalidArgument: If the interval is empty.
    """
    if not low < high:
        raise InvalidArgument(f"{low_name}={low!r} must be less than {high_name}={high!r}")


def _check_choices(name: str, values: object, valid: Sequence[str]) -> tuple[str, ...]:
    """Check a non-empty sequence of choices, each one of ``valid``.

    Args:
        name: Argument name, repeated in the message.
        values: The choices given.
        valid: Allowed values.

    Returns:
        The choices as a tuple (order kept: hypothesis shrinks towards the first).

    Raises:
        InvalidArgument: If it is empty, a plain string, or has an invalid entry.
    """
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise InvalidArgument(
            f"{name}={values!r} must be a non-empty tuple of values from {', '.join(valid)}"
        )
    for value in values:
        if value not in valid:
            raise InvalidArgument(f"{name}={values!r} contains {value!r}; valid values: {', '.join(valid)}")
    return tuple(values)


def _check_frame_ms(frame_ms: object) -> None:
    """Check a frame duration in milliseconds.

    Raises:
        InvalidArgument: If it is not 10, 20, 40 or 60.
    """
    if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) or frame_ms not in (10, 20, 40, 60):
        raise InvalidArgument(f"frame_ms={frame_ms!r} is not valid; valid values: 10, 20, 40, 60")


def _severities(steps: int) -> st.SearchStrategy[int]:
    """Severity 0 (clean) to ``steps``; shrinks towards 0."""
    return st.integers(min_value=0, max_value=steps)


# -- signal-level strategies -----------------------------------------------------------------
def noise(
    min_snr_db: float = 0,
    max_snr_db: float = 40,
    colors: Sequence[str] = ("white", "pink"),
    *,
    file: str | None = None,
    hum_hz: float = 50.0,
) -> st.SearchStrategy[Noise]:
    """Noise specs from clean down to ``min_snr_db`` SNR, in 1 dB steps.

    Severity ``k`` in ``0 .. floor(max_snr_db - min_snr_db)`` maps 0 to ``Noise(snr_db=None)``
    (clean) and ``k`` to ``Noise(snr_db=max_snr_db - k)``, so shrinking finds the highest SNR
    that still fails. The color shrinks towards the first of ``colors``.

    Args:
        min_snr_db: Worst SNR drawn, in dB (-20 to 80).
        max_snr_db: SNR in dB that severity 0 stands in for (-20 to 80, above ``min_snr_db``);
            severity 1 is ``max_snr_db - 1``.
        colors: Noise sources to draw from (see :data:`~pytest_livekit.conditions.media.NOISE_COLORS`);
            ``"file"`` needs ``file``.
        file: Noise recording for ``"file"``.
        hum_hz: Mains frequency in Hz for ``"hum"`` (20 to 1000).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Noise`.

    Raises:
        InvalidArgument: If a bound or color is invalid.
    """
    low = _check_number("min_snr_db", min_snr_db, -20.0, 80.0)
    high = _check_number("max_snr_db", max_snr_db, -20.0, 80.0)
    _check_interval("min_snr_db", min_snr_db, "max_snr_db", max_snr_db)
    color_choices = _check_choices("colors", colors, NOISE_COLORS)
    if "file" in color_choices and file is None:
        raise InvalidArgument(f"colors={colors!r} includes 'file', which needs file=<path>; got file=None")
    if file is not None and (not isinstance(file, str) or not file):
        raise InvalidArgument(f"file={file!r} must be a non-empty path string or None")
    _check_number("hum_hz", hum_hz, 20.0, 1000.0)
    steps = math.floor(high - low)

    @st.composite
    def _noise(draw: st.DrawFn) -> Noise:
        severity = draw(_severities(steps))
        if severity == 0:
            return Noise(snr_db=None)
        color = draw(st.sampled_from(color_choices))
        return Noise(
            snr_db=high - severity,
            color="white" if color == "file" else color,
            file=file if color == "file" else None,
            hum_hz=hum_hz,
        )

    return _noise()


def level(
    min_gain_db: int = -30, max_gain_db: int = 12, max_clip_depth_db: int = 0
) -> st.SearchStrategy[Level]:
    """Level specs: gain in 1 dB steps, optionally with clipping.

    The gain is drawn from ``min_gain_db .. max_gain_db`` (which must include 0) and shrinks
    towards 0 dB; the clipping severity ``c`` in ``0 .. max_clip_depth_db`` maps 0 to no
    clipping and ``c`` to clipping at ``-c`` dBFS.

    Args:
        min_gain_db: Quietest gain in dB (-60 to 0).
        max_gain_db: Loudest gain in dB (0 to 40).
        max_clip_depth_db: Deepest clipping level below full scale in dB (0 to 40; 0 = never
            clip).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Level`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_int("min_gain_db", min_gain_db, -60, 0)
    _check_int("max_gain_db", max_gain_db, 0, 40)
    _check_int("max_clip_depth_db", max_clip_depth_db, 0, 40)

    @st.composite
    def _level(draw: st.DrawFn) -> Level:
        # integers() over a range containing 0 shrinks towards 0: clean is the minimal example.
        gain = draw(st.integers(min_value=min_gain_db, max_value=max_gain_db))
        depth = draw(_severities(max_clip_depth_db))
        return Level(gain_db=float(gain), clip_dbfs=None if depth == 0 else float(-depth))

    return _level()


def telephony() -> st.SearchStrategy[Telephony]:
    """Telephony specs: severity 0 = off, 1 = 8 kHz band limit, 2 = band limit + mu-law.

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Telephony`.
    """
    return _severities(2).map(lambda severity: Telephony(enabled=severity > 0, mulaw=severity == 2))


def _bitrates(min_bitrate_bps: int, max_bitrate_bps: int, step_bps: int) -> st.SearchStrategy[int | None]:
    """Bitrates from ``None`` (severity 0) down from ``max_bitrate_bps`` in ``step_bps`` steps.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_int("min_bitrate_bps", min_bitrate_bps, 6_000, 510_000)
    _check_int("max_bitrate_bps", max_bitrate_bps, 6_000, 510_000)
    _check_interval("min_bitrate_bps", min_bitrate_bps, "max_bitrate_bps", max_bitrate_bps)
    _check_int("step_bps", step_bps, 1, max_bitrate_bps - min_bitrate_bps)
    steps = (max_bitrate_bps - min_bitrate_bps) // step_bps + 1
    return _severities(steps).map(
        lambda severity: None if severity == 0 else max_bitrate_bps - (severity - 1) * step_bps
    )


def codec(
    min_bitrate_bps: int = 6_000, max_bitrate_bps: int = 64_000, step_bps: int = 1_000
) -> st.SearchStrategy[CodecRoundTrip]:
    """Offline Opus round trips from clean down to ``min_bitrate_bps``.

    Severity ``k`` maps 0 to ``CodecRoundTrip(None)`` and ``k`` to a bitrate of
    ``max_bitrate_bps - (k - 1) * step_bps``: shrinking finds the highest failing bitrate.

    Args:
        min_bitrate_bps: Lowest bitrate in bits per second (6000 to 510000).
        max_bitrate_bps: Highest bitrate in bits per second (above ``min_bitrate_bps``).
        step_bps: Step between bitrates in bits per second.

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.CodecRoundTrip`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    return _bitrates(min_bitrate_bps, max_bitrate_bps, step_bps).map(
        lambda bps: CodecRoundTrip(bitrate_bps=bps)
    )


def bitrate(
    min_bitrate_bps: int = 6_000, max_bitrate_bps: int = 64_000, step_bps: int = 1_000
) -> st.SearchStrategy[Bitrate]:
    """Max bitrates of the caller's published track, from default down to ``min_bitrate_bps``.

    Same severity mapping as :func:`codec`, for :class:`~pytest_livekit.conditions.media.Bitrate`
    (which acts on the live call's encoder, not offline).

    Args:
        min_bitrate_bps: Lowest bitrate in bits per second (6000 to 510000).
        max_bitrate_bps: Highest bitrate in bits per second (above ``min_bitrate_bps``).
        step_bps: Step between bitrates in bits per second.

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Bitrate`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    return _bitrates(min_bitrate_bps, max_bitrate_bps, step_bps).map(lambda bps: Bitrate(max_bitrate_bps=bps))


def frame_loss(
    max_rate: float = 0.2,
    models: Sequence[str] = ("random", "gilbert"),
    *,
    max_burst_length: int = 5,
    frame_ms: int = 20,
) -> st.SearchStrategy[FrameLoss]:
    """Frame-loss specs from no loss up to ``max_rate``, in 0.5 % steps.

    Severity ``k`` maps 0 to ``FrameLoss()`` (clean) and ``k`` to ``rate = k * 0.005``. The
    model shrinks towards the first of ``models``; for ``"gilbert"`` the mean burst length is
    drawn from ``1 .. max_burst_length`` frames (shrinking towards 1).

    Args:
        max_rate: Highest loss rate, a fraction (0.005 to 0.5).
        models: Loss models to draw from: ``"random"``, ``"gilbert"``.
        max_burst_length: Longest mean burst for ``"gilbert"``, in frames (1 to 100).
        frame_ms: Frame duration in milliseconds (10, 20, 40 or 60).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.FrameLoss`.

    Raises:
        InvalidArgument: If a bound or model is invalid.
    """
    _check_number("max_rate", max_rate, LOSS_STEP, 0.5)
    model_choices = _check_choices("models", models, ("random", "gilbert"))
    _check_int("max_burst_length", max_burst_length, 1, 100)
    _check_frame_ms(frame_ms)
    steps = math.floor(max_rate / LOSS_STEP + 1e-9)

    @st.composite
    def _loss(draw: st.DrawFn) -> FrameLoss:
        severity = draw(_severities(steps))
        if severity == 0:
            return FrameLoss(frame_ms=frame_ms)
        rate = round(severity * LOSS_STEP, 6)  # 0.15, not 0.15000000000000002, in reports
        model = draw(st.sampled_from(model_choices))
        if model == "random":
            return FrameLoss(rate=rate, model="random", frame_ms=frame_ms)
        burst = draw(st.integers(min_value=1, max_value=max_burst_length))
        return FrameLoss(rate=rate, model="gilbert", burst_length=float(burst), frame_ms=frame_ms)

    return _loss()


# -- timing and behaviour strategies ---------------------------------------------------------
def jitter(max_std_ms: int = 50, frame_ms: int = 10) -> st.SearchStrategy[Jitter]:
    """Jitter specs from none up to ``max_std_ms``, in 1 ms steps (severity = ``std_ms``).

    Args:
        max_std_ms: Largest delay scale in milliseconds (1 to 1000).
        frame_ms: Frame duration in milliseconds (10, 20, 40 or 60).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Jitter`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_int("max_std_ms", max_std_ms, 1, 1000)
    _check_frame_ms(frame_ms)
    return _severities(max_std_ms).map(lambda ms: Jitter(std_ms=float(ms), frame_ms=frame_ms))


def barge_in(
    min_offset_s: float = 0.2, max_offset_s: float = 3.0, *, step_s: float = 0.1
) -> st.SearchStrategy[BargeIn]:
    """Barge-in specs: none, then from late (mild) to early (hard) in ``step_s`` steps.

    Severity ``k`` maps 0 to ``BargeIn(None)`` and ``k`` to an offset of
    ``max_offset_s - (k - 1) * step_s`` seconds into the agent's reply, down to
    ``min_offset_s``: shrinking finds the latest barge-in that still fails.

    Args:
        min_offset_s: Earliest barge-in, in seconds (0 to 60).
        max_offset_s: Latest barge-in, in seconds (above ``min_offset_s``, at most 60).
        step_s: Step between offsets, in seconds (0.01 to ``max_offset_s - min_offset_s``).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.BargeIn`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_number("min_offset_s", min_offset_s, 0.0, 60.0)
    _check_number("max_offset_s", max_offset_s, 0.0, 60.0)
    _check_interval("min_offset_s", min_offset_s, "max_offset_s", max_offset_s)
    _check_number("step_s", step_s, 0.01, max_offset_s - min_offset_s)
    steps = math.floor((max_offset_s - min_offset_s) / step_s + 1e-9) + 1
    return _severities(steps).map(
        lambda k: BargeIn(None if k == 0 else round(max_offset_s - (k - 1) * step_s, 6))
    )


def pause(
    max_duration_s: float = 3.0,
    *,
    min_word: int = 0,
    max_word: int = 5,
    step_s: float = 0.1,
) -> st.SearchStrategy[Pause]:
    """Mid-sentence pause specs, from none up to ``max_duration_s`` in ``step_s`` steps.

    Severity ``k`` maps 0 to ``Pause(at_word=min_word, duration_s=0)`` (clean) and ``k`` to a
    pause of ``k * step_s`` seconds after a word drawn from ``min_word .. max_word``
    (shrinking towards ``min_word``). Keep ``max_word`` at most the number of words of the
    caller's sentence minus 2 (see :func:`~pytest_livekit.conditions.media.split_text_for_pause`).

    Args:
        max_duration_s: Longest pause in seconds (``step_s`` to 60).
        min_word: First word index (0-based) a pause may follow (0 to 1000).
        max_word: Last word index (0-based) a pause may follow (``min_word`` to 1000).
        step_s: Step between durations, in seconds (0.01 to ``max_duration_s``).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Pause`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_number("max_duration_s", max_duration_s, 0.01, 60.0)
    _check_number("step_s", step_s, 0.01, max_duration_s)
    _check_int("min_word", min_word, 0, 1000)
    _check_int("max_word", max_word, min_word, 1000)
    steps = math.floor(max_duration_s / step_s + 1e-9)

    @st.composite
    def _pause(draw: st.DrawFn) -> Pause:
        severity = draw(_severities(steps))
        if severity == 0:
            return Pause(at_word=min_word, duration_s=0.0)
        word = draw(st.integers(min_value=min_word, max_value=max_word))
        return Pause(at_word=word, duration_s=round(severity * step_s, 6))

    return _pause()


# -- network strategies (pytest_livekit.conditions.network) -----------------------------------------------
def _rates(name: str, max_rate: float, hi: float) -> st.SearchStrategy[float]:
    """Rates from 0 (severity 0) up to ``max_rate`` in :data:`LOSS_STEP` steps; shrinks to 0.

    Raises:
        InvalidArgument: If ``max_rate`` is outside ``[LOSS_STEP, hi]``.
    """
    _check_number(name, max_rate, LOSS_STEP, hi)
    steps = math.floor(max_rate / LOSS_STEP + 1e-9)
    return _severities(steps).map(lambda k: round(k * LOSS_STEP, 6))  # 0.15, not 0.15000000000000002


def bandwidth(
    min_kbps: float = 8, max_kbps: float = 512, step_kbps: float = 8, *, queue_ms: float = 200.0
) -> st.SearchStrategy[Bandwidth]:
    """Bottleneck links from unlimited down to ``min_kbps``, in ``step_kbps`` steps.

    Severity ``k`` maps 0 to ``Bandwidth(None)`` (unlimited, clean) and ``k`` to
    ``kbps = max_kbps - (k - 1) * step_kbps``: shrinking finds the highest rate that still fails.

    Args:
        min_kbps: Slowest link in kilobits per second (1 to 10,000,000).
        max_kbps: Fastest limited link in kbps (above ``min_kbps``).
        step_kbps: Step between rates in kbps (0.001 to ``max_kbps - min_kbps``).
        queue_ms: Queue limit of every drawn link, in milliseconds (0 to 60,000).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.Bandwidth`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_number("min_kbps", min_kbps, 1.0, 10_000_000.0)
    _check_number("max_kbps", max_kbps, 1.0, 10_000_000.0)
    _check_interval("min_kbps", min_kbps, "max_kbps", max_kbps)
    _check_number("step_kbps", step_kbps, 0.001, max_kbps - min_kbps)
    _check_number("queue_ms", queue_ms, 0.0, 60_000.0)
    steps = math.floor((max_kbps - min_kbps) / step_kbps + 1e-9) + 1
    return _severities(steps).map(
        lambda k: Bandwidth(None if k == 0 else round(max_kbps - (k - 1) * step_kbps, 6), queue_ms=queue_ms)
    )


def latency(max_ms: int = 400) -> st.SearchStrategy[Latency]:
    """Fixed one-way delays from none up to ``max_ms``, in 1 ms steps (severity = ``ms``).

    Args:
        max_ms: Largest delay in milliseconds (1 to 10,000).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.Latency`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_int("max_ms", max_ms, 1, 10_000)
    return _severities(max_ms).map(lambda ms: Latency(float(ms)))


def packet_jitter(max_ms: int = 100, *, reorder: bool | None = None) -> st.SearchStrategy[PacketJitter]:
    """Per-packet jitter from none up to ``max_ms``, in 1 ms steps (severity = ``ms``).

    Args:
        max_ms: Largest jitter bound in milliseconds (1 to 10,000).
        reorder: Whether packets may overtake each other; ``None`` draws it (shrinking
            towards ``False``, in-order delivery).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.PacketJitter`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_int("max_ms", max_ms, 1, 10_000)
    if reorder is not None and not isinstance(reorder, bool):
        raise InvalidArgument(f"reorder={reorder!r} must be True, False or None (drawn)")

    @st.composite
    def _jitter(draw: st.DrawFn) -> PacketJitter:
        ms = draw(_severities(max_ms))
        if ms == 0:
            return PacketJitter()
        return PacketJitter(float(ms), reorder=draw(st.booleans()) if reorder is None else reorder)

    return _jitter()


def packet_loss(max_rate: float = 0.3) -> st.SearchStrategy[PacketLoss]:
    """Independent packet loss from none up to ``max_rate``, in 0.5 % steps.

    Severity ``k`` maps to ``rate = k * 0.005``; 0 is clean.

    Args:
        max_rate: Highest loss rate, a fraction (0.005 to 1).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.PacketLoss`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    return _rates("max_rate", max_rate, 1.0).map(PacketLoss)


def burst_loss(max_rate: float = 0.3, max_burst: int = 10) -> st.SearchStrategy[BurstLoss]:
    """Bursty (Gilbert-Elliott) packet loss from none up to ``max_rate``, in 0.5 % steps.

    Severity ``k`` maps 0 to ``BurstLoss()`` (clean) and ``k`` to ``rate = k * 0.005``; the
    mean burst is drawn from ``1 .. max_burst`` packets (shrinking towards 1).

    Args:
        max_rate: Highest long-run loss, a fraction (0.005 to 0.5, so every burst length from
            1 is possible).
        max_burst: Longest mean burst, in packets (1 to 1000).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.BurstLoss`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    rates = _rates("max_rate", max_rate, 0.5)
    _check_int("max_burst", max_burst, 1, 1000)

    @st.composite
    def _burst_loss(draw: st.DrawFn) -> BurstLoss:
        rate = draw(rates)
        if rate == 0:
            return BurstLoss()
        return BurstLoss(rate, float(draw(st.integers(min_value=1, max_value=max_burst))))

    return _burst_loss()


def duplicate(max_rate: float = 0.1) -> st.SearchStrategy[Duplicate]:
    """Packet duplication from none up to ``max_rate``, in 0.5 % steps (severity ``k`` maps to
    ``rate = k * 0.005``; 0 is clean).

    Args:
        max_rate: Highest duplication rate, a fraction (0.005 to 1).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.Duplicate`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    return _rates("max_rate", max_rate, 1.0).map(Duplicate)


def outage(
    max_duration_s: float = 3.0,
    *,
    min_at_s: float = 1.0,
    max_at_s: float = 20.0,
    step_s: float = 0.1,
) -> st.SearchStrategy[Outage]:
    """Outages (handovers) from none up to ``max_duration_s``, in ``step_s`` steps.

    Severity ``k`` maps 0 to ``Outage(at_s=min_at_s, duration_s=0)`` (clean) and ``k`` to an
    outage of ``k * step_s`` seconds starting ``min_at_s + j * step_s`` seconds after the
    relay starts, up to ``max_at_s`` (``j`` shrinks towards 0, the earliest start). The default
    ``min_at_s`` of 1 s leaves the connection time to be set up.

    Args:
        max_duration_s: Longest outage in seconds (``step_s`` to 3600).
        min_at_s: Earliest start in seconds (0 to 86,400).
        max_at_s: Latest start in seconds (``min_at_s`` to 86,400).
        step_s: Step of durations and starts in seconds (0.01 to ``max_duration_s``).

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.Outage`.

    Raises:
        InvalidArgument: If a bound is invalid.
    """
    _check_number("max_duration_s", max_duration_s, 0.01, 3600.0)
    _check_number("step_s", step_s, 0.01, max_duration_s)
    _check_number("min_at_s", min_at_s, 0.0, 86_400.0)
    _check_number("max_at_s", max_at_s, min_at_s, 86_400.0)
    steps = math.floor(max_duration_s / step_s + 1e-9)
    starts = math.floor((max_at_s - min_at_s) / step_s + 1e-9)

    @st.composite
    def _outage(draw: st.DrawFn) -> Outage:
        severity = draw(_severities(steps))
        if severity == 0:
            return Outage(at_s=min_at_s, duration_s=0.0)
        j = draw(st.integers(min_value=0, max_value=starts))
        return Outage(at_s=round(min_at_s + j * step_s, 6), duration_s=round(severity * step_s, 6))

    return _outage()


def network_specs(*strategies: st.SearchStrategy[NetworkSpec]) -> st.SearchStrategy[tuple[NetworkSpec, ...]]:
    """One direction's specs: one draw from each strategy, clean ones left out.

    With no arguments, every network kind at its default (mobile) range: :func:`bandwidth`
    8-512 kbps, :func:`latency` 0-400 ms, :func:`packet_jitter` 0-100 ms, :func:`packet_loss`
    0-30 %, :func:`burst_loss` 0-30 % with bursts of 1-10 packets, :func:`duplicate` 0-10 %,
    :func:`outage` 0-3 s. Each severity shrinks to clean, so the minimal example is ``()``.
    Give each kind at most once (a direction holds one spec per kind).

    Args:
        *strategies: Network spec strategies, e.g. ``bandwidth(max_kbps=64), packet_loss()``.

    Returns:
        A strategy of tuples of :mod:`pytest_livekit.conditions.network` specs.

    Raises:
        InvalidArgument: If an argument is not a strategy, or draws repeat a kind.
    """
    for i, strategy in enumerate(strategies):
        if not isinstance(strategy, st.SearchStrategy):
            raise InvalidArgument(f"strategies[{i}]={strategy!r} must be a hypothesis strategy")
    chosen = strategies or (
        bandwidth(),
        latency(),
        packet_jitter(),
        packet_loss(),
        burst_loss(),
        duplicate(),
        outage(),
    )

    @st.composite
    def _specs(draw: st.DrawFn) -> tuple[NetworkSpec, ...]:
        specs = tuple(spec for spec in (draw(s) for s in chosen) if not spec.is_clean)
        try:
            return _netem.check_direction("network_specs", specs)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None

    return _specs()


def network_paths(
    uplink: st.SearchStrategy[tuple[NetworkSpec, ...]] | None = None,
    downlink: st.SearchStrategy[tuple[NetworkSpec, ...]] | None = None,
    *,
    seeds: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[NetworkPath]:
    """Network paths: uplink and downlink specs plus a seed.

    The minimal example is ``NetworkPath()`` (both directions clean, seed 0).

    Args:
        uplink: Strategy of participant -> server spec tuples; :func:`network_specs` by default.
        downlink: Strategy of server -> participant spec tuples; :func:`network_specs` by default.
        seeds: Strategy of non-negative seeds; ``integers(0, 2**16)`` by default.

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.network.NetworkPath`.

    Raises:
        InvalidArgument: If an argument is not a strategy.
    """
    for name, value in (("uplink", uplink), ("downlink", downlink), ("seeds", seeds)):
        if value is not None and not isinstance(value, st.SearchStrategy):
            raise InvalidArgument(f"{name}={value!r} must be a hypothesis strategy")
    up = network_specs() if uplink is None else uplink
    down = network_specs() if downlink is None else downlink
    seed_strategy = st.integers(min_value=0, max_value=2**16) if seeds is None else seeds

    @st.composite
    def _path(draw: st.DrawFn) -> NetworkPath:
        up_specs, down_specs, seed = draw(up), draw(down), draw(seed_strategy)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"seeds drew seed={seed!r}; seeds must be non-negative ints")
        try:
            return NetworkPath(uplink=up_specs, downlink=down_specs, seed=seed)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None

    return _path()


# -- bundles and settings --------------------------------------------------------------------
def conditions(
    *strategies: st.SearchStrategy[Condition],
    seeds: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[Conditions]:
    """Bundles of one spec from each strategy, plus a seed.

    Clean specs are left out of the bundle, so a shrunk example reads as what went wrong,
    e.g. ``Conditions(items=(Noise(snr_db=14, ...),), seed=0)``. Leaving one out does not
    change the others' audio: each item's random stream is keyed by its kind (see
    :class:`~pytest_livekit.conditions.media.Conditions`).

    Args:
        *strategies: Spec strategies, e.g. ``noise(), frame_loss()``.
        seeds: Strategy of non-negative seeds; ``integers(0, 2**16)`` by default.

    Returns:
        A strategy of :class:`~pytest_livekit.conditions.media.Conditions`.

    Raises:
        InvalidArgument: If an argument is not a strategy.
    """
    for i, strategy in enumerate(strategies):
        if not isinstance(strategy, st.SearchStrategy):
            raise InvalidArgument(f"strategies[{i}]={strategy!r} must be a hypothesis strategy")
    if seeds is None:
        seeds = st.integers(min_value=0, max_value=2**16)
    elif not isinstance(seeds, st.SearchStrategy):
        raise InvalidArgument(f"seeds={seeds!r} must be a hypothesis strategy of non-negative ints")

    @st.composite
    def _conditions(draw: st.DrawFn) -> Conditions:
        items = tuple(spec for spec in (draw(s) for s in strategies) if not spec.is_clean)
        seed = draw(seeds)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"seeds drew seed={seed!r}; seeds must be non-negative ints")
        return Conditions(items=items, seed=seed)

    return _conditions()


def settings_profile() -> settings:
    """Register and return the ``livekit`` hypothesis settings profile.

    Real calls take seconds, so: ``deadline=None`` (call time varies), ``max_examples=5``,
    ``derandomize=True`` when the ``CI`` environment variable is set (the same examples every
    CI run), and the ``function_scoped_fixture`` and ``too_slow`` health checks suppressed
    (``@given`` tests use the ``make_livekit_call`` factory, which is safe per example; calls
    are slow by nature).

    Use it as a decorator (``@settings_profile()``) or load it for the run with
    ``pytest --hypothesis-profile=livekit`` after :func:`register_profiles`.

    Returns:
        The profile's settings.
    """
    settings.register_profile(
        PROFILE,
        deadline=None,
        max_examples=5,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    return settings.get_profile(PROFILE)


def register_profiles() -> tuple[str, ...]:
    """Register every settings profile this module defines (call it from ``conftest.py``).

    Registering does not load a profile; select one with ``--hypothesis-profile=livekit`` or
    ``settings.load_profile("livekit")``.

    Returns:
        The registered profile names: ``("livekit",)``.
    """
    settings_profile()
    return (PROFILE,)
