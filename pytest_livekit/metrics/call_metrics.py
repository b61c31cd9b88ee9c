"""Call metrics: one pure function from a recorded call to every number a report shows.

:func:`compute_metrics` turns a :class:`~pytest_livekit.call.record.CallRecord` (and, optionally, the
call's stereo recording) into a frozen :class:`CallMetrics`: per-turn ASR accuracy and latency,
duplicated replies, audio stalls, audio quality of both directions, WebRTC stats, tool use and the
call's outcome. It reads nothing but its arguments, so the same numbers can be recomputed offline
from a saved call (:func:`load_call`).

Units and vantage points. Every time is in float **seconds**; every ratio is a fraction in
``[0, 1]``; levels are in dBFS (relative to int16 full scale), loudness in LUFS. Each field says
where its number was measured:

* **caller**: measured where the caller sits, i.e. on what the test's caller participant sent,
  received and timed. This is what a real phone user experiences.
* **agent (self-reported)**: taken from livekit-agents' own per-turn metrics, as the agent process
  reported them. These exclude the network and the caller's jitter buffer.

Speed: for a 60 s call :func:`compute_metrics` stays within a 50 ms budget (see
``benchmarks/metrics_speed.py``); nearly all of it is the BS.1770 loudness filter, about 15 ms
per channel, and the two channels are measured concurrently. Opt-in extras are slow and outside
that budget: DNSMOS (an ONNX model, 0.5-2 s per channel) and :func:`transcript_drift` (speech
recognition of every agent message).

Heavy dependencies are imported inside the functions that need them: ``jiwer`` (text metrics),
``speechmos`` (DNSMOS), ``soundfile`` (:func:`load_call`)
and pocketsphinx/livekit (:func:`default_transcriber`).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pytest_livekit.audio import CALL_SAMPLE_RATE, resample
from pytest_livekit.call.record import CallRecord, ConversationItem, HeardSegment
from pytest_livekit.metrics.turns import time_to_first_audio, user_transcript

__all__ = [
    "AudioQuality",
    "CallMetrics",
    "DnsmosScores",
    "Outcome",
    "RtcSummary",
    "ScoringOptions",
    "ToolSelection",
    "TurnMetrics",
    "audio_gaps",
    "audio_quality",
    "call_outcome",
    "character_error_rate",
    "compute_metrics",
    "default_transcriber",
    "integrated_loudness",
    "load_call",
    "rtc_summary",
    "text_error_rate",
    "tool_selection",
    "transcript_drift",
    "turn_metrics",
]

Pcm = npt.NDArray[np.int16]
"""int16 PCM samples."""

Transcriber = Callable[[npt.NDArray[np.int16], int], str]
"""``transcribe(pcm, sample_rate) -> text``: speech recognition of mono int16 audio."""

Outcome = Literal["transferred", "completed", "hung_up", "incomplete"]
"""The values :func:`call_outcome` returns."""

CLIP_LEVEL = 32760
"""A sample whose magnitude is at least this (int16 units, -0.002 dBFS) counts as clipped."""

SILENCE_DBFS = -60.0
"""A 10 ms frame whose RMS level is below this (dBFS) counts as silent."""

SNR_FRACTION = 0.2
"""Fraction of 10 ms frames taken as "loudest" and as "quietest" by the SNR estimate."""

SNR_CAP_DB = 100.0
"""Upper bound of the SNR estimate in dB (reached when the quietest frames are digital silence)."""

ACTIVE_DBFS = -45.0
"""A 10 ms frame above this RMS level (dBFS) is active speech for DNSMOS (the caller's
:class:`~pytest_livekit.audio.ActivityDetector` uses the same threshold)."""

DNSMOS_HANGOVER_SECONDS = 0.2
"""DNSMOS scores the active part: frames above :data:`ACTIVE_DBFS` plus this much audio (in
seconds) on each side of them."""

DUPLICATE_WER = 0.2
"""Two assistant messages of one turn whose WER against each other (both ways) is at most this
count as a duplicated reply."""

DRIFT_PADDING_SECONDS = 0.1
"""Audio kept before and after each heard segment when cutting it for :func:`transcript_drift`."""

_FRAME_SECONDS = 0.010
_LOUDNESS_CHUNK_SUBBLOCKS = 10  # 1 s of audio per FFT chunk
_DNSMOS_RATE = 16_000
_DNSMOS_INSTALL_HINT = (
    "DNSMOS needs the optional 'speechmos' package (with librosa and onnxruntime): "
    "pip install pytest-livekit[dnsmos]"
)


# ------------------------------------------------------------------------------------------------
# Text scoring
# ------------------------------------------------------------------------------------------------
# One engine for assertions, metrics and the report (re-exported here under the same names).
from pytest_livekit.metrics.text_scoring import (  # noqa: E402,F401
    AS_IS,
    ScoringOptions,
    TextErrors,
    character_error_rate,
    pooled_rate,
    score_text,
    spell_out_digits,
    text_error_rate,
)

#: The default scoring (a module-level value, so defaults are not calls in signatures).
DEFAULT_SCORING = ScoringOptions()


# ------------------------------------------------------------------------------------------------
# Per-turn metrics
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnMetrics:
    """Metrics of one caller turn.

    The turn's window runs from its start to the next caller turn's start (the last turn's window
    never ends); assistant messages added in the window are the turn's replies.
    """

    index: int
    """The caller turn's 0-based index."""
    reference: str | None
    """What the caller said (the ASR reference), or ``None`` for a WAV without given text."""
    stt_text: str
    """The agent's raw final STT text in the window (:func:`~pytest_livekit.metrics.turns.user_transcript`);
    vantage point: agent (self-reported)."""
    wer: float | None
    """Word error rate of ``stt_text`` against ``reference`` after the scoring options (fraction,
    can exceed 1); ``None`` without a reference. Vantage point: caller's text vs agent's STT."""
    cer: float | None
    """Character error rate, likewise (fraction); ``None`` without a reference."""
    ttfa: float | None
    """Time to first audio in seconds, from the end of the caller's speech to the first agent
    audio the caller heard; vantage point: caller. ``None`` if the agent never answered."""
    e2e_latency: float | None
    """End-to-end latency in seconds of the first assistant message in the window (livekit
    metric ``e2e_latency``); vantage point: agent (self-reported)."""
    llm_ttft: float | None
    """LLM time to first token in seconds (``llm_node_ttft``); agent (self-reported)."""
    tts_ttfb: float | None
    """TTS time to first byte in seconds (``tts_node_ttfb``); agent (self-reported)."""
    agent_replies: int
    """Number of assistant messages added in the window (count); agent (self-reported)."""
    duplicated: bool
    """True if two assistant messages in the window say the same thing: their WER against each
    other is at most :data:`DUPLICATE_WER` in both directions (empty messages are ignored);
    agent (self-reported)."""


def _assistant_items(record: CallRecord) -> list[ConversationItem]:
    return sorted((i for i in record.items if i.role == "assistant"), key=lambda i: i.t)


def _in_window(items: Iterable[ConversationItem], start: float, end: float) -> list[ConversationItem]:
    return [i for i in items if start <= i.t < end]


def _metric(item: ConversationItem | None, key: str) -> float | None:
    if item is None or key not in item.metrics:
        return None
    value = float(item.metrics[key])
    return value if math.isfinite(value) else None


def _has_duplicate(texts: Sequence[str], scoring: ScoringOptions) -> bool:
    norm = [n for n in (scoring.apply(t) for t in texts) if n]
    for i, a in enumerate(norm):
        for b in norm[i + 1 :]:
            if max(score_text(a, b, AS_IS).rate, score_text(b, a, AS_IS).rate) <= DUPLICATE_WER:
                return True
    return False


def turn_metrics(record: CallRecord, scoring: ScoringOptions = DEFAULT_SCORING) -> tuple[TurnMetrics, ...]:
    """Compute :class:`TurnMetrics` for every caller turn.

    Args:
        record: The call.
        scoring: Text normalisation for WER/CER and duplicate detection.

    Returns:
        One entry per caller turn, in order.
    """
    return _score_turns(record, scoring)[0]


def _score_turns(
    record: CallRecord, scoring: ScoringOptions
) -> tuple[tuple[TurnMetrics, ...], float | None, float | None]:
    """Per-turn metrics, plus the call-level WER and CER.

    The call-level rates are total edits over total reference length across the turns with a
    reference (so long turns weigh more than short ones); ``None`` without any reference.
    """
    assistant = _assistant_items(record)
    turns: list[TurnMetrics] = []
    word_scores: list[TextErrors] = []
    char_scores: list[TextErrors] = []
    for pos, turn in enumerate(record.caller_turns):
        start, end = record.turn_window(pos)
        stt_text = user_transcript(record, pos)
        wer = cer = None
        if turn.text is not None:
            word_scores.append(score_text(turn.text, stt_text, scoring, "word"))
            char_scores.append(score_text(turn.text, stt_text, scoring, "char"))
            wer, cer = word_scores[-1].rate, char_scores[-1].rate
        replies = _in_window(assistant, start, end)
        first = replies[0] if replies else None
        turns.append(
            TurnMetrics(
                index=turn.index,
                reference=turn.text,
                stt_text=stt_text,
                wer=wer,
                cer=cer,
                ttfa=time_to_first_audio(record, pos),
                e2e_latency=_metric(first, "e2e_latency"),
                llm_ttft=_metric(first, "llm_node_ttft"),
                tts_ttfb=_metric(first, "tts_node_ttfb"),
                agent_replies=len(replies),
                duplicated=_has_duplicate([r.text for r in replies], scoring),
            )
        )
    return tuple(turns), pooled_rate(word_scores), pooled_rate(char_scores)


# ------------------------------------------------------------------------------------------------
# Audio quality
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DnsmosScores:
    """Microsoft DNSMOS P.835 predictions (mean opinion scores, 1 = bad .. 5 = excellent).

    Computed on the channel's active part resampled to 16 kHz; vantage point: caller (the
    recording).
    """

    ovrl_mos: float
    """Overall quality (MOS)."""
    sig_mos: float
    """Speech signal quality (MOS)."""
    bak_mos: float
    """Background noise quality (MOS; high = little noise)."""
    p808_mos: float
    """ITU-T P.808 overall quality (MOS)."""


@dataclass(frozen=True)
class AudioQuality:
    """Quality of one direction of the call, measured on the caller's recording.

    Vantage point: caller, for both directions: the caller channel is what the caller sent, the
    agent channel what the caller received after Opus, the network and the jitter buffer.

    Levels are relative to int16 full scale. 10 ms frames are counted from the start; a trailing
    partial frame is ignored by the frame-based fields.
    """

    duration_s: float
    """Channel length in seconds."""
    clipping_ratio: float | None
    """Fraction of all samples with magnitude >= :data:`CLIP_LEVEL` (0-1); ``None`` if empty."""
    silence_ratio: float | None
    """Fraction of 10 ms frames with RMS below :data:`SILENCE_DBFS` (0-1); ``None`` if shorter
    than one frame."""
    snr_db: float | None
    """Estimated signal-to-noise ratio in dB: mean power of the loudest 20 % of 10 ms frames over
    that of the quietest 20 %, capped at :data:`SNR_CAP_DB`; ``None`` for digital silence."""
    loudness_lufs: float | None
    """Integrated loudness in LUFS (ITU-R BS.1770-4, K-weighted and gated, as pyloudnorm
    computes it); ``None`` for silence or audio shorter than one 400 ms block."""
    dnsmos: DnsmosScores | None = None
    """DNSMOS scores of the active part (frames above :data:`ACTIVE_DBFS`, with
    :data:`DNSMOS_HANGOVER_SECONDS` around them), only when requested; ``None`` otherwise or
    without active speech."""


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One RBJ-cookbook biquad ``(b, a)``, normalised so ``a[0] = 1``, exactly as pyloudnorm's
    ``IIRfilter`` designs the two K-weighting stages (its module imports ``scipy.signal``, which
    takes ~0.8 s: not on a call's path).
    """
    amp = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos, root = np.cos(w0), np.sqrt(amp)
    if kind == "high_shelf":
        b = [
            amp * ((amp + 1) + (amp - 1) * cos + 2 * root * alpha),
            -2 * amp * ((amp - 1) + (amp + 1) * cos),
            amp * ((amp + 1) + (amp - 1) * cos - 2 * root * alpha),
        ]
        a = [
            (amp + 1) - (amp - 1) * cos + 2 * root * alpha,
            2 * ((amp - 1) - (amp + 1) * cos),
            (amp + 1) - (amp - 1) * cos - 2 * root * alpha,
        ]
    else:  # high_pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.asarray(b) / a[0], np.asarray(a) / a[0]


@functools.lru_cache(maxsize=8)
def _k_weighting(rate: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """BS.1770 K-weighting as one 4th-order filter ``(b, a)``: pyloudnorm's two stages (the ones
    ``pyloudnorm.Meter`` builds: a +4 dB shelf at 1500 Hz, Q 1/sqrt(2); a high-pass at 38 Hz,
    Q 0.5), multiplied together (the unit tests check the coefficients against pyloudnorm's).
    """
    shelf_b, shelf_a = _biquad("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0, rate)
    pass_b, pass_a = _biquad("high_pass", 0.0, 0.5, 38.0, rate)
    return (
        np.asarray(np.polymul(shelf_b, pass_b), dtype=np.float64),
        np.asarray(np.polymul(shelf_a, pass_a), dtype=np.float64),
    )


#: The K-weighting impulse response is cut where it has decayed below this fraction of its
#: peak (at 48 kHz after ~7,000 samples): the filtered signal then matches the recursive
#: filter's to ~1e-15, far below what a loudness figure shows.
_IMPULSE_FLOOR = 1e-17


@functools.lru_cache(maxsize=8)
def _k_weighting_response(rate: int) -> npt.NDArray[np.float64]:
    """The K-weighting filter's impulse response, up to where it has died out (see
    :data:`_IMPULSE_FLOOR`; at most 4 s).
    """
    b, a = _k_weighting(rate)
    b_, a_ = [float(v) for v in b], [float(v) for v in a]
    order = len(a_) - 1
    limit = 4 * rate
    h = np.zeros(limit)
    xs = [0.0] * (order + 1)  # x[n], x[n-1], ...
    ys = [0.0] * order  # y[n-1], y[n-2], ...
    for n in range(limit):  # the recursion, once per rate (cached)
        xs = [1.0 if n == 0 else 0.0, *xs[:-1]]
        y = sum(bk * xk for bk, xk in zip(b_, xs, strict=True)) - sum(
            ak * yk for ak, yk in zip(a_[1:], ys, strict=True)
        )
        ys = [y, *ys[:-1]]
        h[n] = y
        if n % 256 == 255 and n > order and np.max(np.abs(h[n - 255 : n + 1])) < _IMPULSE_FLOOR * np.max(np.abs(h)):
            return h[: n + 1]
    return h


def integrated_loudness(samples: npt.NDArray[Any], sample_rate: int = CALL_SAMPLE_RATE) -> float | None:
    """Integrated loudness of mono audio in LUFS (ITU-R BS.1770-4).

    Same algorithm and filters as ``pyloudnorm.Meter(rate).integrated_loudness`` (400 ms blocks,
    75 % overlap, absolute gate -70 LUFS, relative gate -10 LU), vectorised: pyloudnorm's block
    loop alone takes longer than this whole function on a minute of audio. The unit tests check
    both agree to 1e-6 LU.

    Args:
        samples: Mono int16 PCM, or float samples in [-1, 1].
        sample_rate: Their rate in Hz.

    Returns:
        Loudness in LUFS; ``None`` for silence (every block below the gates) or audio shorter
        than one 400 ms block.
    """
    x, scale = _checked_mono(samples)
    block = int(round(0.4 * sample_rate))
    step = block // 4  # 100 ms sub-blocks; a gating block is 4 consecutive ones
    if len(x) < block:
        return None
    h = _k_weighting_response(sample_rate)
    # pyloudnorm's block count: it includes a trailing partial block (summed as if zero-padded)
    # and ignores samples after the last block.
    n_blocks = int(round((len(x) / sample_rate - 0.4) / 0.1)) + 1
    n_sub = n_blocks + 3
    n_use = min(len(x), n_sub * step)
    # K-weighting as a convolution with the filter's impulse response, by FFT, chunk by chunk
    # (overlap-add): the recursive filter's output to ~1e-15, with numpy alone. A chunk's
    # working set stays in cache.
    chunk = step * _LOUDNESS_CHUNK_SUBBLOCKS
    size = 1 << (chunk + len(h) - 2).bit_length()
    response = np.fft.rfft(h, size)
    carry = np.zeros(len(h) - 1)
    sub = np.zeros(n_sub)  # K-weighted energy of each sub-block
    for s0 in range(0, n_use, chunk):
        seg = x[s0 : min(s0 + chunk, n_use)] * scale
        full = np.fft.irfft(np.fft.rfft(seg, size) * response, size)[: len(seg) + len(h) - 1]
        full[: len(carry)] += carry
        y, carry = full[: len(seg)], full[len(seg) :]
        k = len(y) // step
        frames = y[: k * step].reshape(k, step)
        sub[s0 // step : s0 // step + k] = np.einsum("ij,ij->i", frames, frames)
        if k * step < len(y):
            rest = y[k * step :]
            sub[s0 // step + k] = float(np.dot(rest, rest))
    z = (sub[:-3] + sub[1:-2] + sub[2:-1] + sub[3:]) / block
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10.0 * np.log10(z)
    gated = loud >= -70.0
    if not gated.any():
        return None
    relative = -0.691 + 10.0 * math.log10(float(z[gated].mean())) - 10.0
    gated &= loud > relative
    if not gated.any():
        return None
    return -0.691 + 10.0 * math.log10(float(z[gated].mean()))


def _checked_mono(samples: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float]:
    """Validate mono int16 or float samples; return them and the factor to full scale."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr, 1.0 / 32768.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"expected int16 or float samples, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False), 1.0


def _frame_powers(pcm: Pcm, frame: int) -> npt.NDArray[np.float64]:
    """Mean square of each whole ``frame``-sample frame, relative to full scale (1.0 = 0 dBFS)."""
    n = len(pcm) // frame
    if n == 0:
        return np.zeros(0)
    f = pcm[: n * frame].reshape(n, frame).astype(np.float32)
    powers: npt.NDArray[np.float64] = np.einsum("ij,ij->i", f, f).astype(np.float64) / (frame * 32768.0**2)
    return powers


def _snr_db(powers: npt.NDArray[np.float64]) -> float | None:
    n = len(powers)
    if n == 0:
        return None
    k = max(1, int(n * SNR_FRACTION))
    part = np.partition(powers, [k - 1, n - k]) if n > 1 else powers
    quiet, loud = float(part[:k].mean()), float(part[n - k :].mean())
    if loud <= 0.0:
        return None
    if quiet <= 0.0:
        return SNR_CAP_DB
    return min(SNR_CAP_DB, 10.0 * math.log10(loud / quiet))


def _clipping_ratio(pcm: Pcm) -> float | None:
    if len(pcm) == 0:
        return None
    # Cheap early exit: most channels never get near full scale.
    if int(pcm.max()) < CLIP_LEVEL and int(pcm.min()) > -CLIP_LEVEL:
        return 0.0
    # Compare both signs: np.abs(-32768) overflows to -32768 in int16.
    return int(np.count_nonzero((pcm >= CLIP_LEVEL) | (pcm <= -CLIP_LEVEL))) / len(pcm)


def _dnsmos(pcm: Pcm, powers: npt.NDArray[np.float64], frame: int, sample_rate: int) -> DnsmosScores | None:
    try:
        import speechmos.dnsmos
    except ImportError as exc:
        raise ImportError(f"{_DNSMOS_INSTALL_HINT} ({exc})") from exc

    active = powers > 10.0 ** (ACTIVE_DBFS / 10.0)
    if not active.any():
        return None
    # Keep the pauses inside speech: only stretches of inactivity longer than twice the hangover
    # are cut out (cutting every quiet 10 ms frame would splice clicks into the words).
    hang = int(round(DNSMOS_HANGOVER_SECONDS / _FRAME_SECONDS))
    keep = np.convolve(active.astype(np.float64), np.ones(2 * hang + 1), mode="same") > 0.5
    x = pcm[: len(powers) * frame].reshape(-1, frame)[keep].reshape(-1).astype(np.float64) / 32768.0
    x16 = resample(x, sample_rate, _DNSMOS_RATE)
    x16 = np.clip(x16, -1.0, 1.0)
    scores = speechmos.dnsmos.run(x16, _DNSMOS_RATE)
    return DnsmosScores(
        ovrl_mos=float(scores["ovrl_mos"]),
        sig_mos=float(scores["sig_mos"]),
        bak_mos=float(scores["bak_mos"]),
        p808_mos=float(scores["p808_mos"]),
    )


def audio_quality(pcm: Pcm, *, dnsmos: bool = False, sample_rate: int = CALL_SAMPLE_RATE) -> AudioQuality:
    """Measure one channel of a call recording.

    Args:
        pcm: Mono int16 samples (one column of ``call.wav``).
        dnsmos: Also run DNSMOS (slow: an ONNX model; needs ``pytest-livekit[dnsmos]``).
        sample_rate: Sample rate of ``pcm`` in Hz.

    Returns:
        The channel's :class:`AudioQuality`.

    Raises:
        TypeError: If ``pcm`` is not int16.
        ValueError: If ``pcm`` is not 1-D.
        ImportError: If ``dnsmos`` is requested and speechmos is not installed.
    """
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"audio_quality needs int16 samples, got dtype {pcm.dtype}")
    if pcm.ndim != 1:
        raise ValueError(f"audio_quality needs one channel (1-D), got shape {pcm.shape}")
    pcm = np.ascontiguousarray(pcm)
    frame = int(round(sample_rate * _FRAME_SECONDS))
    powers = _frame_powers(pcm, frame)
    silence = (
        float(np.count_nonzero(powers < 10.0 ** (SILENCE_DBFS / 10.0))) / len(powers) if len(powers) else None
    )
    return AudioQuality(
        duration_s=len(pcm) / sample_rate,
        clipping_ratio=_clipping_ratio(pcm),
        silence_ratio=silence,
        snr_db=_snr_db(powers),
        loudness_lufs=integrated_loudness(pcm, sample_rate),
        dnsmos=_dnsmos(pcm, powers, frame, sample_rate) if dnsmos else None,
    )


# ------------------------------------------------------------------------------------------------
# Network: WebRTC stats and receive stalls
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RtcSummary:
    """The caller's WebRTC receive stats for the agent's audio (vantage point: caller)."""

    packet_loss_ratio: float | None
    """Lost / (lost + received) RTP packets (fraction 0-1; negative loss counts as 0)."""
    jitter_s: float | None
    """Interarrival jitter in seconds (RFC 3550)."""
    concealment_ratio: float | None
    """Concealed / total received audio samples (fraction 0-1): how much audio the decoder had
    to invent for late or lost packets."""
    round_trip_time_s: float | None
    """Round-trip time to the server in seconds."""


def _stat(stats: dict[str, Any], key: str) -> float | None:
    value = stats.get(key)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def rtc_summary(record: CallRecord) -> RtcSummary:
    """Summarise ``record.rtc`` (caller-side WebRTC stats); fields are ``None`` when missing.

    Args:
        record: The call (a record without ``rtc`` gives all ``None``).

    Returns:
        The :class:`RtcSummary`.
    """
    stats: dict[str, Any] = dict(getattr(record, "rtc", None) or {})
    lost, received = _stat(stats, "packets_lost"), _stat(stats, "packets_received")
    loss = None
    if lost is not None and received is not None:
        lost = max(lost, 0.0)
        loss = lost / (lost + received) if lost + received > 0 else None
    concealed, total = _stat(stats, "concealed_samples"), _stat(stats, "total_samples_received")
    concealment = concealed / total if concealed is not None and total else None
    return RtcSummary(
        packet_loss_ratio=loss,
        jitter_s=_stat(stats, "jitter"),
        concealment_ratio=concealment,
        round_trip_time_s=_stat(stats, "round_trip_time"),
    )


def audio_gaps(record: CallRecord) -> tuple[int, float]:
    """Receive stalls that interrupted the agent's speech (vantage point: caller).

    A stall from ``record.receive_gaps`` counts when its start lies inside a heard segment,
    ends included (a stall long enough to split a segment starts exactly at the first part's
    end). Stalls while the agent was silent are harmless and ignored.

    Args:
        record: The call (a record without ``receive_gaps`` gives ``(0, 0.0)``).

    Returns:
        ``(count, total seconds)`` of those stalls (full durations).
    """
    gaps = getattr(record, "receive_gaps", None) or []
    segments: list[HeardSegment] = record.heard
    count, total = 0, 0.0
    for start, duration in gaps:
        if any(seg.start <= start <= seg.end for seg in segments):
            count += 1
            total += float(duration)
    return count, total


# ------------------------------------------------------------------------------------------------
# Tools and outcome
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolSelection:
    """Which tools the agent called versus which it should have.

    Vantage point: agent (self-reported), from its ``function_tools_executed`` events; failed
    calls count as called.
    """

    precision: float
    """Distinct called names that were expected / distinct called names (fraction 0-1; 1.0
    when nothing was called)."""
    recall: float
    """Distinct expected names that were called / distinct expected names (fraction 0-1; 1.0
    when nothing was expected)."""
    in_order: bool
    """True if the expected names occur, in that order, as a subsequence of the called names
    (repeats in ``expected`` need repeated calls)."""
    unexpected: tuple[str, ...]
    """Names called but not expected, in order of first call."""
    missing: tuple[str, ...]
    """Names expected but never called, in expected order."""
    called: tuple[str, ...]
    """Every call's name, in call order."""


def _tools_called(record: CallRecord) -> tuple[str, ...]:
    return tuple(c.name for c in sorted(record.tool_calls, key=lambda c: c.t))


def _is_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    it = iter(haystack)
    return all(any(h == n for h in it) for n in needle)


def tool_selection(record: CallRecord, expected: Sequence[str]) -> ToolSelection:
    """Compare the tools called in the call with ``expected``.

    Args:
        record: The call.
        expected: Tool names the agent should call, in the order it should call them.

    Returns:
        The :class:`ToolSelection`.

    Raises:
        TypeError: If ``expected`` is a single string.
    """
    if isinstance(expected, str):
        raise TypeError("expected must be a sequence of tool names, not a single string")
    called = _tools_called(record)
    called_set, expected_set = set(called), set(expected)
    hits = called_set & expected_set
    return ToolSelection(
        precision=len(hits) / len(called_set) if called_set else 1.0,
        recall=len(hits) / len(expected_set) if expected_set else 1.0,
        in_order=_is_subsequence(list(expected), called),
        unexpected=tuple(dict.fromkeys(n for n in called if n not in expected_set)),
        missing=tuple(dict.fromkeys(n for n in expected if n not in called_set)),
        called=called,
    )


def call_outcome(
    record: CallRecord,
    *,
    completion_tools: Sequence[str] = (),
    transfer_tools: Sequence[str] = ("transfer_to_human",),
) -> Outcome:
    """Classify how the call ended (vantage point: agent (self-reported) tools and messages).

    In order of precedence:

    * ``"transferred"``: a transfer tool was called.
    * ``"completed"``: a completion tool was called, or, when ``completion_tools`` is empty,
      every caller turn got at least one assistant message (a call without caller turns never
      completes this way).
    * ``"hung_up"``: the last caller turn got no assistant message (the caller was left waiting).
    * ``"incomplete"``: anything else.

    Args:
        record: The call.
        completion_tools: Tool names whose call means the task was done (e.g. ``issue_refund``).
        transfer_tools: Tool names whose call means a hand-off to a human.

    Returns:
        One of the four outcome strings.
    """
    called = set(_tools_called(record))
    if called & set(transfer_tools):
        return "transferred"
    assistant = _assistant_items(record)
    answered = [
        bool(_in_window(assistant, *record.turn_window(pos))) for pos in range(len(record.caller_turns))
    ]
    if completion_tools:
        if called & set(completion_tools):
            return "completed"
    elif answered and all(answered):
        return "completed"
    if answered and not answered[-1]:
        return "hung_up"
    return "incomplete"


# ------------------------------------------------------------------------------------------------
# Transcript drift
# ------------------------------------------------------------------------------------------------
def _segments_for_messages(record: CallRecord) -> list[tuple[ConversationItem, list[HeardSegment]]]:
    """Assign each heard segment to at most one assistant message.

    A message gets the segments whose start lies in ``[t of the previous conversation item (any
    role; 0 for the first), t of the message)``: livekit-agents adds an assistant message when
    its playout ends, so its audio starts after the item before it and before the message.
    """
    items = sorted(record.items, key=lambda i: i.t)
    out: list[tuple[ConversationItem, list[HeardSegment]]] = []
    prev_t = 0.0
    for item in items:
        if item.role == "assistant":
            segs = sorted((s for s in record.heard if prev_t <= s.start < item.t), key=lambda s: s.start)
            out.append((item, segs))
        prev_t = item.t
    return out


def _cut(pcm: Pcm, segments: Sequence[HeardSegment], sample_rate: int) -> Pcm:
    """Concatenate the padded, merged intervals of ``segments`` from ``pcm``."""
    spans: list[list[int]] = []
    for seg in segments:
        lo = max(0, int(round((seg.start - DRIFT_PADDING_SECONDS) * sample_rate)))
        hi = min(len(pcm), int(round((seg.end + DRIFT_PADDING_SECONDS) * sample_rate)))
        if hi <= lo:
            continue
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    if not spans:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([pcm[lo:hi] for lo, hi in spans])


def transcript_drift(
    record: CallRecord,
    heard_pcm: Pcm,
    transcribe: Transcriber,
    *,
    scoring: ScoringOptions = DEFAULT_SCORING,
    sample_rate: int = CALL_SAMPLE_RATE,
) -> float | None:
    """How far what the agent says it spoke drifts from what the caller heard.

    For each assistant message, the agent channel is cut to the heard segments assigned to it
    (those starting between the previous conversation item, of any role, and the message; each
    segment padded by :data:`DRIFT_PADDING_SECONDS`) and transcribed. Messages without heard
    audio contribute an empty transcription, so unspoken text counts as drift. Slow (one
    recognition per message): opt-in, not part of :func:`compute_metrics`.

    Args:
        record: The call.
        heard_pcm: The agent channel as the caller received it: mono int16, or the ``(n, 2)``
            stereo recording (its right channel is used).
        transcribe: ``transcribe(pcm, sample_rate) -> text``, e.g. :func:`default_transcriber`.
        scoring: Normalisation applied to both texts.
        sample_rate: Rate of ``heard_pcm`` in Hz.

    Returns:
        WER (fraction) of the caller-side transcription (hypothesis) against the agent's
        message texts (reference), all messages concatenated in order; vantage point: agent
        (self-reported) text vs caller audio. ``None`` if the agent said nothing.

    Raises:
        ValueError: If ``heard_pcm`` is neither 1-D nor ``(n, 2)``.
    """
    pcm = np.asarray(heard_pcm)
    if pcm.ndim == 2 and pcm.shape[1] == 2:
        pcm = pcm[:, 1]
    elif pcm.ndim != 1:
        raise ValueError(f"heard_pcm must be mono or (n, 2) stereo, got shape {pcm.shape}")
    said: list[str] = []
    heard: list[str] = []
    for item, segments in _segments_for_messages(record):
        said.append(item.text)
        audio = _cut(pcm, segments, sample_rate)
        heard.append(transcribe(np.ascontiguousarray(audio), sample_rate) if len(audio) else "")
    reference = scoring.apply(" ".join(said))
    if not reference:
        return None
    return score_text(reference, scoring.apply(" ".join(heard)), AS_IS).rate


def default_transcriber(record: CallRecord) -> Transcriber:
    """An offline pocketsphinx recogniser restricted to the words the agent said in ``record``.

    pocketsphinx is only reliable with a domain language model, so one is built from the
    assistant messages (digits spelled out; words missing from its dictionary, such as names,
    are dropped from the model and can never be recognised).

    Args:
        record: The call whose assistant messages define the vocabulary.

    Returns:
        ``SphinxSTT.transcribe_pcm`` of a recogniser built for this call.

    Raises:
        ValueError: If the assistant said no word the dictionary knows.
    """
    from pytest_livekit.offline.stt import SphinxSTT, dictionary_words, normalize_phrase

    known = dictionary_words()
    phrases = []
    for item in _assistant_items(record):
        words = [w for w in normalize_phrase(spell_out_digits(item.text)).split() if w in known]
        if words:
            phrases.append(" ".join(words))
    if not phrases:
        raise ValueError(
            "default_transcriber needs assistant messages with dictionary words to build a model"
        )
    return SphinxSTT(phrases=phrases).transcribe_pcm


# ------------------------------------------------------------------------------------------------
# Whole call
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallMetrics:
    """Every metric of one call (see :func:`compute_metrics`)."""

    turns: tuple[TurnMetrics, ...]
    """Per caller turn, in order."""
    wer: float | None
    """Call WER: word edits over reference words summed across turns with a reference
    (fraction); vantage point: caller's text vs agent's STT. ``None`` without references."""
    cer: float | None
    """Call CER, likewise over characters (fraction)."""
    ttfa_p50: float | None
    """Median time to first audio over answered turns, in seconds; vantage point: caller."""
    duplicated_turns: int
    """Turns with a duplicated reply (count); agent (self-reported)."""
    gaps: int
    """Receive stalls during heard agent speech (count); vantage point: caller."""
    gap_seconds: float
    """Their total duration in seconds; vantage point: caller."""
    caller_quality: AudioQuality | None
    """Quality of what the caller sent (left channel); ``None`` without a recording."""
    agent_quality: AudioQuality | None
    """Quality of the agent audio the caller received (right channel); ``None`` without a
    recording."""
    rtc: RtcSummary
    """Caller-side WebRTC stats."""
    outcome: Outcome
    """How the call ended (:func:`call_outcome`)."""
    tools_called: tuple[str, ...]
    """Tool names in call order; agent (self-reported)."""
    scoring: str = field(default_factory=lambda: ScoringOptions().describe())
    """The text normalisation WER/CER used (:meth:`ScoringOptions.describe`)."""

    def to_dict(self) -> dict[str, Any]:
        """Convert to a JSON-ready dict.

        Nested dataclasses become dicts, tuples lists, and missing or non-finite numbers ``None``.

        Returns:
            The metrics as plain Python data.
        """
        out = _jsonable(asdict(self))
        assert isinstance(out, dict)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _channel_qualities(stereo: Pcm, dnsmos: bool) -> tuple[AudioQuality, AudioQuality]:
    """Measure both channels; concurrently when cheap.

    numpy's FFTs (the loudness filter) and reductions release the GIL, so on a machine with a
    spare core the two channels take the time of one. DNSMOS runs sequentially: speechmos keeps
    its model in a global that two threads would both build.
    """
    caller = np.ascontiguousarray(stereo[:, 0])
    agent = np.ascontiguousarray(stereo[:, 1])
    if dnsmos:
        return audio_quality(caller, dnsmos=True), audio_quality(agent, dnsmos=True)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-metrics") as pool:
        agent_future = pool.submit(audio_quality, agent)
        caller_q = audio_quality(caller)
        return caller_q, agent_future.result()


def compute_metrics(
    record: CallRecord,
    stereo: Pcm | None = None,
    *,
    scoring: ScoringOptions = DEFAULT_SCORING,
    completion_tools: Sequence[str] = (),
    transfer_tools: Sequence[str] = ("transfer_to_human",),
    dnsmos: bool = False,
) -> CallMetrics:
    """Compute every metric of a call.

    Args:
        record: The call record.
        stereo: The call recording, ``(n, 2)`` int16 at 48 kHz: left = what the caller sent,
            right = the agent audio the caller heard. ``None`` leaves the audio fields ``None``.
        scoring: Text normalisation for WER, CER and duplicate detection.
        completion_tools: Tools that complete the task (see :func:`call_outcome`).
        transfer_tools: Tools that hand the call to a human (see :func:`call_outcome`).
        dnsmos: Also run DNSMOS on both channels (slow; needs ``pytest-livekit[dnsmos]``).

    Returns:
        The :class:`CallMetrics`.

    Raises:
        TypeError: If ``stereo`` is not int16.
        ValueError: If ``stereo`` is not ``(n, 2)``.
    """
    turns, wer, cer = _score_turns(record, scoring)
    ttfas = [t.ttfa for t in turns if t.ttfa is not None]
    caller_q = agent_q = None
    if stereo is not None:
        audio = np.asarray(stereo)
        if audio.dtype != np.int16:
            raise TypeError(f"stereo must be int16, got dtype {audio.dtype}")
        if audio.ndim != 2 or audio.shape[1] != 2:
            raise ValueError(f"stereo must have shape (n, 2), got {audio.shape}")
        caller_q, agent_q = _channel_qualities(audio, dnsmos)
    gaps, gap_seconds = audio_gaps(record)
    return CallMetrics(
        turns=turns,
        wer=wer,
        cer=cer,
        ttfa_p50=statistics.median(ttfas) if ttfas else None,
        duplicated_turns=sum(t.duplicated for t in turns),
        gaps=gaps,
        gap_seconds=gap_seconds,
        caller_quality=caller_q,
        agent_quality=agent_q,
        rtc=rtc_summary(record),
        outcome=call_outcome(record, completion_tools=completion_tools, transfer_tools=transfer_tools),
        tools_called=_tools_called(record),
        scoring=scoring.describe(),
    )


def load_call(folder: str | Path) -> tuple[CallRecord, Pcm]:
    """Read a saved call (``call.json`` and ``call.wav``) to recompute its metrics offline.

    Args:
        folder: The call's artifacts folder.

    Returns:
        ``(record, stereo)``: the record and the ``(n, 2)`` int16 recording.

    Raises:
        FileNotFoundError: If ``call.json`` or ``call.wav`` is missing.
        ValueError: If the WAV is not 48 kHz stereo.
    """
    import soundfile as sf

    base = Path(folder)
    json_path, wav_path = base / "call.json", base / "call.wav"
    for p in (json_path, wav_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: load_call needs a call artifacts folder")
    record = CallRecord.load(json_path)
    data, rate = sf.read(str(wav_path), dtype="int16", always_2d=True)
    if rate != CALL_SAMPLE_RATE or data.shape[1] != 2:
        raise ValueError(
            f"{wav_path} is {data.shape[1]} channel(s) at {rate} Hz; expected stereo at {CALL_SAMPLE_RATE} Hz"
        )
    stereo: Pcm = np.ascontiguousarray(data, dtype=np.int16)
    return record, stereo


def interruption_recovery(record: CallRecord) -> tuple[int, int]:
    """``(barge-ins, recovered)`` from the caller's vantage point.

    A barge-in is a caller turn that started while agent audio was being heard; it is recovered
    when the agent was heard again after that turn ended (before the next caller turn).
    """
    barge_ins = recovered = 0
    for i, turn in enumerate(record.caller_turns):
        if turn.started_at < 0 or not any(s.start <= turn.started_at < s.end for s in record.heard):
            continue
        barge_ins += 1
        if turn.ended_at is None:
            continue
        _, window_end = record.turn_window(i)
        if any(turn.ended_at <= s.start < window_end for s in record.heard):
            recovered += 1
    return barge_ins, recovered
