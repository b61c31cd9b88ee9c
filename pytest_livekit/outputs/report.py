"""The HTML report: every call of a run in one self-contained file (``--livekit-report=FILE``).

Built from the call traces (:mod:`pytest_livekit.outputs.trace`) and, when they were kept, the calls'
stereo recordings (``call.wav``: left = caller as sent, right = agent as heard by the caller).

What the file holds:

- a header with the run summary (calls, outcomes, versions, machine, time), a table per call type
  (calls, failed, TTFA p50/p95 in ms, mean WER, SLOs) and per call type a latency distribution plot
  (every caller turn's TTFA in ms, with p50/p95 lines and the type's limit and SLO lines);
- an index of the calls, failed ones first;
- one section per call (``<details>``: failed calls open, passed ones collapsed): outcome, call type,
  conditions and seed, failure message, a replay command for failed calls, a timeline (waveform
  envelope of both channels, caller turns, what the caller heard of the agent, agent replies,
  transcripts as labels and tooltips, tool calls, TTFA brackets, barge-in marks, a time axis in
  seconds), an audio player with the recording, the metrics against the call's limits, the
  caller's words against the raw STT, and the tool calls with their arguments and outputs.

Self-contained: inline CSS, a small inline script, inline SVG, and the audio as a ``data:`` URI
(stereo Ogg Vorbis at :data:`PLAYER_SAMPLE_RATE` Hz, about 4 kB per second of call). A
Content-Security-Policy meta tag forbids every network request, so even a URL inside a transcript
can never be fetched.

Stable hooks for tests and tools: each call is ``<details class="call" id="call-<n>">`` (``n`` from
1 in display order); the timeline is ``<svg class="timeline">`` with elements of the classes
``waveform``, ``caller-turn``, ``agent-heard``, ``agent-turn``, ``tool-mark``, ``ttfa-mark``,
``barge-in-mark``, ``time-axis``; latency plots are ``<svg class="latency-plot">``. After load the
script sets on ``<body>``: ``data-calls``, ``data-timelines`` (count), ``data-timelines-visible``
(timelines with a non-zero rendered width, outside closed calls), ``data-latency-plots``,
``data-latency-plots-visible``, ``data-players``, and finally ``data-rendered="ok"``. Opening
``report.html#all`` expands every call; ``report.html#call-3`` opens that call.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_livekit._files import atomic_write_text
from pytest_livekit.audio import resample
from pytest_livekit.outputs.trace import finite_number
from pytest_livekit.units import format_ms, ms_to_seconds, seconds_to_ms

#: Colour of caller turn bars (and the caller's waveform lane), ``#rrggbb``.
CALLER_COLOUR = "#2563eb"
#: Colour of the bars of agent audio the caller heard, ``#rrggbb``.
AGENT_COLOUR = "#ea580c"
#: Waveform envelope resolution: min/max bins per channel and call.
WAVEFORM_BINS = 800
#: Sample rate of the embedded audio player's recording, Hz (speech stays intelligible; small).
PLAYER_SAMPLE_RATE = 16000
#: Test outcomes shown as failures (listed first, expanded).
FAILED_OUTCOMES = ("failed", "error", "timeout")

_CALLER_WAVE = "#93b4f5"
_AGENT_WAVE = "#f7b68a"
_AGENT_REPLY = "#fed7aa"
_TOOL = "#15803d"
_FAIL = "#dc2626"
_BARGE = "#9333ea"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Timeline geometry, in SVG user units (the SVG scales to the page width).
_W = 1000.0
_X0 = 66.0
_X1 = 988.0
_ROW_TOOLS = 14.0
_CALLER_WAVE_Y, _WAVE_HALF = 52.0, 24.0
_CALLER_BAR_Y = 80.0
_TTFA_Y = 104.0
_HEARD_BAR_Y = 116.0
_AGENT_WAVE_Y = 156.0
_REPLY_BAR_Y = 184.0
_AXIS_Y = 204.0
_HEIGHT = 222.0
_BAR_H = 12.0


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_ms(value: float | None) -> str:
    """Milliseconds already (trace fields ``*_ms``) for people; ``—`` when missing."""
    return format_ms(None if value is None else ms_to_seconds(value))


def _secs(value: Any) -> str:
    """A time in seconds with two decimals (``—`` when missing)."""
    f = finite_number(value)
    return "—" if f is None else f"{f:.2f}"


def _fmt(value: Any, digits: int = 3) -> str:
    f = finite_number(value)
    if f is None:
        return "—" if value is None else str(value)
    if f == int(f) and abs(f) < 1e9:
        return str(int(f))
    return f"{f:.{digits}g}" if abs(f) < 10 else f"{f:.1f}"


def _is_failed(trace: Mapping[str, Any]) -> bool:
    return (trace.get("test") or {}).get("outcome") in FAILED_OUTCOMES


def _outcome(trace: Mapping[str, Any]) -> str:
    return str((trace.get("test") or {}).get("outcome") or "unknown")


def _call_type(trace: Mapping[str, Any]) -> str:
    return str((trace.get("call") or {}).get("call_type") or "-")


def _index(turn: Mapping[str, Any]) -> int:
    """A turn's 0-based index (0 when missing)."""
    return int(finite_number(turn.get("index")) or 0)


def _caller_turns(trace: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in trace.get("turns") or [] if t.get("who") == "caller"]


def _agent_turns(trace: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in trace.get("turns") or [] if t.get("who") == "agent"]


def _breach_names(trace: Mapping[str, Any]) -> set[str]:
    """Limit names of the trace's breaches (``"wer_max: 0.3 > 0.2 allowed"`` -> ``wer_max``)."""
    return {str(b).split(":", 1)[0].strip() for b in trace.get("breaches") or []}


def _type_config(settings: Any, name: str) -> tuple[Mapping[str, Any], Mapping[str, Any], str]:
    """``(limits, slo, description)`` of a call type from the settings (empty when unknown)."""
    configs = getattr(settings, "call_type_configs", None) or {}
    ct = configs.get(name) if isinstance(configs, Mapping) else None
    if ct is None:
        return {}, {}, ""
    return (
        dict(getattr(ct, "limits", {}) or {}),
        dict(getattr(ct, "slo", {}) or {}),
        str(getattr(ct, "description", "") or ""),
    )


# -- audio ------------------------------------------------------------------------------------
@dataclass
class CallAudio:
    """What the report shows of one call's recording."""

    envelope: npt.NDArray[np.float32] | None = None
    """``(channels, bins, 2)`` min/max per bin, scaled so the louder channel's peak is 1."""
    duration_s: float = 0.0
    """Length of the recording, s."""
    peaks_dbfs: tuple[float, ...] = ()
    """Peak level of each channel, dBFS."""
    data_uri: str | None = None
    """The recording for the player (``data:audio/ogg;base64,...``)."""
    player_bytes: int = 0
    """Size of the encoded player audio, bytes (before base64)."""
    note: str = "recording not kept"
    """Why there is no waveform/player, when there is none."""
    errors: list[str] = field(default_factory=list)
    """Problems met while reading or encoding (shown, never raised)."""


def recording_path(trace: Mapping[str, Any]) -> Path | None:
    """The call's stereo recording, if the trace names one and the file exists."""
    artifacts = trace.get("artifacts") or {}
    folder, name = artifacts.get("folder"), artifacts.get("recording")
    if not folder or not name:
        return None
    path = Path(str(folder)) / str(name)
    return path if path.is_file() else None


def waveform_envelope(samples: npt.NDArray[Any], bins: int = WAVEFORM_BINS) -> npt.NDArray[np.float32]:
    """Min/max envelope of ``samples`` (``(n,)`` or ``(n, channels)``, any scale).

    Returns:
        ``(channels, min(bins, n), 2)`` float32: per bin the minimum and the maximum sample,
        in the input's scale. Bins split the samples as evenly as possible.
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    bins = max(1, min(bins, n))
    if n == 0:
        return np.zeros((x.shape[1], 0, 2), dtype=np.float32)
    edges = np.linspace(0, n, bins + 1).astype(np.int64)[:-1]
    lo = np.minimum.reduceat(x, edges, axis=0)
    hi = np.maximum.reduceat(x, edges, axis=0)
    return np.stack([lo.T, hi.T], axis=-1).astype(np.float32)


def _resample_channels(x: npt.NDArray[np.float32], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    """Each channel of ``x`` through the plugin's one resampler (:func:`pytest_livekit.audio.resample`,
    band-limited, so the call's 8-24 kHz band does not fold into the speech band of the player).
    """
    if rate_in == rate_out:
        return x
    cols = [resample(x[:, c].astype(np.float64), rate_in, rate_out) for c in range(x.shape[1])]
    return np.stack(cols, axis=1).astype(np.float32)


def encode_player_audio(samples: npt.NDArray[np.float32], rate: int) -> tuple[str, bytes]:
    """Encode a recording small enough to embed: stereo Ogg Vorbis at :data:`PLAYER_SAMPLE_RATE`.

    Args:
        samples: ``(n, channels)`` float32 in -1..1 at ``rate`` Hz.
        rate: sample rate of ``samples``, Hz.

    Returns:
        ``(mime type, bytes)``. Falls back to Ogg Opus, then to 8 kHz 16-bit WAV, when the
        installed libsndfile cannot write Vorbis.
    """
    import soundfile as sf

    factor = max(1, rate // PLAYER_SAMPLE_RATE)
    small_rate = rate // factor
    small = np.clip(_resample_channels(samples, rate, small_rate), -1.0, 1.0)
    for subtype in ("VORBIS", "OPUS"):
        if subtype not in sf.available_subtypes("OGG"):
            continue
        buf = io.BytesIO()
        try:
            # 0.9 = Vorbis quality 0.1: ~30 kbit/s for 16 kHz stereo speech
            sf.write(buf, small, small_rate, format="OGG", subtype=subtype, compression_level=0.9)
        except TypeError:  # soundfile < 0.13 has no compression_level
            buf = io.BytesIO()
            sf.write(buf, small, small_rate, format="OGG", subtype=subtype)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            continue
        return "audio/ogg", buf.getvalue()
    buf = io.BytesIO()
    factor = max(1, rate // 8000)
    sf.write(buf, _resample_channels(samples, rate, rate // factor), rate // factor, format="WAV", subtype="PCM_16")
    return "audio/wav", buf.getvalue()


def load_call_audio(trace: Mapping[str, Any], *, player: bool = True) -> CallAudio:
    """Read a call's recording for the report: envelope, peaks and (if ``player``) the player's
    data URI. Never raises: a missing or unreadable file gives a :class:`CallAudio` with a note.
    """
    path = recording_path(trace)
    if path is None:
        return CallAudio()
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        return CallAudio(note=f"recording not readable: {exc}", errors=[str(exc)])
    if len(data) == 0:
        return CallAudio(note="recording is empty")
    env = waveform_envelope(data, WAVEFORM_BINS)
    peaks = np.max(np.abs(env), axis=(1, 2))
    scale = float(peaks.max()) or 1.0
    out = CallAudio(
        envelope=(env / scale).astype(np.float32),
        duration_s=len(data) / float(rate),
        peaks_dbfs=tuple(round(20 * math.log10(max(float(p), 1e-6)), 1) for p in peaks),
        note="",
    )
    if player:
        try:
            mime, blob = encode_player_audio(data, int(rate))
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            out.errors.append(f"player audio not encoded: {exc}")
        else:
            out.player_bytes = len(blob)
            out.data_uri = f"data:{mime};base64,{base64.b64encode(blob).decode('ascii')}"
    return out


def _load_all(traces: Sequence[Mapping[str, Any]]) -> list[CallAudio]:
    # Decoding, filtering and encoding run in C with the GIL released: threads help.
    workers = max(1, min(8, os.cpu_count() or 1, len(traces)))
    if workers == 1:
        return [load_call_audio(t) for t in traces]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(load_call_audio, traces))


# -- SVG pieces -------------------------------------------------------------------------------
def _envelope_path(env: npt.NDArray[np.float32], half: float) -> str:
    """A closed path (x = bin index, y = -value * half, integers) of one channel's envelope;
    points inside runs of equal height are dropped (silence costs nothing).
    """
    hi = np.round(-env[:, 1] * half).astype(int)
    lo = np.round(-env[:, 0] * half).astype(int)
    # a silent bin still gets a hairline so the lane shows the recording is there
    lo = np.maximum(lo, hi + 1)
    xs = list(range(len(hi))) + list(range(len(lo) - 1, -1, -1))
    ys = hi.tolist() + lo[::-1].tolist()
    keep: list[str] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if 0 < i < len(ys) - 1 and ys[i - 1] == y == ys[i + 1] and i != len(hi) - 1 and i != len(hi):
            continue
        keep.append(f"{x} {y}")
    return "M" + " ".join(keep[:1]) + "L" + " ".join(keep[1:]) + "Z"


def _nice_step(span: float, target: int, ladder: Iterable[float]) -> float:
    for step in ladder:
        if span / step <= target:
            return step
    return max(span / target, 1e-9)


def _text(x: float, y: float, text: str, *, size: float = 9, anchor: str = "start",
          cls: str = "", fill: str = "#111827") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{c}>'
            f"{_esc(text)}</text>")


def _fit(text: str, width: float, size: float = 9) -> str:
    """``text`` shortened to what fits in ``width`` units (about 0.55 em per character)."""
    room = int((width - 4) / (0.55 * size))
    if room < 3:
        return ""
    return text if len(text) <= room else text[: room - 1] + "…"


def _timeline_svg(trace: Mapping[str, Any], audio: CallAudio) -> str:
    """The call's timeline: lanes for caller and agent over the waveform, marks, time axis."""
    caller = _caller_turns(trace)
    agent = _agent_turns(trace)
    heard = [h for h in trace.get("heard") or [] if finite_number(h.get("start")) is not None]
    tools = list(trace.get("tool_calls") or [])
    limits = trace.get("limits") or {}
    ttfa_limit = finite_number(limits.get("ttfa_ms_max"))
    ends = [audio.duration_s, finite_number((trace.get("call") or {}).get("duration_s")) or 0.0]
    for turn in caller + agent:
        ends += [finite_number(turn.get("start")) or 0.0, finite_number(turn.get("end")) or 0.0]
        if finite_number(turn.get("ttfa_ms")) is not None and finite_number(turn.get("end")) is not None:
            ends.append(float(turn["end"]) + ms_to_seconds(float(turn["ttfa_ms"])))
    ends += [finite_number(h.get("end")) or 0.0 for h in heard] + [finite_number(c.get("t")) or 0.0 for c in tools]
    span = max(max(ends), 1.0)
    plot_w = _X1 - _X0

    def x(t: float) -> float:
        return _X0 + plot_w * min(max(t, 0.0), span) / span

    out: list[str] = [
        f'<svg class="timeline" viewBox="0 0 {_W:.0f} {_HEIGHT:.0f}" preserveAspectRatio="xMinYMin meet" '
        f'role="img" aria-label="call timeline, {span:.1f} s" data-span-s="{span:.3f}">'
    ]
    # lane labels and backgrounds
    for label, y, colour in (("caller", _CALLER_WAVE_Y, CALLER_COLOUR), ("agent", _AGENT_WAVE_Y, AGENT_COLOUR)):
        out.append(f'<rect x="{_X0:.1f}" y="{y - _WAVE_HALF:.1f}" width="{plot_w:.1f}" height="{2 * _WAVE_HALF:.1f}" fill="#f8fafc"/>')
        out.append(_text(4, y + 3, label, size=11, fill=colour))
    out.append(_text(4, _HEARD_BAR_Y + 9, "heard", size=8, fill="#6b7280"))
    out.append(_text(4, _REPLY_BAR_Y + 9, "reply", size=8, fill="#6b7280"))
    out.append(_text(4, _ROW_TOOLS + 3, "tools", size=8, fill="#6b7280"))
    # waveform
    if audio.envelope is not None and audio.envelope.shape[1] > 0:
        bins = audio.envelope.shape[1]
        sx = (x(audio.duration_s) - _X0) / bins
        names = ("caller", "agent")
        for ch in range(min(2, audio.envelope.shape[0])):
            y = (_CALLER_WAVE_Y, _AGENT_WAVE_Y)[ch]
            colour = (_CALLER_WAVE, _AGENT_WAVE)[ch]
            peak = audio.peaks_dbfs[ch] if ch < len(audio.peaks_dbfs) else None
            out.append(
                f'<path class="waveform waveform-{names[ch]}" fill="{colour}" '
                f'transform="translate({_X0:.1f} {y:.1f}) scale({sx:.5f} 1)" '
                f'd="{_envelope_path(audio.envelope[ch], _WAVE_HALF)}">'
                f"<title>{names[ch]} channel, peak {_fmt(peak)} dBFS</title></path>"
            )
    else:
        for y in (_CALLER_WAVE_Y, _AGENT_WAVE_Y):
            out.append(_text((_X0 + _X1) / 2, y + 3, audio.note or "recording not kept", size=10,
                             anchor="middle", cls="no-recording", fill="#6b7280"))
    # caller turns (with transcript labels) and barge-in marks
    for turn in caller:
        start = finite_number(turn.get("start"))
        if start is None:
            continue
        end = finite_number(turn.get("end"))
        x0, x1 = x(start), x(end if end is not None and end > start else start + 0.1)
        said = str(turn.get("text") or "")
        tip = (f"caller turn {_index(turn) + 1} ({turn.get('kind', 'say')}) "
               f"{start:.2f}–{_fmt(end)} s\nsaid: {said}\nSTT: {turn.get('stt_text') or '—'}"
               f"\nTTFA: {_fmt_ms(finite_number(turn.get('ttfa_ms')))}  WER: {_fmt(turn.get('wer'))}")
        if turn.get("conditions"):
            tip += f"\nconditions: {turn['conditions']}"
        out.append(
            f'<g class="caller-turn" data-index="{_esc(turn.get("index"))}"><title>{_esc(tip)}</title>'
            f'<rect x="{x0:.1f}" y="{_CALLER_BAR_Y:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="{_BAR_H:.0f}" '
            f'fill="{CALLER_COLOUR}"/>'
            + (_text(x0 + 2, _CALLER_BAR_Y + 9, _fit(said, x1 - x0), fill="#ffffff") if said else "")
            + "</g>"
        )
        kind = str(turn.get("kind") or "")
        if kind in ("barge_in", "backchannel"):
            label = "barge-in" if kind == "barge_in" else kind
            out.append(
                f'<g class="barge-in-mark {kind}"><title>{_esc(label)} at {start:.2f} s: {_esc(said)}</title>'
                f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{_CALLER_WAVE_Y - _WAVE_HALF:.1f}" '
                f'y2="{_REPLY_BAR_Y + _BAR_H:.1f}" stroke="{_BARGE}" stroke-width="1.5" stroke-dasharray="4 3"/>'
                f'<path d="M{x0:.1f} {_CALLER_WAVE_Y - _WAVE_HALF:.1f}l-5 -7h10z" fill="{_BARGE}"/>'
                + _text(x0 + 6, _CALLER_WAVE_Y - _WAVE_HALF + 9, label, size=9, fill=_BARGE)
                + "</g>"
            )
    # TTFA brackets: caller turn end -> first agent audio heard after it
    for turn in caller:
        end = finite_number(turn.get("end"))
        ttfa = finite_number(turn.get("ttfa_ms"))
        if end is None:
            continue
        if ttfa is None:
            out.append(
                f'<g class="ttfa-mark no-reply breach"><title>no agent audio heard after caller turn '
                f'{_index(turn) + 1}</title>'
                + _text(x(end) + 2, _TTFA_Y + 3, "no reply", size=9, fill=_FAIL) + "</g>"
            )
            continue
        xa, xb = x(end), x(end + ms_to_seconds(ttfa))
        bad = ttfa_limit is not None and ttfa > ttfa_limit
        colour = _FAIL if bad else "#374151"
        limit_note = f" (limit {ttfa_limit:.0f} ms)" if ttfa_limit is not None else ""
        y = _TTFA_Y
        out.append(
            f'<g class="ttfa-mark{" breach" if bad else ""}" data-ttfa-ms="{ttfa:.1f}">'
            f"<title>TTFA caller turn {_index(turn) + 1}: {ttfa:.0f} ms{limit_note}</title>"
            f'<path d="M{xa:.1f} {y - 5:.1f}V{y:.1f}H{xb:.1f}V{y - 5:.1f}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5"/>'
            + _text((xa + xb) / 2, y - 2, f"{ttfa:.0f} ms", size=8, anchor="middle", fill=colour)
            + "</g>"
        )
    # what the caller heard of the agent, then the agent's replies
    for seg in heard:
        s, e = float(seg["start"]), finite_number(seg.get("end")) or float(seg["start"])
        out.append(
            f'<rect class="agent-heard" x="{x(s):.1f}" y="{_HEARD_BAR_Y:.1f}" width="{max(x(e) - x(s), 1.5):.1f}" '
            f'height="{_BAR_H:.0f}" fill="{AGENT_COLOUR}"><title>caller heard the agent {s:.2f}–{e:.2f} s'
            f"</title></rect>"
        )
    for gap in trace.get("receive_gaps") or []:
        gs, gd = finite_number(gap.get("start")), finite_number(gap.get("duration"))
        if gs is not None and gd is not None:
            # only a stall inside heard speech is an audio gap (the metric's rule); others are grey
            inside = any(float(h["start"]) <= gs < (finite_number(h.get("end")) or 0.0) for h in heard)
            what = "gap in heard agent speech" if inside else "receive stall outside agent speech"
            out.append(
                f'<rect class="gap-mark{" in-speech" if inside else ""}" x="{x(gs):.1f}" y="{_HEARD_BAR_Y - 3:.1f}" '
                f'width="{max(x(gs + gd) - x(gs), 1):.1f}" height="2.5" fill="{_FAIL if inside else "#cbd5e1"}">'
                f"<title>{what}: {seconds_to_ms(gd):.0f} ms at {gs:.2f} s</title></rect>"
            )
    for turn in agent:
        start = finite_number(turn.get("start"))
        if start is None:
            continue
        end = finite_number(turn.get("end"))
        note = ""
        if end is None or end <= start:
            # no end recorded: stretch to the end of the heard audio that covers the start
            cover = [(finite_number(h.get("end")) or 0.0) for h in heard if float(h["start"]) <= start + 0.3 <= (finite_number(h.get("end")) or 0.0)]
            end, note = (max(cover), "") if cover else (start + 0.3, " (end not recorded)")
        text = str(turn.get("text") or "")
        latency = turn.get("latency") or {}
        lat = ", ".join(f"{k.removesuffix('_s')} {seconds_to_ms(float(v)):.0f} ms" for k, v in latency.items() if finite_number(v) is not None)
        tip = (f"agent reply {_index(turn) + 1}: {start:.2f}–{end:.2f} s{note}"
               f"{' [interrupted]' if turn.get('interrupted') else ''}\n{text}" + (f"\nagent-reported: {lat}" if lat else ""))
        x0, x1 = x(start), x(end)
        cut = turn.get("interrupted")
        dash = ' stroke-dasharray="3 2"' if cut else ""
        out.append(
            f'<g class="agent-turn{" interrupted" if cut else ""}"><title>{_esc(tip)}</title>'
            f'<rect x="{x0:.1f}" y="{_REPLY_BAR_Y:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="{_BAR_H:.0f}" '
            f'fill="{_AGENT_REPLY}" stroke="{AGENT_COLOUR}" stroke-width="1"{dash}/>'
            + (_text(x0 + 2, _REPLY_BAR_Y + 9, _fit(text, x1 - x0), fill="#7c2d12") if text else "")
            + "</g>"
        )
    # tool calls, errors, reconnects
    last_x, level = -1e9, 0
    for call in tools:
        t = finite_number(call.get("t"))
        if t is None:
            continue
        xt = x(t)
        level = 1 - level if xt - last_x < 90 else 0  # stagger labels of close calls
        last_x = xt
        colour = _FAIL if call.get("is_error") else _TOOL
        args = json.dumps(call.get("arguments") or {}, ensure_ascii=False)
        tip = f"{t:.2f} s tool {call.get('name')}({args})\n→ {call.get('output')}"
        if call.get("is_error"):
            tip += "\n(error)"
        y = _ROW_TOOLS - 5 + 9 * level
        out.append(
            f'<g class="tool-mark{" error" if call.get("is_error") else ""}"><title>{_esc(tip)}</title>'
            f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{y:.1f}" y2="{_REPLY_BAR_Y + _BAR_H:.1f}" stroke="{colour}" '
            f'stroke-width="1" stroke-opacity="0.5" stroke-dasharray="2 2"/>'
            f'<path d="M{xt:.1f} {y - 4:.1f}l4 4l-4 4l-4 -4z" fill="{colour}"/>'
            + _text(xt + 6, y + 3, str(call.get("name") or "tool"), size=8, fill=colour)
            + "</g>"
        )
    for err in trace.get("errors") or []:
        t = finite_number(err.get("t"))
        if t is not None:
            msg = str(err.get("message") or "").strip().splitlines()
            tip = f"{t:.2f} s agent {err.get('source', 'error')}: " + (msg[0] if msg else "")
            out.append(
                f'<g class="error-mark"><title>{_esc(tip)}</title>'
                + _text(x(t), _ROW_TOOLS + 3, "✖", size=11, anchor="middle", fill=_FAIL) + "</g>"
            )
    for rc in trace.get("reconnects") or []:
        t = finite_number(rc.get("t"))
        if t is not None:
            tip = f"reconnect ({rc.get('kind')}) at {t:.2f} s, ok={rc.get('ok')}"
            out.append(
                f'<g class="reconnect-mark"><title>{_esc(tip)}</title>'
                f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{_CALLER_WAVE_Y - _WAVE_HALF:.1f}" y2="{_REPLY_BAR_Y + _BAR_H:.1f}" '
                f'stroke="#0f766e" stroke-width="2"/></g>'
            )
    # time axis
    step = _nice_step(span, 14, (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300))
    ticks = [f'<line x1="{_X0:.1f}" x2="{_X1:.1f}" y1="{_AXIS_Y:.1f}" y2="{_AXIS_Y:.1f}" stroke="#9ca3af"/>']
    k = 0
    while k * step <= span + 1e-9:
        xt = x(k * step)
        ticks.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{_AXIS_Y:.1f}" y2="{_AXIS_Y + 4:.1f}" stroke="#9ca3af"/>')
        ticks.append(_text(xt, _AXIS_Y + 13, f"{k * step:g}" + (" s" if k == 0 else ""), size=8,
                           anchor="middle", fill="#4b5563"))
        k += 1
    out.append('<g class="time-axis">' + "".join(ticks) + "</g>")
    out.append("</svg>")
    return "".join(out)


def _latency_svg(name: str, points: Sequence[tuple[float, str]], lines: Sequence[tuple[str, float, str, str]]) -> str:
    """Distribution of TTFA values (ms): histogram, one dot per turn, and labelled vertical lines
    ``(label, ms, colour, class)``.
    """
    width, height = 640.0, 150.0
    left, right, top, hist_bottom, strip_y, axis_y = 40.0, 620.0, 26.0, 92.0, 108.0, 124.0
    head = (f'<svg class="latency-plot" data-call-type="{_esc(name)}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'role="img" aria-label="TTFA distribution of {_esc(name)}">')
    if not points:
        return head + _text(width / 2, height / 2, "no TTFA measured", size=12, anchor="middle", fill="#6b7280") + "</svg>"
    values = [v for v, _ in points]
    # the data sets the scale; a line far beyond it (a loose limit) is pinned to the right edge
    # rather than squeezing every dot into the left corner
    top_value = max(values)
    xmax = max([top_value * 1.15] + [v * 1.08 for _, v, _, _ in lines if v <= 2 * top_value])
    step = _nice_step(xmax, 30, (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000))
    xmax = math.ceil(xmax / step) * step

    def x(v: float) -> float:
        return left + (right - left) * min(max(v, 0.0), xmax) / xmax

    out = [head]
    counts = Counter(int(v // step) for v in values)
    peak = max(counts.values())
    for b, c in sorted(counts.items()):
        h = (hist_bottom - top) * c / peak
        out.append(f'<rect class="hist-bar" x="{x(b * step):.1f}" y="{hist_bottom - h:.1f}" '
                   f'width="{max(x((b + 1) * step) - x(b * step) - 1, 1):.1f}" height="{h:.1f}" fill="#bfdbfe">'
                   f"<title>{b * step:.0f}–{(b + 1) * step:.0f} ms: {c} turn(s)</title></rect>")
    for i, (v, label) in enumerate(points):
        jitter = ((i * 37) % 13 - 6) * 1.2  # deterministic spread so equal values stay visible
        out.append(f'<circle class="ttfa-dot" cx="{x(v):.1f}" cy="{strip_y + jitter:.1f}" r="2.6" fill="{CALLER_COLOUR}" '
                   f'fill-opacity="0.65"><title>{_esc(label)}: {v:.0f} ms</title></circle>')
    placed: list[float] = []
    for label, v, colour, cls in sorted(lines, key=lambda item: item[1]):
        off_scale = v > xmax
        xv = right if off_scale else x(v)
        if off_scale:
            cls += " off-scale"
        row = sum(1 for p in placed if abs(p - xv) < 70) % 2  # alternate rows when labels collide
        placed.append(xv)
        dash = ' stroke-dasharray="5 3"' if "slo" in cls or "p95" in cls else ""
        text = f"{label} {v:.0f}" + (" →" if off_scale else "")
        out.append(f'<g class="{cls}"><line x1="{xv:.1f}" x2="{xv:.1f}" y1="{top - 4:.1f}" y2="{axis_y:.1f}" '
                   f'stroke="{colour}" stroke-width="1.5"{dash}/>'
                   + _text(xv - 2 if off_scale else xv + 2, 9 + 10 * row, text, size=9,
                           anchor="end" if off_scale else "start", fill=colour) + "</g>")
    out.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{axis_y:.1f}" y2="{axis_y:.1f}" stroke="#9ca3af"/>')
    tick = _nice_step(xmax, 8, (50, 100, 200, 250, 500, 1000, 2000, 5000, 10000))
    k = 0
    while k * tick <= xmax + 1e-9:
        xt = x(k * tick)
        out.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{axis_y:.1f}" y2="{axis_y + 4:.1f}" stroke="#9ca3af"/>')
        out.append(_text(xt, axis_y + 14, f"{k * tick:g}", size=9, anchor="middle", fill="#4b5563"))
        k += 1
    out.append(_text(right, axis_y + 24, "TTFA, ms", size=9, anchor="end", fill="#4b5563"))
    out.append("</svg>")
    return "".join(out)


# -- HTML pieces ------------------------------------------------------------------------------
_CSS = """
:root{--caller:%(caller)s;--agent:%(agent)s;--fail:#dc2626;--ok:#15803d;--muted:#6b7280}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:16px 28px;color:#111827;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:22px 0 8px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:4px 0 10px}th,td{padding:3px 8px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;overflow:auto;max-height:360px;white-space:pre-wrap}
pre.failure{border-color:#fca5a5;background:#fef2f2}
.muted{color:var(--muted)}.summary-line{margin:2px 0}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff;background:#6b7280}
.badge.passed{background:var(--ok)}.badge.failed,.badge.error,.badge.timeout{background:var(--fail)}.badge.skipped{background:#a16207}
details.call{border:1px solid #e5e7eb;border-radius:6px;margin:10px 0;padding:0 12px}
details.call.failed{border-color:#fca5a5}
details.call>summary{cursor:pointer;padding:8px 0;font-weight:600}
details.call>summary .brief{font-weight:400;color:var(--muted);margin-left:8px}
.type{display:inline-block;padding:0 6px;border:1px solid #d1d5db;border-radius:4px;font-size:12px;margin-left:6px}
svg.timeline{width:100%%;height:auto;display:block;background:#fff}
svg.latency-plot{width:100%%;max-width:640px;height:auto;display:block}
svg text{font-family:system-ui,sans-serif}
.plots{display:flex;flex-wrap:wrap;gap:14px}.plot{flex:1 1 560px;max-width:660px}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:#374151}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.grid{display:flex;flex-wrap:wrap;gap:24px}.grid>div{flex:1 1 420px;min-width:0}
tr.breach td{background:#fee2e2}tr.breach td.status{color:var(--fail);font-weight:700}
tr.ok td.status{color:var(--ok);font-weight:600}td.breach{color:var(--fail);font-weight:700}
.replay code{background:#f3f4f6;padding:2px 6px}
p.no-recording{color:var(--muted);font-style:italic}
audio{width:100%%;max-width:720px}
button{font:inherit;margin-right:6px}
"""

_JS = """
(function(){
 function openFromHash(){
  var id=decodeURIComponent(location.hash.slice(1));
  if(id==='all'){document.querySelectorAll('details.call').forEach(function(d){d.open=true;});return;}
  var el=id&&document.getElementById(id);
  if(el&&el.tagName==='DETAILS'){el.open=true;}
 }
 window.addEventListener('hashchange',openFromHash);
 function setAll(open){document.querySelectorAll('details.call').forEach(function(d){d.open=open;});}
 window.addEventListener('load',function(){
  openFromHash();
  var b=document.body;
  var e=document.getElementById('expand-all'),c=document.getElementById('collapse-all');
  if(e){e.onclick=function(){setAll(true);};}
  if(c){c.onclick=function(){setAll(false);};}
  // laid out with a real width and not inside a closed <details> (whose content Chromium lays
  // out but skips painting, so the width alone would count it)
  function shown(sel){var n=0;document.querySelectorAll(sel).forEach(function(x){
   if(x.getBoundingClientRect().width>0&&(!x.checkVisibility||x.checkVisibility())){n++;}});return n;}
  b.dataset.calls=document.querySelectorAll('details.call').length;
  b.dataset.timelines=document.querySelectorAll('svg.timeline').length;
  b.dataset.timelinesVisible=shown('svg.timeline');
  b.dataset.latencyPlots=document.querySelectorAll('svg.latency-plot').length;
  b.dataset.latencyPlotsVisible=shown('svg.latency-plot');
  b.dataset.players=document.querySelectorAll('audio').length;
  b.dataset.rendered='ok';
 });
})();
"""

# No network at all: the report only ever shows what is inside it.
_CSP = ("default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def _badge(outcome: str) -> str:
    return f'<span class="badge {_esc(outcome)}">{_esc(outcome)}</span>'


def _conditions_text(conditions: Mapping[str, Any] | None) -> str:
    """``noise(snr_db=15, color=pink) · seed 7`` or ``clean``."""
    conditions = conditions or {}
    items = conditions.get("items") or []
    parts = []
    for item in items:
        args = ", ".join(f"{k}={v}" for k, v in item.items() if k != "kind" and v is not None)
        parts.append(f"{item.get('kind', '?')}({args})")
    if not parts:
        return "clean"
    seed = conditions.get("seed")
    return " + ".join(parts) + (f" · seed {seed}" if seed is not None else "")


def _summary_row(trace: Mapping[str, Any]) -> dict[str, Any]:
    """The row :meth:`CallTypeSummary.add` takes, rebuilt from a trace."""
    from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment
    from pytest_livekit.metrics.call_metrics import interruption_recovery

    record = CallRecord(call_id="", call_type=None, started_at_epoch=0.0)
    for turn in _caller_turns(trace):
        if finite_number(turn.get("start")) is not None:
            record.caller_turns.append(CallerTurn(
                index=_index(turn), source="", text=turn.get("text"),
                started_at=float(turn["start"]), ended_at=finite_number(turn.get("end")), kind=str(turn.get("kind") or "say"),
                speech_ended_at=finite_number(turn.get("speech_end")),
            ))
    record.heard = [HeardSegment(float(h["start"]), float(h["end"])) for h in trace.get("heard") or []
                    if finite_number(h.get("start")) is not None and finite_number(h.get("end")) is not None]
    reconnects = trace.get("reconnects") or []
    return {
        "outcome_test": _outcome(trace),
        "metrics": trace.get("metrics") or {},
        "conditions": [str(i.get("kind")) for i in (trace.get("conditions") or {}).get("items") or []],
        "tool_breaches": [b for b in _breach_names(trace) if b in ("expected_tools", "forbidden_tools")],
        "breaches": list(trace.get("breaches") or []),
        "interruptions": list(interruption_recovery(record)),
        "reconnects": [len(reconnects), sum(1 for r in reconnects if r.get("ok"))],
    }


def _header(traces: Sequence[Mapping[str, Any]], title: str) -> str:
    outcomes = Counter(_outcome(t) for t in traces)
    order = ["passed", "failed", "error", "timeout", "skipped", "unknown"]
    counts = " · ".join(f"{outcomes[o]} {o}" for o in order + sorted(set(outcomes) - set(order)) if outcomes[o])
    starts = [(finite_number((t.get("call") or {}).get("started_at_epoch")), finite_number((t.get("call") or {}).get("duration_s")))
              for t in traces]
    known = [(s, d or 0.0) for s, d in starts if s is not None]
    when = ""
    if known:
        first = min(s for s, _ in known)
        last = max(s + d for s, d in known)
        iso = _dt.datetime.fromtimestamp(first, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        when = f"calls from {iso}, spanning {last - first:.0f} s"
    talk = sum(d for _, d in known)
    versions: list[str] = []
    for v in {json.dumps(t.get("versions") or {}, sort_keys=True) for t in traces}:
        data = json.loads(v)
        if data:
            versions.append(", ".join(f"{k} {val}" for k, val in data.items()))
    machines = []
    for m in {json.dumps(t.get("machine") or {}, sort_keys=True) for t in traces}:
        data = json.loads(m)
        if data:
            machines.append(f"{data.get('platform', '?')}, {data.get('cpus', '?')} CPUs, host #{data.get('hostname_hash', '?')}")
    generated = _dt.datetime.now(tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"<header><h1>{_esc(title)}</h1>"
        f'<p class="summary-line"><b>{len(traces)} call(s)</b>: {_esc(counts or "none")} · '
        f"{talk:.0f} s of calls</p>"
        f'<p class="summary-line muted">{_esc(when)}{" · " if when else ""}report generated {generated}</p>'
        + "".join(f'<p class="summary-line muted">versions: {_esc(v)}</p>' for v in sorted(versions))
        + "".join(f'<p class="summary-line muted">machine: {_esc(m)}</p>' for m in sorted(machines))
        + "</header>"
    )


def _call_types_section(traces: Sequence[Mapping[str, Any]], settings: Any) -> str:
    from pytest_livekit.metrics.thresholds import CallTypeSummary

    summaries: dict[str, CallTypeSummary] = {}
    points: dict[str, list[tuple[float, str]]] = {}
    outcomes: dict[str, Counter[str]] = {}
    trace_limits: dict[str, set[float]] = {}
    for trace in traces:
        name = _call_type(trace)
        summaries.setdefault(name, CallTypeSummary(name)).add(_summary_row(trace))
        nodeid = (trace.get("test") or {}).get("nodeid") or (trace.get("call") or {}).get("call_id", "?")
        for i, turn in enumerate((trace.get("metrics") or {}).get("turns") or []):
            ttfa = finite_number(turn.get("ttfa"))
            if ttfa is not None:
                points.setdefault(name, []).append((seconds_to_ms(ttfa), f"{nodeid} turn {i + 1}"))
        out = (trace.get("metrics") or {}).get("outcome")
        if out:
            outcomes.setdefault(name, Counter())[str(out)] += 1
        lim = finite_number((trace.get("limits") or {}).get("ttfa_ms_max"))
        if lim is not None:
            trace_limits.setdefault(name, set()).add(lim)
    rows, plots = [], []
    for name in sorted(summaries, key=lambda n: (n == "-", n)):
        summary = summaries[name]
        limits, slo, description = _type_config(settings, name)
        vals = summary.values()
        breaches = {b.name: str(b) for b in summary.check(slo)} if slo else {}
        slo_cells = []
        for key, limit in slo.items():
            measured = vals.get(key.rsplit("_", 1)[0])
            op = "≤" if key.endswith("_max") else "≥"
            cls = "breach" if key in breaches else ""
            slo_cells.append(f'<span class="slo {cls}" title="{_esc(breaches.get(key, "met"))}">'
                             f"{_esc(key)} {op} {_fmt(limit)}: <b>{_esc(_fmt(measured))}</b></span>")
        wer = vals.get("wer_mean")
        oc = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.get(name, Counter()).items()))
        rows.append(
            f'<tr class="call-type-row{" breach" if breaches else ""}" data-call-type="{_esc(name)}">'
            f"<td><b>{_esc(name)}</b><div class='muted'>{_esc(description)}</div></td>"
            f'<td class="num">{summary.calls}</td>'
            f'<td class="num{" breach" if summary.failed else ""}">{summary.failed}</td>'
            f'<td class="num">{_fmt_ms(vals.get("ttfa_p50_ms"))}</td><td class="num">{_fmt_ms(vals.get("ttfa_p95_ms"))}</td>'
            f'<td class="num">{"—" if wer is None else f"{wer:.3f}"}</td><td>{_esc(oc or "—")}</td>'
            f"<td>{'<br>'.join(slo_cells) or '<span class=muted>none</span>'}</td></tr>"
        )
        lines: list[tuple[str, float, str, str]] = []
        p50, p95 = vals.get("ttfa_p50_ms"), vals.get("ttfa_p95_ms")
        if p50 is not None:
            lines.append(("p50", p50, "#111827", "p50-line"))
        if p95 is not None:
            lines.append(("p95", p95, "#111827", "p95-line"))
        type_limits = {float(limits["ttfa_ms_max"])} if "ttfa_ms_max" in limits else trace_limits.get(name, set())
        for lim in sorted(type_limits):
            lines.append(("limit", lim, _FAIL, "limit-line"))
        for key in ("ttfa_p50_ms_max", "ttfa_p95_ms_max", "ttfa_p99_ms_max"):
            if key in slo:
                lines.append((f"SLO {key.split('_')[1]}", float(slo[key]), "#b91c1c", "slo-line"))
        plots.append(
            f'<div class="plot"><h3>{_esc(name)} — TTFA of every caller turn '
            f'<span class="muted">({len(points.get(name, []))} turns)</span></h3>'
            f"{_latency_svg(name, points.get(name, []), lines)}</div>"
        )
    return (
        '<section id="call-types"><h2>Call types</h2><table class="call-types"><thead><tr><th>call type</th>'
        "<th>calls</th><th>failed</th><th>TTFA p50</th><th>TTFA p95</th><th>WER mean</th><th>outcomes</th>"
        "<th>SLOs (recomputed from the traces)</th></tr></thead><tbody>"
        + "".join(rows)
        + '</tbody></table><div class="plots">' + "".join(plots) + "</div></section>"
    )


def _worst_ttfa_ms(trace: Mapping[str, Any]) -> float | None:
    values = [v for t in _caller_turns(trace) if (v := finite_number(t.get("ttfa_ms"))) is not None]
    return max(values) if values else None


def _index_section(ordered: Sequence[tuple[int, Mapping[str, Any]]]) -> str:
    rows = []
    for n, trace in ordered:
        m = trace.get("metrics") or {}
        wer = finite_number(m.get("wer"))
        rows.append(
            f'<tr><td><a href="#call-{n}">{n}</a></td><td>{_badge(_outcome(trace))}</td>'
            f"<td><code>{_esc((trace.get('test') or {}).get('nodeid') or (trace.get('call') or {}).get('call_id'))}</code></td>"
            f"<td>{_esc(_call_type(trace))}</td>"
            f'<td class="num">{_fmt_ms(_worst_ttfa_ms(trace))}</td>'
            f'<td class="num">{"—" if wer is None else f"{wer:.3f}"}</td>'
            f'<td class="num{" breach" if trace.get("breaches") else ""}">{len(trace.get("breaches") or [])}</td></tr>'
        )
    return (
        '<section id="index"><h2>Calls</h2><p><button id="expand-all" type="button">expand all</button>'
        '<button id="collapse-all" type="button">collapse all</button></p>'
        '<table class="index"><thead><tr><th>#</th><th>test</th><th>node id</th><th>call type</th>'
        "<th>worst TTFA</th><th>WER</th><th>breaches</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></section>"
    )


def _limit_text(name: str, limit: Any) -> str:
    if name in ("expected_tools",):
        return "called in order: " + ", ".join(map(str, limit))
    if name == "forbidden_tools":
        return "none of: " + ", ".join(map(str, limit))
    if name == "outcome":
        return f"= {limit}"
    return ("≤ " if name.endswith("_max") else "≥ ") + _fmt(limit)


def _network_rows(trace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One row per shaped link and direction: what the packet relay did on the wire."""
    network = trace.get("network") or {}
    shaped = network.get("shaped") or {}
    rows = []
    for link, stats in sorted((network.get("links") or {}).items()):
        who = link.rsplit(":", 1)[-1]
        path = (shaped.get(who) or {}).get("path") or {}
        for direction in ("uplink", "downlink"):
            st = stats.get(direction) or {}
            specs = ", ".join(str(spec.get("kind", "?")) for spec in path.get(direction) or []) or "clean"
            dropped = sum(int(st.get(k, 0)) for k in ("dropped_loss", "dropped_queue", "dropped_outage"))
            rows.append((
                f"network, {who} {direction} ({specs})",
                f"{st.get('packets_in', 0)} packets, {dropped} dropped (loss {st.get('dropped_loss', 0)}, "
                f"queue {st.get('dropped_queue', 0)}, outage {st.get('dropped_outage', 0)}), "
                f"{st.get('duplicated', 0)} duplicated, {st.get('reordered', 0)} reordered, queue delay "
                f"p50/p95 {_fmt(st.get('queue_delay_p50_ms'))}/{_fmt(st.get('queue_delay_p95_ms'))} ms",
            ))
    return rows


def _metrics_table(trace: Mapping[str, Any]) -> str:
    m = trace.get("metrics") or {}
    limits = trace.get("limits") or {}
    broken = _breach_names(trace)
    turns = m.get("turns") or []
    e2e = [seconds_to_ms(v) for t in turns if (v := finite_number(t.get("e2e_latency"))) is not None]
    rtc = m.get("rtc") or {}
    aq, cq = m.get("agent_quality") or {}, m.get("caller_quality") or {}
    p50 = finite_number(m.get("ttfa_p50"))
    jitter = finite_number(rtc.get("jitter_s"))
    tools = ", ".join(map(str, m.get("tools_called") or [])) or "none"
    rows: list[tuple[str, str, str | None]] = [
        ("TTFA, worst caller turn", _fmt_ms(_worst_ttfa_ms(trace)), "ttfa_ms_max"),
        ("TTFA p50 over turns", format_ms(p50), None),
        ("agent e2e latency, worst reply (agent-reported)", _fmt_ms(max(e2e) if e2e else None), "e2e_latency_ms_max"),
        ("WER (raw STT)", _fmt(m.get("wer")), "wer_max"),
        ("CER (raw STT)", _fmt(m.get("cer")), "cer_max"),
        ("duplicated replies", _fmt(m.get("duplicated_turns")), "duplicated_turns_max"),
        ("gaps in heard agent audio", _fmt(m.get("gaps")), "audio_gaps_max"),
        ("packet loss (caller side)", _fmt(rtc.get("packet_loss_ratio")), "packet_loss_max"),
        ("jitter (caller side)", format_ms(jitter), None),
        ("agent clipping ratio", _fmt(aq.get("clipping_ratio")), "agent_clipping_max"),
        ("agent SNR, dB", _fmt(aq.get("snr_db")), "agent_snr_db_min"),
        ("agent loudness, LUFS", _fmt(aq.get("loudness_lufs")), None),
        ("caller SNR, dB", _fmt(cq.get("snr_db")), None),
        ("tools called", tools, "expected_tools"),
        ("tools called", tools, "forbidden_tools"),
        ("call outcome", _fmt(m.get("outcome")), "outcome"),
    ]
    if aq.get("dnsmos") is not None:
        rows.insert(12, ("agent DNSMOS", json.dumps(aq["dnsmos"]), None))
    html_rows = []
    for label, value, limit_name in rows:
        has_limit = limit_name is not None and limit_name in limits
        if limit_name in ("expected_tools", "forbidden_tools") and not has_limit:
            if limit_name == "forbidden_tools" or "forbidden_tools" in limits:
                continue  # the tools row shows once
        status, cls = "", "metric-row"
        if has_limit:
            bad = limit_name in broken
            status, cls = ("fail", "metric-row breach") if bad else ("pass", "metric-row ok")
        limit = _limit_text(str(limit_name), limits[str(limit_name)]) if has_limit else ""
        html_rows.append(
            f'<tr class="{cls}" data-limit="{_esc(limit_name or "")}"><td>{_esc(label)}</td>'
            f'<td class="num">{_esc(value)}</td><td>{_esc(limit)}'
            f'{f" <code class=muted>{_esc(limit_name)}</code>" if has_limit else ""}</td>'
            f'<td class="status">{status}</td></tr>'
        )
    for label, value in _network_rows(trace):
        html_rows.append(
            f'<tr class="metric-row"><td>{_esc(label)}</td><td class="num">{_esc(value)}</td><td></td><td></td></tr>'
        )
    breaches = "".join(f"<li>{_esc(b)}</li>" for b in trace.get("breaches") or [])
    return (
        '<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>limit</th><th></th></tr></thead><tbody>'
        + "".join(html_rows) + "</tbody></table>"
        + (f'<div class="breaches"><b>breaches</b><ul>{breaches}</ul></div>' if breaches else "")
    )


def _turns_table(trace: Mapping[str, Any]) -> str:
    limit = finite_number((trace.get("limits") or {}).get("ttfa_ms_max"))
    rows = []
    for turn in _caller_turns(trace):
        ttfa = finite_number(turn.get("ttfa_ms"))
        bad = ttfa is None and finite_number(turn.get("end")) is not None or (ttfa is not None and limit is not None and ttfa > limit)
        wer = finite_number(turn.get("wer"))
        cond = f"<div class='muted'>{_esc(turn.get('conditions'))}</div>" if turn.get("conditions") else ""
        rows.append(
            f'<tr class="caller-row"><td class="num">{_index(turn) + 1}</td><td>{_esc(turn.get("kind"))}</td>'
            f'<td class="num">{_secs(turn.get("start"))}–{_secs(turn.get("end"))}</td>'
            f"<td>{_esc(turn.get('text') or '—')}{cond}</td><td class=\"stt\">{_esc(turn.get('stt_text') or '—')}</td>"
            f'<td class="num{" breach" if bad else ""}">{"no reply" if ttfa is None else f"{ttfa:.0f} ms"}</td>'
            f'<td class="num">{"—" if wer is None else f"{wer:.3f}"}</td></tr>'
        )
    replies = []
    for turn in _agent_turns(trace):
        lat = turn.get("latency") or {}
        e2e = finite_number(lat.get("e2e_latency_s"))
        replies.append(
            f'<tr class="agent-row"><td class="num">{_secs(turn.get("start"))}</td><td>{_esc(turn.get("text"))}'
            f'{" <i class=muted>[interrupted]</i>" if turn.get("interrupted") else ""}</td>'
            f'<td class="num">{format_ms(e2e)}</td></tr>'
        )
    raw = (trace.get("transcripts") or {}).get("raw") or []
    raw_rows = "".join(
        f'<tr><td class="num">{_secs(r.get("t"))}</td><td>{"final" if r.get("is_final") else "interim"}</td>'
        f"<td>{_esc(r.get('text'))}</td></tr>" for r in raw
    )
    return (
        '<table class="turns"><thead><tr><th>#</th><th>kind</th><th>time, s</th><th>caller said</th>'
        "<th>agent's STT heard (raw finals)</th><th>TTFA</th><th>WER</th></tr></thead><tbody>"
        + ("".join(rows) or '<tr><td colspan="7" class="muted">the caller said nothing</td></tr>')
        + "</tbody></table>"
        + '<table class="replies"><thead><tr><th>t, s</th><th>agent replied</th><th>e2e (agent-reported)</th>'
        "</tr></thead><tbody>"
        + ("".join(replies) or '<tr><td colspan="3" class="muted">no agent reply</td></tr>')
        + "</tbody></table>"
        + (f"<details><summary>every STT event ({len(raw)})</summary><table class='stt-events'>"
           f"<thead><tr><th>t, s</th><th></th><th>text</th></tr></thead><tbody>{raw_rows}</tbody></table></details>"
           if raw else "")
    )


def _tools_table(trace: Mapping[str, Any]) -> str:
    tools = trace.get("tool_calls") or []
    if not tools:
        return '<p class="muted">no tool calls</p>'
    rows = "".join(
        f'<tr class="tool-row{" breach" if c.get("is_error") else ""}"><td class="num">{_secs(c.get("t"))}</td>'
        f"<td><code>{_esc(c.get('name'))}</code></td>"
        f"<td><pre>{_esc(json.dumps(c.get('arguments') or {}, indent=1, ensure_ascii=False))}</pre></td>"
        f"<td><pre>{_esc(c.get('output'))}</pre></td><td>{'error' if c.get('is_error') else ''}</td></tr>"
        for c in tools
    )
    return ('<table class="tools"><thead><tr><th>t, s</th><th>tool</th><th>arguments</th><th>output</th><th></th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _call_section(n: int, trace: Mapping[str, Any], audio: CallAudio) -> str:
    test = trace.get("test") or {}
    call = trace.get("call") or {}
    outcome = _outcome(trace)
    failed = outcome in FAILED_OUTCOMES
    nodeid = test.get("nodeid") or call.get("call_id") or f"call {n}"
    m = trace.get("metrics") or {}
    wer = finite_number(m.get("wer"))
    brief = " · ".join(p for p in (
        f"worst TTFA {_fmt_ms(_worst_ttfa_ms(trace))}",
        "" if wer is None else f"WER {wer:.3f}",
        f"{finite_number(call.get('duration_s')) or audio.duration_s:.1f} s",
        str(m.get("outcome") or ""),
        f"{len(trace.get('breaches') or [])} breach(es)" if trace.get("breaches") else "",
    ) if p)
    folder = (trace.get("artifacts") or {}).get("folder")
    message = _ANSI.sub("", str(test.get("message") or "")).strip()
    parts = [
        f'<details class="call {_esc(outcome)}" id="call-{n}" data-outcome="{_esc(outcome)}" '
        f'data-call-type="{_esc(_call_type(trace))}" data-nodeid="{_esc(nodeid)}"{" open" if failed else ""}>'
        f"<summary>{_badge(outcome)} <code>{_esc(nodeid)}</code>"
        f'<span class="type">{_esc(_call_type(trace))}</span><span class="brief">{_esc(brief)}</span></summary>',
        '<p class="meta muted">'
        f"room <code>{_esc(call.get('call_id'))}</code> {_esc(call.get('room_sid') or '')} · agent "
        f"<code>{_esc(call.get('agent'))}</code> ({_esc(call.get('agent_mode'))}) · started {_esc(call.get('started_at'))}"
        f" · test {_esc(test.get('phase') or '')} {_fmt(test.get('duration_s'))} s</p>",
        f'<p class="conditions">conditions: <b>{_esc(_conditions_text(trace.get("conditions")))}</b></p>',
    ]
    if message:
        parts.append(f'<pre class="failure">{_esc(message)}</pre>')
    if failed and folder:
        parts.append(f'<p class="replay">replay: <code>python -m pytest_livekit replay {_esc(shlex.quote(str(folder)))}'
                     "</code></p>")
    parts.append(
        '<figure class="timeline-figure">' + _timeline_svg(trace, audio)
        + '<figcaption class="legend">'
        f'<span><i style="background:{CALLER_COLOUR}"></i>caller turn (label: what the caller said)</span>'
        f'<span><i style="background:{AGENT_COLOUR}"></i>agent audio the caller heard</span>'
        f'<span><i style="background:{_AGENT_REPLY};border:1px solid {AGENT_COLOUR}"></i>agent reply (agent speaking state)</span>'
        '<span>⊓ TTFA: caller turn end → first agent audio</span>'
        f'<span style="color:{_BARGE}">▼ barge-in</span><span style="color:{_TOOL}">◆ tool call</span>'
        "<span>hover for transcripts and details</span></figcaption></figure>"
    )
    if audio.data_uri:
        parts.append(
            f'<p class="player"><audio controls preload="none" src="{audio.data_uri}"></audio><br>'
            f'<span class="muted">stereo: left = caller as sent, right = agent as heard · '
            f"{audio.duration_s:.1f} s · {audio.player_bytes / 1024:.0f} kB</span></p>"
        )
    else:
        parts.append(f'<p class="no-recording">{_esc(audio.note or "recording not kept")}</p>')
    for err in audio.errors:
        parts.append(f'<p class="muted">{_esc(err)}</p>')
    parts.append(
        '<div class="grid"><div><h3>metrics against limits</h3>' + _metrics_table(trace) + "</div>"
        "<div><h3>caller vs STT</h3>" + _turns_table(trace) + "</div></div>"
        "<h3>tool calls</h3>" + _tools_table(trace)
    )
    errors = trace.get("errors") or []
    if errors:
        texts = [f"{_secs(e.get('t'))} s [{e.get('source')}] {e.get('message')}" for e in errors]
        parts.append("<h3>agent errors</h3>" + "".join(f"<pre class='failure'>{_esc(t)}</pre>" for t in texts))
    if folder:
        parts.append(f'<p class="muted">artifacts: <code>{_esc(folder)}</code></p>')
    parts.append("</details>")
    return "".join(parts)


def _safe_call_section(n: int, trace: Mapping[str, Any], audio: CallAudio) -> str:
    # The report is written once, at session end: one malformed trace must not cost the others.
    try:
        return _call_section(n, trace, audio)
    except Exception as exc:  # shown in the report instead
        nodeid = str((trace.get("test") or {}).get("nodeid") or "?")
        return (f'<details class="call render-error" id="call-{n}" data-outcome="{_esc(_outcome(trace))}" '
                f'data-nodeid="{_esc(nodeid)}" open><summary>{_badge(_outcome(trace))} <code>{_esc(nodeid)}</code>'
                f'</summary><pre class="failure">this call could not be shown: {_esc(type(exc).__name__)}: '
                f"{_esc(exc)}</pre></details>")


def _ordered(traces: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Failed calls first, otherwise in the given order; numbered from 1 in display order."""
    ranked = sorted(traces, key=lambda t: 0 if _is_failed(t) else 1)
    return list(enumerate(ranked, start=1))


def build_report(traces: Sequence[Mapping[str, Any]], *, settings: Any = None,
                 title: str = "pytest-livekit calls") -> str:
    """The report as one HTML document (see the module docstring for what it holds).

    Args:
        traces: call traces (:func:`pytest_livekit.outputs.trace.build_trace` documents, e.g. the lines
            of ``calls.jsonl``); recordings are read from each trace's artifacts folder.
        settings: a :class:`~pytest_livekit.config.LivekitSettings` (or None): its call types'
            ``limits`` and ``slo`` give the lines of the latency plots and the SLO column.
        title: page title and heading.
    """
    ordered = _ordered(traces)
    audios = _load_all([t for _, t in ordered])
    body = [
        _header([t for _, t in ordered], title),
        _call_types_section([t for _, t in ordered], settings) if ordered else "",
        _index_section(ordered),
        '<section id="calls"><h2>Call details</h2>',
        *(_safe_call_section(n, t, a) for (n, t), a in zip(ordered, audios, strict=True)),
        "</section>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title>"
        f"<style>{_CSS % {'caller': CALLER_COLOUR, 'agent': AGENT_COLOUR}}</style></head>"
        f'<body data-rendered="no">{"".join(body)}<script>{_JS}</script></body></html>\n'
    )


def write_report(path: Path, traces: Sequence[Mapping[str, Any]], *, settings: Any = None) -> Path:
    """Write the report to ``path`` atomically (temp file, then rename); returns ``path``.

    Args:
        path: the HTML file to write (its folder is created).
        traces: the run's call traces.
        settings: the run's :class:`~pytest_livekit.config.LivekitSettings`, or None.
    """
    return atomic_write_text(path, build_report(traces, settings=settings))
