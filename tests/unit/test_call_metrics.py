"""Unit tests of :mod:`pytest_livekit.metrics.call_metrics` on hand-built call records and synthetic audio
(sines, noise at known levels, clipped signals, silence): every metric is shown to pass on good
input and to fail on bad input."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pytest_livekit.call.record import (
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    ToolCall,
    Transcript,
)
from pytest_livekit.metrics.call_metrics import (
    AudioQuality,
    CallMetrics,
    ScoringOptions,
    audio_gaps,
    audio_quality,
    call_outcome,
    character_error_rate,
    compute_metrics,
    default_transcriber,
    integrated_loudness,
    load_call,
    rtc_summary,
    text_error_rate,
    tool_selection,
    transcript_drift,
    turn_metrics,
)
from pytest_livekit.metrics.turns import normalize_text

SR = 48_000


# -- helpers ----------------------------------------------------------------------------------
def _record(
    turns: Sequence[tuple[float, float, str | None]] = (),
    *,
    heard: Sequence[tuple[float, float]] = (),
    finals: Sequence[tuple[float, str]] = (),
    items: Sequence[tuple[float, str, str] | ConversationItem] = (),
    tools: Sequence[tuple[float, str]] = (),
) -> CallRecord:
    """Caller turns ``(start, end, text)``, heard ``(start, end)``, final transcripts ``(t, text)``,
    items ``(t, role, text)`` (or ready ConversationItems), tool calls ``(t, name)``."""
    rec = CallRecord(call_id="call-1", call_type="refund", started_at_epoch=1_700_000_000.0)
    rec.caller_turns = [CallerTurn(i, "tts:test", text, s, e) for i, (s, e, text) in enumerate(turns)]
    rec.heard = [HeardSegment(s, e) for s, e in heard]
    rec.transcripts = [Transcript(t, text, True) for t, text in finals]
    rec.items = [i if isinstance(i, ConversationItem) else ConversationItem(i[0], i[1], i[2]) for i in items]
    rec.tool_calls = [ToolCall(t, name, {}) for t, name in tools]
    return rec


def _sine(freq: float, seconds: float, amplitude: float, phase: float = 0.0) -> npt.NDArray[np.float64]:
    t = np.arange(int(seconds * SR)) / SR
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


def _pcm(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _noise(seconds: float, dbfs: float, seed: int = 0) -> npt.NDArray[np.float64]:
    """White Gaussian noise with RMS ``dbfs``."""
    return np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)


# -- ScoringOptions, WER, CER --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["Where's my ORDER?", "  it's 'quoted'  -- here_now  ", "Order #1234, please!", "café déjà-vu"],
)
def test_default_scoring_equals_normalize_text(text: str) -> None:
    assert ScoringOptions().apply(text) == normalize_text(text)


def test_scoring_options_apply_in_documented_order() -> None:
    opts = ScoringOptions(normalize_numbers=True, rules=((r"\bokay\b", "ok"), (r"\bmister\b", "mr")))
    assert opts.apply("Okay, Mister Smith: 42!") == "ok mr smith four two"
    assert ScoringOptions(fold_case=False, strip_punctuation=False).apply(" Hi,  There! ") == "Hi, There!"


def test_scoring_describe_names_every_step() -> None:
    text = ScoringOptions(normalize_numbers=True, rules=((r"colour", "color"),)).describe()
    for part in ("digits spelled out", "lowercased", "punctuation removed", "'colour' -> 'color'"):
        assert part in text
    bare = ScoringOptions(fold_case=False, strip_punctuation=False).describe()
    assert bare == "whitespace collapsed"


def test_scoring_rejects_a_bad_regex_early() -> None:
    with pytest.raises(re.error):
        ScoringOptions(rules=(("(unclosed", ""),))


def test_wer_with_numbers_and_a_custom_rule() -> None:
    ref, hyp = "Okay, order 42 please.", "ok order four two please"
    assert text_error_rate(ref, hyp) == pytest.approx(3 / 4)  # okay->ok, 42->four, +two
    numbers = ScoringOptions(normalize_numbers=True)
    assert text_error_rate(ref, hyp, numbers) == pytest.approx(1 / 5)  # only okay->ok
    both = ScoringOptions(normalize_numbers=True, rules=((r"\bokay\b", "ok"),))
    assert text_error_rate(ref, hyp, both) == 0.0


def test_wer_respects_case_folding() -> None:
    assert text_error_rate("Hello World", "hello world") == 0.0
    assert text_error_rate("Hello World", "hello world", ScoringOptions(fold_case=False)) == 1.0


def test_cer_matches_jiwer_on_normalised_text() -> None:
    import jiwer

    assert character_error_rate("abcd", "abxd") == pytest.approx(0.25)
    assert character_error_rate("Refund, please", "refund plese") == pytest.approx(
        jiwer.cer("refund please", "refund plese")
    )
    assert character_error_rate("same", "SAME!") == 0.0


def test_empty_texts() -> None:
    assert text_error_rate("", "") == 0.0
    assert text_error_rate("", "two words") == 2.0
    assert text_error_rate("three words here", "") == 1.0
    assert character_error_rate("abc", "") == 1.0


# -- turn metrics ---------------------------------------------------------------------------------
def _conversation() -> CallRecord:
    return _record(
        [(1.0, 3.0, "I want a refund"), (8.0, 10.0, "Order 1234"), (15.0, 16.0, None)],
        heard=[(4.2, 6.0), (11.5, 13.0), (17.0, 18.0)],
        finals=[(3.3, "i want a refund"), (10.4, "order"), (10.9, "one two three four"), (16.2, "bye")],
        items=[
            (3.4, "user", "i want a refund"),
            ConversationItem(
                6.1,
                "assistant",
                "Sure, what is your order number?",
                metrics={"e2e_latency": 1.1, "llm_node_ttft": 0.4, "tts_node_ttfb": 0.2},
            ),
            ConversationItem(13.1, "assistant", "Your refund is on its way.", metrics={"e2e_latency": 1.4}),
            (13.3, "assistant", "your refund is on its way"),
            (18.1, "assistant", "Goodbye"),
        ],
    )


def test_turn_metrics_per_turn_values() -> None:
    t0, t1, t2 = turn_metrics(_conversation())
    assert (t0.index, t0.reference, t0.stt_text, t0.wer, t0.cer) == (
        0,
        "I want a refund",
        "i want a refund",
        0,
        0,
    )
    assert t0.ttfa == pytest.approx(1.2)
    assert (t0.e2e_latency, t0.llm_ttft, t0.tts_ttfb) == (1.1, 0.4, 0.2)
    assert t0.agent_replies == 1 and not t0.duplicated

    assert t1.stt_text == "order one two three four"
    assert t1.wer == pytest.approx(4 / 2)  # "1234" vs four words: 1 substitution + 3 insertions
    assert t1.ttfa == pytest.approx(1.5)
    assert (t1.e2e_latency, t1.llm_ttft, t1.tts_ttfb) == (1.4, None, None)  # first reply's metrics
    assert t1.agent_replies == 2 and t1.duplicated

    assert t2.reference is None and t2.wer is None and t2.cer is None  # WAV without text
    assert t2.agent_replies == 1 and t2.e2e_latency is None


def test_turn_metrics_number_normalisation_fixes_spelled_digits() -> None:
    t1 = turn_metrics(_conversation(), ScoringOptions(normalize_numbers=True))[1]
    assert t1.wer == 0.0 and t1.cer == 0.0


@pytest.mark.parametrize(
    ("first", "second", "duplicated"),
    [
        ("Your refund is on its way.", "your refund is on its way", True),  # identical after scoring
        ("your refund is on its way", "your refund is on its way now", True),  # WER 1/6 and 1/7
        ("your refund is on its way", "your refund is on its way right now", False),  # 2/6
        ("your refund is on its way", "is there anything else", False),
        ("", "", False),  # empty messages (e.g. tool-only) are ignored
    ],
)
def test_duplicated_reply_detection(first: str, second: str, duplicated: bool) -> None:
    rec = _record([(1.0, 2.0, "hi")], items=[(3.0, "assistant", first), (3.5, "assistant", second)])
    assert turn_metrics(rec)[0].duplicated is duplicated


def test_replies_in_another_turns_window_are_not_duplicates() -> None:
    rec = _record(
        [(1.0, 2.0, "hi"), (5.0, 6.0, "hello?")],
        items=[(3.0, "assistant", "how can i help"), (7.0, "assistant", "how can i help")],
    )
    assert [t.duplicated for t in turn_metrics(rec)] == [False, False]


# -- audio quality ----------------------------------------------------------------------------------
def test_clipping_ratio_is_exact() -> None:
    pcm = _pcm(_sine(440, 1.0, 0.3))  # peak well below the clip level
    pcm[:37] = 32767
    pcm[100:113] = -32768  # np.abs(-32768) overflows in int16: must still count
    pcm[200:205] = 32760
    pcm[300:303] = -32760
    pcm[400:404] = 32759  # just below: not clipped
    q = audio_quality(pcm)
    assert q.clipping_ratio == (37 + 13 + 5 + 3) / SR
    assert audio_quality(_pcm(_sine(440, 1.0, 0.3))).clipping_ratio == 0.0
    hard = _pcm(np.clip(_sine(440, 1.0, 2.0), -1.0, 1.0))  # a sine driven 6 dB into the rails
    hard_ratio = audio_quality(hard).clipping_ratio
    assert hard_ratio is not None and hard_ratio > 0.5


def test_silence_ratio_counts_quiet_frames() -> None:
    x = np.concatenate(
        [np.zeros(int(0.3 * SR)), _noise(0.2, -70.0), _sine(1000, 0.5, 0.1)]  # 30 + 20 silent, 50 loud
    )
    assert audio_quality(_pcm(x)).silence_ratio == pytest.approx(0.5)
    loud_noise = np.concatenate([np.zeros(int(0.3 * SR)), _noise(0.7, -50.0)])
    assert audio_quality(_pcm(loud_noise)).silence_ratio == pytest.approx(0.3)


def _bursts_plus_noise(snr_db: float, seconds: float = 10.0) -> npt.NDArray[np.float64]:
    """1 kHz tone bursts (0.5 s on, 0.5 s off) at -20 dBFS RMS, plus white noise ``snr_db``
    below the tone's power, everywhere."""
    t = np.arange(int(seconds * SR)) / SR
    tone_rms = 0.1
    tone = np.sqrt(2) * tone_rms * np.sin(2 * np.pi * 1000 * t) * ((t % 1.0) < 0.5)
    signal: npt.NDArray[np.float64] = tone + _noise(seconds, 20 * math.log10(tone_rms) - snr_db, seed=3)
    return signal


def test_snr_estimate_of_tone_bursts_in_noise() -> None:
    assert audio_quality(_pcm(_bursts_plus_noise(20.0))).snr_db == pytest.approx(20.0, abs=1.5)
    assert audio_quality(_pcm(_bursts_plus_noise(40.0))).snr_db == pytest.approx(40.0, abs=1.5)
    noisy = audio_quality(_pcm(_bursts_plus_noise(5.0))).snr_db
    assert noisy is not None and noisy < 10.0  # a bad channel reads bad


def test_snr_edges() -> None:
    gated = np.concatenate([np.zeros(SR), _sine(1000, 1.0, 0.1)])  # digital silence between speech
    assert audio_quality(_pcm(gated)).snr_db == 100.0
    assert audio_quality(np.zeros(SR, dtype=np.int16)).snr_db is None
    stationary = audio_quality(_pcm(_noise(1.0, -30.0))).snr_db
    assert stationary is not None and stationary < 3.0  # stationary noise: no signal


def test_loudness_of_a_sine_follows_bs1770() -> None:
    # BS.1770: a 997 Hz sine at 0 dBFS peak reads -3.01 LUFS; 20 dB lower reads -23.01.
    assert integrated_loudness(_sine(997, 5.0, 1.0)) == pytest.approx(-3.01, abs=0.05)
    assert audio_quality(_pcm(_sine(1000, 5.0, 0.1))).loudness_lufs == pytest.approx(-23.0, abs=0.5)
    assert audio_quality(_pcm(_sine(1000, 5.0, 0.01))).loudness_lufs == pytest.approx(-43.0, abs=0.5)


def test_loudness_equals_pyloudnorm() -> None:
    import pyloudnorm

    rng = np.random.default_rng(5)
    n = 7 * SR + 3_000  # not a whole number of 100 ms steps: exercises the partial last block
    x = rng.standard_normal(n) * 0.05 * (1 + np.sin(2 * np.pi * 0.5 * np.arange(n) / SR))
    x[: 2 * SR] *= 0.003  # a quiet stretch the relative gate drops
    pcm = _pcm(x)
    expected = pyloudnorm.Meter(SR).integrated_loudness(pcm.astype(np.float64) / 32768.0)
    assert integrated_loudness(pcm) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_k_weighting_is_pyloudnorms_filter(rate: int) -> None:
    """The two K-weighting stages are designed here (pyloudnorm's module imports scipy.signal:
    ~0.8 s on a call's path); their coefficients are pyloudnorm's, and the impulse response the
    loudness convolves with filters as the recursive filter does."""
    import scipy.signal
    from pyloudnorm.iirfilter import IIRfilter

    from pytest_livekit.metrics.call_metrics import _k_weighting, _k_weighting_response

    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, rate, "high_pass")
    b, a = _k_weighting(rate)
    np.testing.assert_allclose(b, np.polymul(shelf.b, high_pass.b), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(a, np.polymul(shelf.a, high_pass.a), rtol=1e-14, atol=1e-15)
    x = np.random.default_rng(rate).standard_normal(2 * rate)
    expected = scipy.signal.lfilter(b, a, x)
    filtered = np.convolve(x, _k_weighting_response(rate))[: len(x)]
    assert np.max(np.abs(filtered - expected)) < 1e-9 * np.max(np.abs(expected))


@pytest.mark.parametrize("seconds", [0.45, 1.0, 12.3])
def test_loudness_equals_pyloudnorm_across_lengths_and_rates(seconds: float) -> None:
    import pyloudnorm

    for rate in (16_000, SR):
        n = int(seconds * rate)
        x = np.random.default_rng(n).standard_normal(n) * 0.1
        pcm = _pcm(x)
        expected = pyloudnorm.Meter(rate).integrated_loudness(pcm.astype(np.float64) / 32768.0)
        assert integrated_loudness(pcm, rate) == pytest.approx(expected, abs=1e-6)


def test_a_call_needs_no_scipy() -> None:
    """Resampling a caller's clip, shaping noise and the call's loudness use numpy only: scipy's
    signal module takes ~0.8 s to import, which the first call of a run would wait for."""
    code = (
        "import sys, numpy as np\n"
        "from pytest_livekit.audio import resample\n"
        "from pytest_livekit.conditions.media import Conditions, Noise\n"
        "from pytest_livekit.metrics.call_metrics import integrated_loudness\n"
        "x = np.sin(np.arange(22050) / 10.0) * 0.3\n"
        "y = resample(x, 22050, 48000)\n"
        "noisy = Conditions((Noise(snr_db=10, color='pink'),), seed=1).apply((y * 32767).astype(np.int16))\n"
        "assert integrated_loudness(noisy) is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'pyloudnorm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_loudness_is_none_for_silence_or_short_audio() -> None:
    assert audio_quality(np.zeros(2 * SR, dtype=np.int16)).loudness_lufs is None
    assert audio_quality(_pcm(_noise(2.0, -90.0))).loudness_lufs is None  # below the -70 LUFS gate
    assert integrated_loudness(_sine(1000, 0.3, 0.5)) is None  # shorter than one 400 ms block


def test_audio_quality_input_checks() -> None:
    with pytest.raises(TypeError, match="int16"):
        audio_quality(_sine(1000, 1.0, 0.1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        audio_quality(np.zeros((10, 2), dtype=np.int16))
    empty = audio_quality(np.zeros(0, dtype=np.int16))
    assert empty == AudioQuality(0.0, None, None, None, None, None)


def test_dnsmos_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "speechmos", None)
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", None)
    with pytest.raises(ImportError, match=re.escape("pip install pytest-livekit[dnsmos]")):
        audio_quality(_pcm(_sine(1000, 1.0, 0.1)), dnsmos=True)
    assert audio_quality(_pcm(_sine(1000, 1.0, 0.1))).dnsmos is None  # not requested: not needed


def test_dnsmos_rates_noisy_speech_below_clean_speech() -> None:
    pytest.importorskip("speechmos.dnsmos", reason="DNSMOS needs pytest-livekit[dnsmos] (speechmos, librosa)")
    from pytest_livekit.audio import float_to_pcm16, resample
    from pytest_livekit.offline import synthesize_speech

    pcm, rate = synthesize_speech("your refund has been approved and is on its way")
    clean = float_to_pcm16(0.5 * resample(pcm / 32768.0, rate, SR))
    noisy = _pcm(clean / 32768.0 + _noise(len(clean) / SR, -22.0))
    good, bad = audio_quality(clean, dnsmos=True).dnsmos, audio_quality(noisy, dnsmos=True).dnsmos
    assert good is not None and bad is not None
    assert all(1.0 <= v <= 5.0 for v in (good.ovrl_mos, good.sig_mos, good.bak_mos, good.p808_mos))
    assert good.bak_mos > bad.bak_mos + 0.5 and good.ovrl_mos > bad.ovrl_mos
    assert audio_quality(np.zeros(SR, dtype=np.int16), dnsmos=True).dnsmos is None  # no speech


# -- network: rtc stats and receive gaps --------------------------------------------------------------
def test_rtc_summary_ratios_and_missing_values() -> None:
    rec = _record()
    rec.rtc = {
        "packets_lost": 5.0,
        "packets_received": 995.0,
        "jitter": 0.012,
        "concealed_samples": 4800.0,
        "total_samples_received": 480000.0,
        "round_trip_time": 0.04,
    }
    s = rtc_summary(rec)
    assert s.packet_loss_ratio == pytest.approx(0.005)
    assert s.concealment_ratio == pytest.approx(0.01)
    assert (s.jitter_s, s.round_trip_time_s) == (0.012, 0.04)

    rec.rtc = {
        "packets_lost": -2.0,
        "packets_received": 100.0,
        "total_samples_received": 0.0,
        "concealed_samples": 0.0,
    }
    s = rtc_summary(rec)
    assert s.packet_loss_ratio == 0.0  # RTP reports duplicates as negative loss
    assert s.concealment_ratio is None and s.jitter_s is None and s.round_trip_time_s is None


def test_metrics_work_on_records_without_the_new_fields() -> None:
    rec = _record([(1.0, 2.0, "hi")], heard=[(3.0, 4.0)])
    vars(rec).pop("rtc", None)  # a record from before these fields existed
    vars(rec).pop("receive_gaps", None)
    assert rtc_summary(rec) == rtc_summary(_record())
    assert audio_gaps(rec) == (0, 0.0)
    assert compute_metrics(rec).gaps == 0


def test_audio_gaps_count_only_stalls_during_heard_speech() -> None:
    rec = _record(heard=[(4.0, 6.0), (9.0, 10.0)])
    rec.receive_gaps = [
        (4.5, 0.05),  # inside the first segment
        (6.0, 0.4),  # at its end: a stall long enough to split the segment
        (7.0, 0.2),  # agent silent: harmless
        (9.9, 0.1),  # inside the second
        (3.9, 0.05),  # just before speech
    ]
    count, seconds = audio_gaps(rec)
    assert count == 3 and seconds == pytest.approx(0.55)
    rec.receive_gaps = [(7.0, 0.2)]
    assert audio_gaps(rec) == (0, 0.0)


# -- tools and outcome --------------------------------------------------------------------------------
def _tools(*names: str) -> CallRecord:
    return _record(tools=[(float(i), n) for i, n in enumerate(names)])


def test_tool_selection_precision_recall_order() -> None:
    s = tool_selection(
        _tools("lookup_order", "issue_refund", "lookup_order", "get_weather"),
        ["lookup_order", "issue_refund"],
    )
    assert s.precision == pytest.approx(2 / 3) and s.recall == 1.0 and s.in_order
    assert s.unexpected == ("get_weather",) and s.missing == ()
    assert s.called == ("lookup_order", "issue_refund", "lookup_order", "get_weather")

    s = tool_selection(_tools("issue_refund", "lookup_order"), ["lookup_order", "issue_refund", "send_email"])
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)
    assert not s.in_order and s.missing == ("send_email",) and s.unexpected == ()


def test_tool_selection_order_uses_call_time_and_repeats() -> None:
    rec = _record(tools=[(5.0, "issue_refund"), (1.0, "lookup_order")])  # recorded out of order
    assert tool_selection(rec, ["lookup_order", "issue_refund"]).in_order
    assert not tool_selection(rec, ["lookup_order", "lookup_order"]).in_order  # needs two calls


def test_tool_selection_edge_cases() -> None:
    nothing = tool_selection(_tools(), ["transfer_to_human"])
    assert (nothing.precision, nothing.recall, nothing.in_order) == (1.0, 0.0, False)
    assert nothing.missing == ("transfer_to_human",)
    unexpected = tool_selection(_tools("transfer_to_human"), [])
    assert (unexpected.precision, unexpected.recall, unexpected.in_order) == (0.0, 1.0, True)
    with pytest.raises(TypeError):
        tool_selection(_tools(), "lookup_order")


def _answered(answers: list[bool], tools: Sequence[str] = ()) -> CallRecord:
    turns = [(10.0 * i, 10.0 * i + 2, f"turn {i}") for i in range(len(answers))]
    items = [(10.0 * i + 4, "assistant", "ok") for i, a in enumerate(answers) if a]
    return _record(turns, items=items, tools=[(1.0, t) for t in tools])


def test_call_outcome_each_value() -> None:
    assert call_outcome(_answered([True, False], ["transfer_to_human"])) == "transferred"
    assert call_outcome(_answered([True, True], ["escalate"]), transfer_tools=["escalate"]) == "transferred"
    assert (
        call_outcome(_answered([True, False], ["issue_refund"]), completion_tools=["issue_refund"])
        == "completed"
    )
    assert call_outcome(_answered([True, True])) == "completed"  # no completion tools: all answered
    assert call_outcome(_answered([True, False])) == "hung_up"
    assert call_outcome(_answered([True, True]), completion_tools=["issue_refund"]) == "incomplete"
    assert call_outcome(_answered([False, True])) == "incomplete"
    assert call_outcome(_answered([])) == "incomplete"


# -- transcript drift -----------------------------------------------------------------------------------
def _drift_record() -> CallRecord:
    return _record(
        [(0.5, 1.5, "hi")],
        heard=[(2.0, 3.0), (3.5, 4.0), (6.0, 7.0), (9.0, 9.5)],
        items=[
            (1.8, "user", "hi"),
            (4.1, "assistant", "Your refund is on its way."),  # heard at 2.0-3.0 and 3.5-4.0
            (5.5, "user", "thanks"),
            (7.2, "assistant", "Goodbye!"),  # heard at 6.0-7.0
            (8.0, "assistant", "Call again"),  # nothing heard before it: never spoken
        ],
    )


def test_transcript_drift_with_a_fake_transcriber() -> None:
    calls: list[tuple[int, int]] = []
    canned = iter(["your refund is on its way", "goodbye"])

    def transcribe(pcm: npt.NDArray[np.int16], rate: int) -> str:
        calls.append((len(pcm), rate))
        return next(canned)

    heard = np.zeros(10 * SR, dtype=np.int16)
    drift = transcript_drift(_drift_record(), heard, transcribe)
    assert drift == pytest.approx(2 / 9)  # "call again" never reached the caller: 2 deletions
    # First message: both segments, each padded by 0.1 s, merged where they touch; then the second.
    assert calls == [(int(1.2 * SR) + int(0.7 * SR), SR), (int(1.2 * SR), SR)]


def test_transcript_drift_detects_mismatch_and_accepts_stereo() -> None:
    rec = _record(heard=[(1.0, 2.0)], items=[(2.5, "assistant", "your refund is approved")])
    stereo = np.zeros((3 * SR, 2), dtype=np.int16)
    assert transcript_drift(rec, stereo, lambda pcm, rate: "your refund is approved") == 0.0
    assert transcript_drift(rec, stereo, lambda pcm, rate: "your refund is denied") == pytest.approx(0.25)
    assert transcript_drift(_record(), stereo, lambda pcm, rate: "x") is None  # agent said nothing
    with pytest.raises(ValueError):
        transcript_drift(rec, np.zeros((10, 3), dtype=np.int16), lambda pcm, rate: "")


def test_transcript_drift_with_espeak_and_pocketsphinx() -> None:
    from pytest_livekit.audio import float_to_pcm16, resample
    from pytest_livekit.offline import synthesize_speech

    said = ["your refund has been approved", "is there anything else i can help with"]
    track = np.zeros(8 * SR, dtype=np.int16)
    heard: list[tuple[float, float]] = []
    t = 1.0
    for text in said:
        pcm, rate = synthesize_speech(text)
        x = float_to_pcm16(0.5 * resample(pcm / 32768.0, rate, SR))
        track[int(t * SR) : int(t * SR) + len(x)] = x
        heard.append((t, t + len(x) / SR))
        t += len(x) / SR + 0.5
    items = [(heard[0][1] + 0.1, "assistant", said[0]), (heard[1][1] + 0.1, "assistant", said[1])]
    rec = _record(heard=heard, items=items)
    transcribe = default_transcriber(rec)
    assert transcript_drift(rec, track, transcribe) == 0.0

    # The agent claims the messages in the wrong order: what the caller heard disagrees.
    swapped = _record(
        heard=heard, items=[(items[0][0], "assistant", said[1]), (items[1][0], "assistant", said[0])]
    )
    drift = transcript_drift(swapped, track, transcribe)
    assert drift is not None and drift > 0.5


def test_default_transcriber_needs_known_words() -> None:
    with pytest.raises(ValueError, match="dictionary words"):
        default_transcriber(_record(items=[(1.0, "assistant", "Xqzzy Brrrt")]))


# -- whole call -----------------------------------------------------------------------------------------
def _stereo(seconds: float = 4.0) -> npt.NDArray[np.int16]:
    left = _bursts_plus_noise(30.0, seconds)
    right = _noise(seconds, -65.0, seed=9)
    right[int(seconds / 4 * SR) : int(seconds / 4 * SR) + int(seconds / 2 * SR)] += _sine(
        300, seconds / 2, 0.2
    )
    return np.stack([_pcm(left), _pcm(right)], axis=1)


def test_compute_metrics_aggregates() -> None:
    rec = _conversation()
    rec.tool_calls = [ToolCall(5.0, "lookup_order", {"order_id": "1234"}), ToolCall(12.0, "issue_refund", {})]
    rec.receive_gaps = [(5.0, 0.05), (7.0, 0.5)]
    rec.rtc = {"packets_lost": 1.0, "packets_received": 99.0}
    m = compute_metrics(rec, completion_tools=["issue_refund"])
    assert len(m.turns) == 3
    assert m.wer == pytest.approx(4 / 6)  # 0 + 4 edits over 4 + 2 reference words (turn 3: no text)
    assert m.cer is not None and 0 < m.cer < 1
    assert m.ttfa_p50 == pytest.approx(1.2)  # median of 1.2, 1.5, 1.0
    assert m.duplicated_turns == 1
    assert (m.gaps, m.gap_seconds) == (1, 0.05)
    assert m.rtc.packet_loss_ratio == pytest.approx(0.01)
    assert m.outcome == "completed" and m.tools_called == ("lookup_order", "issue_refund")
    assert m.caller_quality is None and m.agent_quality is None
    assert m.scoring == ScoringOptions().describe()
    numbers = compute_metrics(rec, scoring=ScoringOptions(normalize_numbers=True))
    assert numbers.wer == 0.0 and "digits spelled out" in numbers.scoring


def test_compute_metrics_with_audio_and_json() -> None:
    rec = _conversation()
    stereo = _stereo()
    m = compute_metrics(rec, stereo)
    assert m.caller_quality == audio_quality(np.ascontiguousarray(stereo[:, 0]))
    assert m.agent_quality == audio_quality(np.ascontiguousarray(stereo[:, 1]))
    assert m.caller_quality is not None and m.caller_quality.snr_db == pytest.approx(30.0, abs=1.5)
    data = m.to_dict()
    text = json.dumps(data, allow_nan=False)  # strictly JSON: no NaN/inf
    assert json.loads(text) == data
    assert data["turns"][2]["wer"] is None and data["caller_quality"]["dnsmos"] is None
    assert data["tools_called"] == [] and isinstance(data["turns"], list)


def test_compute_metrics_checks_the_recording() -> None:
    with pytest.raises(TypeError, match="int16"):
        compute_metrics(_record(), np.zeros((10, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        compute_metrics(_record(), np.zeros(10, dtype=np.int16))


def test_call_metrics_is_frozen() -> None:
    m = compute_metrics(_record())
    assert isinstance(m, CallMetrics)
    with pytest.raises(AttributeError):
        m.outcome = "completed"  # type: ignore[misc]


def test_load_call_round_trip(tmp_path: Path) -> None:
    import soundfile as sf

    rec = _conversation()
    rec.tool_calls = [ToolCall(12.0, "issue_refund", {"order_id": "1234"}, "ok")]
    rec.receive_gaps = [(5.0, 0.05)]
    rec.rtc = {"packets_lost": 1.0, "packets_received": 99.0, "jitter": 0.01}
    stereo = _stereo(2.0)
    rec.save(tmp_path / "call.json")
    sf.write(str(tmp_path / "call.wav"), stereo, SR, subtype="PCM_16")

    loaded, audio = load_call(tmp_path)
    assert audio.dtype == np.int16 and audio.shape == stereo.shape
    np.testing.assert_array_equal(audio, stereo)
    assert json.loads(json.dumps(loaded.to_dict())) == json.loads(json.dumps(rec.to_dict()))
    assert compute_metrics(loaded, audio).to_dict() == compute_metrics(rec, stereo).to_dict()


def test_load_call_errors(tmp_path: Path) -> None:
    import soundfile as sf

    with pytest.raises(FileNotFoundError, match="call.json"):
        load_call(tmp_path)
    _record().save(tmp_path / "call.json")
    with pytest.raises(FileNotFoundError, match="call.wav"):
        load_call(tmp_path)
    sf.write(str(tmp_path / "call.wav"), np.zeros(SR, dtype=np.int16), SR, subtype="PCM_16")
    with pytest.raises(ValueError, match="expected stereo"):
        load_call(tmp_path)


def test_import_is_light() -> None:
    code = (
        "import sys, pytest_livekit.metrics.call_metrics\n"
        "heavy = ('jiwer', 'pyloudnorm', 'scipy', 'speechmos', 'soundfile', 'livekit', 'pocketsphinx')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
