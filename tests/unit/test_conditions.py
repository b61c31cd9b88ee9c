"""Unit tests of :mod:`pytest_livekit.conditions.media`: every call condition on real espeak speech.

Pure numpy/PyAV, no server, no network. Acceptance numbers checked here: SNR within 0.5 dB of
the target for every noise source at 0/10/20/30 dB, loss rates within 10 % of the target over a
60 s call, exact level/clipping, G.711 against FFmpeg, telephony band limit, Opus alignment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from pytest_livekit.audio import CALL_SAMPLE_RATE, resample, to_mono_float
from pytest_livekit.conditions.media import (
    SIGNAL_ORDER,
    Backchannel,
    BargeIn,
    BaseCondition,
    Bitrate,
    CodecRoundTrip,
    Condition,
    Conditions,
    FrameLoss,
    Jitter,
    Level,
    Noise,
    Pause,
    Reconnect,
    Silence,
    Telephony,
    _babble_talkers,
    active_speech_power,
    measure_snr_db,
    measured_loss,
    mulaw_decode,
    mulaw_encode,
    spec_from_dict,
    split_text_for_pause,
)
from pytest_livekit.errors import AudioInputError

Pcm = npt.NDArray[np.int16]
SENTENCE = "Hello, I would like to book a table for two people tomorrow evening, please."


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _to_pcm(x: npt.NDArray[np.float64]) -> Pcm:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def speech() -> Pcm:
    """About 5.4 s of espeak speech at 48 kHz with 0.5 s of silence either side."""
    from pytest_livekit.offline.tts import synthesize_speech

    pcm, rate = synthesize_speech(SENTENCE)
    voiced = _to_pcm(resample(to_mono_float(pcm), rate, CALL_SAMPLE_RATE))
    pad = np.zeros(CALL_SAMPLE_RATE // 2, dtype=np.int16)
    return np.concatenate([pad, voiced, pad])


@pytest.fixture(scope="module")
def noise_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s stereo 16 kHz "street" recording: amplitude-modulated low-passed noise."""
    rng = _rng(99)
    n = 32_000
    left = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * (1 + np.sin(np.arange(n) / 900))
    right = rng.standard_normal(n) * 0.05
    path = tmp_path_factory.mktemp("noise") / "street.wav"
    sf.write(path, np.column_stack([left * 0.2, right]).astype(np.float32), 16_000)
    return path


def _band_power(x: npt.NDArray[np.float64], lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / CALL_SAMPLE_RATE)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


# -- Noise -----------------------------------------------------------------------------------
@pytest.mark.parametrize("snr_db", [0, 10, 20, 30])
@pytest.mark.parametrize("color", ["white", "pink", "brown", "babble", "hum", "file"])
def test_noise_hits_target_snr_within_half_a_db(
    speech: Pcm, noise_file: Path, color: str, snr_db: int
) -> None:
    spec = Noise(snr_db, file=str(noise_file)) if color == "file" else Noise(snr_db, color=color)
    mixed = spec.apply(speech, _rng(7))
    assert mixed.dtype == np.int16 and len(mixed) == len(speech)
    error = measure_snr_db(speech, mixed) - snr_db
    assert abs(error) <= 0.5, f"{color} at {snr_db} dB: measured SNR off by {error:+.3f} dB"
    assert not np.array_equal(mixed, speech)


@pytest.mark.parametrize("snr_db", [-10, -5, 0])
def test_snr_target_holds_when_the_mix_clips(speech: Pcm, snr_db: int) -> None:
    """Loud speech plus strong noise clips at full scale; the gain refinement still hits the
    target (a single-shot gain misses by 1.9 dB at -10 dB here)."""
    loud = Level(9.0).apply(speech, _rng())
    mixed = Noise(snr_db).apply(loud, _rng())
    assert np.mean(np.abs(mixed.astype(np.int32)) >= 32767) > 0.005  # it really clips
    assert measure_snr_db(loud, mixed) == pytest.approx(snr_db, abs=0.5)


def test_snr_is_measured_over_active_frames_only(speech: Pcm) -> None:
    """Surrounding the speech with silence must not change its speech power, hence the SNR."""
    padded = np.concatenate([np.zeros(5 * CALL_SAMPLE_RATE, dtype=np.int16), speech])
    assert active_speech_power(padded) == pytest.approx(active_speech_power(speech), rel=1e-9)
    mixed = Noise(10).apply(padded, _rng())
    assert measure_snr_db(padded, mixed) == pytest.approx(10, abs=0.5)
    # Noise power is over the whole clip: the noise is there in the silence as well.
    lead = mixed[: 5 * CALL_SAMPLE_RATE].astype(np.float64)
    assert np.sqrt(np.mean(lead**2)) > 10


def test_active_speech_power_of_silence_and_empty() -> None:
    assert active_speech_power(np.zeros(4800, dtype=np.int16)) is None
    assert active_speech_power(np.zeros(0, dtype=np.int16)) is None
    # A -40 dBFS tone is active; its power is its mean square.
    tone = _to_pcm(0.01 * np.sqrt(2) * np.sin(np.arange(48_000) * 2 * np.pi * 440 / CALL_SAMPLE_RATE))
    assert 10 * math.log10(active_speech_power(tone) or 0) == pytest.approx(-40, abs=0.01)


def test_measure_snr_db_edge_cases(speech: Pcm) -> None:
    assert measure_snr_db(speech, speech.copy()) == math.inf
    with pytest.raises(ValueError, match="differ in length"):
        measure_snr_db(speech, speech[:-1])
    silent = np.zeros(4800, dtype=np.int16)
    with pytest.raises(ValueError, match="no active frame"):
        measure_snr_db(silent, silent)


def test_noise_on_silent_input_uses_nominal_speech_level() -> None:
    """A silent caller in a noisy room: noise at -26 dBFS minus the SNR."""
    silent = np.zeros(CALL_SAMPLE_RATE, dtype=np.int16)
    out = Noise(14).apply(silent, _rng())
    level_db = 10 * math.log10(np.mean((out / 32768.0) ** 2))
    assert level_db == pytest.approx(-26 - 14, abs=0.1)


def _octave_powers_db(x: npt.NDArray[np.float64]) -> list[float]:
    return [10 * math.log10(_band_power(x, lo, 2 * lo)) for lo in (250, 500, 1000, 2000, 4000)]


@pytest.mark.parametrize(("color", "slope_db_per_octave"), [("white", 3.0), ("pink", 0.0), ("brown", -3.0)])
def test_noise_colors_have_their_spectral_slope(color: str, slope_db_per_octave: float) -> None:
    """Power per octave: white rises 3 dB/octave, pink is flat, brown falls 3 dB/octave."""
    x = Noise(10, color=color).noise(4 * CALL_SAMPLE_RATE, _rng())
    assert np.mean(x**2) == pytest.approx(1.0)
    powers = _octave_powers_db(x)
    slope = np.polyfit(np.arange(len(powers)), powers, 1)[0]
    assert slope == pytest.approx(slope_db_per_octave, abs=0.3)


def test_hum_has_fundamental_and_two_weaker_harmonics() -> None:
    x = Noise(10, color="hum", hum_hz=60.0).noise(CALL_SAMPLE_RATE, _rng())
    amplitude = np.abs(np.fft.rfft(x)) / (CALL_SAMPLE_RATE / 2)  # 1 Hz bins over 1 s
    assert amplitude[60] / amplitude[120] == pytest.approx(2.0, rel=1e-6)
    assert amplitude[60] / amplitude[180] == pytest.approx(4.0, rel=1e-6)
    others = np.delete(amplitude, [60, 120, 180])
    assert others.max() < 1e-6 * amplitude[60]


def test_babble_is_several_talkers_and_identical_across_espeak_history() -> None:
    """Babble voices have no pitch flutter, so espeak's hidden state cannot change them."""
    from pytest_livekit.offline.tts import synthesize_speech

    first = _babble_talkers()
    assert 4 <= len(first) <= 6
    for voice, text in [
        ("en-us", "Something else first."),
        ("en-gb-scotland", "And more, in another voice."),
    ]:
        _babble_talkers.cache_clear()
        synthesize_speech(text, voice=voice, pitch=20)
        again = _babble_talkers()
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not again[0].flags.writeable


def test_noise_file_errors(tmp_path: Path, speech: Pcm) -> None:
    with pytest.raises(AudioInputError, match="does not exist"):
        Noise(10, file=str(tmp_path / "missing.wav")).apply(speech, _rng())
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    with pytest.raises(AudioInputError, match="cannot be read"):
        Noise(10, file=str(corrupt)).apply(speech, _rng())
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(1000, dtype=np.int16), 16_000)
    with pytest.raises(AudioInputError, match="digital silence"):
        Noise(10, file=str(silent)).apply(speech, _rng())


def test_noise_file_sets_color() -> None:
    spec = Noise(10, file="rain.wav")
    assert spec.color == "file"
    assert spec.describe() == "noise file rain.wav 10 dB"
    assert spec_from_dict(spec.to_dict()) == spec


# -- Level -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gain_db", [-20.0, -6.0, 3.5])
def test_level_gain_is_exact(speech: Pcm, gain_db: float) -> None:
    out = Level(gain_db).apply(speech, _rng())
    expected = np.clip(np.round(speech * 10 ** (gain_db / 20)), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(out, expected)


def test_level_clipping_is_exact(speech: Pcm) -> None:
    out = Level(clip_dbfs=-6.0).apply(speech, _rng())
    limit = round(32767 * 10 ** (-6 / 20))
    assert limit == 16422
    assert int(np.abs(out.astype(np.int32)).max()) == limit
    below = np.abs(speech.astype(np.int32)) <= limit
    np.testing.assert_array_equal(out[below], speech[below])
    np.testing.assert_array_equal(out[~below], np.sign(speech[~below]) * limit)


def test_loud_gain_saturates_at_full_scale() -> None:
    x = np.array([0, 1000, -1000, 20000, -20000], dtype=np.int16)
    np.testing.assert_array_equal(Level(20.0).apply(x, _rng()), [0, 10000, -10000, 32767, -32768])


# -- Telephony and G.711 ---------------------------------------------------------------------
def _ffmpeg_mulaw_decode(codes: npt.NDArray[np.uint8]) -> Pcm:
    import av

    decoder = av.CodecContext.create("pcm_mulaw", "r")
    decoder.sample_rate = 8000
    decoder.layout = "mono"
    frames = decoder.decode(av.Packet(codes.tobytes()))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def _ffmpeg_mulaw_encode(pcm: Pcm) -> npt.NDArray[np.uint8]:
    import av

    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.sample_rate = 8000
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.open()
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    frame.pts = 0
    packets = list(encoder.encode(frame)) + list(encoder.encode(None))
    return np.frombuffer(b"".join(bytes(p) for p in packets), dtype=np.uint8)


def test_mulaw_decode_matches_ffmpeg_for_every_code() -> None:
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(mulaw_decode(codes), _ffmpeg_mulaw_decode(codes))


def test_mulaw_encode_matches_ffmpeg_except_at_segment_boundaries() -> None:
    """Over the full 16-bit ramp the reference encoder and FFmpeg agree except for 512 inputs,
    where FFmpeg rounds to the nearest level instead of G.711's decision levels: there the
    codes are neighbours, one step apart."""
    ramp = np.arange(-32768, 32768).astype(np.int16)
    ours, theirs = mulaw_encode(ramp), _ffmpeg_mulaw_encode(ramp)
    differ = ours != theirs
    assert int(differ.sum()) == 512
    assert np.all(np.abs(ours[differ].astype(int) - theirs[differ].astype(int)) == 1)
    # ... and only near the 14 segment ends (|x| close to a power of two times 128, minus bias).
    magnitudes = np.abs(ramp[differ].astype(np.int32))
    ends = np.array([(0x80 << s) - 0x84 for s in range(8)])
    assert np.all(np.min(np.abs(magnitudes[:, None] - ends[None, :]), axis=1) <= 128)


def test_mulaw_known_code_points() -> None:
    x = np.array([0, -1, 32767, -32768, 100, -100], dtype=np.int16)
    np.testing.assert_array_equal(mulaw_encode(x), [0xFF, 0x7E, 0x80, 0x00, 0xF2, 0x72])
    codes = np.array([0xFF, 0x7F, 0x80, 0x00, 0xF0, 0xEF], dtype=np.uint8)
    np.testing.assert_array_equal(mulaw_decode(codes), [0, 0, 32124, -32124, 120, 132])


def test_mulaw_round_trip_error_is_small(speech: Pcm) -> None:
    decoded = mulaw_decode(mulaw_encode(speech)).astype(np.float64)
    x = speech.astype(np.float64)
    sqnr_db = 10 * math.log10(np.sum(x**2) / np.sum((decoded - x) ** 2))
    assert sqnr_db > 30  # G.711 gives about 38 dB on speech
    # Logarithmic steps: the error (half a step plus the 2 bits G.711 drops) grows with the
    # magnitude, staying within 4 % of it plus a few units, up to the largest code (32124).
    ramp = np.arange(-32124, 32125)
    error = np.abs(mulaw_decode(mulaw_encode(ramp.astype(np.int16))).astype(np.int64) - ramp)
    assert np.all(error <= np.abs(ramp) / 25 + 12)


@pytest.mark.parametrize("mulaw", [False, True])
def test_telephony_removes_energy_above_4_khz(speech: Pcm, mulaw: bool) -> None:
    out = Telephony(mulaw=mulaw).apply(speech, _rng())
    assert out.dtype == np.int16 and len(out) == len(speech)
    x, y = speech.astype(np.float64), out.astype(np.float64)
    removed_db = 10 * math.log10(_band_power(y, 4000, 24000) / _band_power(x, 4000, 24000))
    assert removed_db < -50
    # The telephone band itself passes: the in-band error is small (mu-law adds ~38 dB SQNR).
    in_band_error_db = 10 * math.log10(_band_power(y - x, 100, 3000) / _band_power(x, 100, 3000))
    assert in_band_error_db < (-30 if mulaw else -60)


# -- CodecRoundTrip and Bitrate --------------------------------------------------------------
def _lag(x: Pcm, y: Pcm) -> int:
    from scipy.signal import correlate

    cc = correlate(y.astype(np.float64), x.astype(np.float64), mode="full", method="fft")
    return int(np.argmax(cc)) - (len(x) - 1)


def _error_db(x: Pcm, y: Pcm) -> float:
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    return 10 * math.log10(np.sum((yf - xf) ** 2) / np.sum(xf**2))


def test_codec_round_trip_keeps_speech_aligned_and_lower_bitrate_is_worse(speech: Pcm) -> None:
    errors = {}
    for bps in (8_000, 24_000, 64_000):
        out = CodecRoundTrip(bps).apply(speech, _rng())
        assert out.dtype == np.int16 and len(out) == len(speech)
        assert abs(_lag(speech, out)) <= 5, f"{bps} bps: speech moved by {_lag(speech, out)} samples"
        errors[bps] = _error_db(speech, out)
    assert errors[8_000] > errors[24_000] > errors[64_000], errors


def test_codec_round_trip_is_deterministic(speech: Pcm) -> None:
    clip = speech[:CALL_SAMPLE_RATE]
    assert (
        CodecRoundTrip(16_000).apply(clip, _rng(1)).tobytes()
        == CodecRoundTrip(16_000).apply(clip, _rng(2)).tobytes()
    )


def test_codec_handles_lengths_not_a_multiple_of_a_frame() -> None:
    x = _to_pcm(0.3 * np.sin(np.arange(1234) * 2 * np.pi * 300 / CALL_SAMPLE_RATE))
    assert len(CodecRoundTrip(32_000).apply(x, _rng())) == 1234
    assert len(CodecRoundTrip(32_000).apply(x[:0], _rng())) == 0


def test_bitrate_acts_on_the_network_not_the_samples(speech: Pcm) -> None:
    np.testing.assert_array_equal(Bitrate(12_000).apply(speech, _rng()), speech)
    assert Conditions((Bitrate(12_000),)).publish_bitrate_bps == 12_000
    assert Conditions((Noise(10),)).publish_bitrate_bps is None


# -- FrameLoss -------------------------------------------------------------------------------
CALL_FRAMES = 60 * 1000 // 20  # a 60 s call in 20 ms frames


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize(("model", "burst"), [("random", 1.0), ("gilbert", 1.0), ("gilbert", 3.0)])
def test_loss_over_a_60_s_call_is_within_10_percent_of_rate(rate: float, model: Any, burst: float) -> None:
    spec = FrameLoss(rate, model, burst)
    for seed in range(20):
        loss = measured_loss(spec.mask(CALL_FRAMES, _rng(seed)))
        # Inclusive bound; the epsilon absorbs float rounding of e.g. 0.9 * 0.05.
        assert abs(loss - rate) <= 0.1 * rate + 1e-12, f"seed {seed}: measured {loss:.4f} for rate {rate}"


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize(("model", "burst"), [("random", 1.0), ("gilbert", 3.0), ("gilbert", 8.0)])
def test_raw_models_have_the_stationary_rate_and_burst_length(rate: float, model: Any, burst: float) -> None:
    """Without the rate tolerance, a long draw shows the model itself: rate and mean burst."""
    mask = FrameLoss(rate, model, burst, rate_tolerance=None).mask(1_000_000, _rng(3))
    assert measured_loss(mask) == pytest.approx(rate, rel=0.03)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    bursts = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    expected_burst = 1 / (1 - rate) if model == "random" else burst
    assert bursts.mean() == pytest.approx(expected_burst, rel=0.05)


def test_rate_tolerance_keeps_the_gilbert_burst_shape() -> None:
    lengths: list[int] = []
    for seed in range(30):
        mask = FrameLoss(0.05, "gilbert", 4.0).mask(CALL_FRAMES, _rng(seed))
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        lengths.extend(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    assert np.mean(lengths) == pytest.approx(4.0, rel=0.15)


def test_loss_mask_for_a_short_clip_is_the_nearest_count() -> None:
    # 10 frames at 2 %: 0.2 frames expected, so no loss is the closest a mask can get.
    assert not FrameLoss(0.02).mask(10, _rng()).any()
    assert int(FrameLoss(0.25).mask(10, _rng()).sum()) in (2, 3)
    assert len(FrameLoss(0.1).mask(0, _rng())) == 0


def test_loss_apply_zeroes_exactly_the_lost_frames(speech: Pcm) -> None:
    spec = FrameLoss(0.2, "gilbert", 2.0, frame_ms=20)
    out = spec.apply(speech, _rng(5))
    n_frames = math.ceil(len(speech) / 960)
    mask = spec.mask(n_frames, _rng(5))
    lost = np.repeat(mask, 960)[: len(speech)]
    assert np.all(out[lost] == 0)
    np.testing.assert_array_equal(out[~lost], speech[~lost])
    assert measured_loss(mask) == pytest.approx(0.2, rel=0.1)


def test_measured_loss_of_empty_mask() -> None:
    assert measured_loss(np.zeros(0, dtype=bool)) == 0.0


# -- Jitter ----------------------------------------------------------------------------------
def test_jitter_offsets_are_non_negative_and_keep_frames_in_order() -> None:
    spec = Jitter(std_ms=30.0, frame_ms=10)
    offsets = spec.offsets(5000, _rng(1))
    assert offsets.shape == (5000,)
    assert np.all(offsets >= 0)
    send = np.arange(5000) * 0.010 + offsets
    assert np.all(np.diff(send) >= 0)
    assert offsets.max() < 0.2  # never beyond the largest half-normal draw (~4.5 sigma here)
    assert offsets.mean() > 0.030 * math.sqrt(2 / math.pi)  # ordering only ever adds delay
    np.testing.assert_array_equal(offsets, spec.offsets(5000, _rng(1)))
    assert not np.array_equal(offsets, spec.offsets(5000, _rng(2)))
    np.testing.assert_array_equal(Jitter().offsets(7, _rng()), np.zeros(7))


# -- behaviour specs -------------------------------------------------------------------------
def test_split_text_for_pause() -> None:
    assert split_text_for_pause("I want  to book a table", 1) == ("I want", "to book a table")
    assert split_text_for_pause("Yes, please.", 0) == ("Yes,", "please.")
    with pytest.raises(ValueError, match=r"at_word=4 is outside the valid range \[0, 3\]"):
        split_text_for_pause("one two three four five", 4)
    with pytest.raises(ValueError, match="at least two words"):
        split_text_for_pause("hello", 0)


@pytest.mark.parametrize(
    "spec",
    [
        BargeIn(1.2),
        Backchannel(),
        Pause(2, 1.5),
        Silence(5.0),
        Reconnect(10.0, "signal"),
        Jitter(20.0),
        Bitrate(8000),
    ],
    ids=lambda s: s.kind,
)
def test_non_signal_specs_leave_the_samples_alone(speech: Pcm, spec: BaseCondition) -> None:
    out = spec.apply(speech, _rng())
    np.testing.assert_array_equal(out, speech)
    assert out is not speech
    assert not spec.signal


# -- every spec: clean is a no-op, determinism, JSON ------------------------------------------
CLEAN_SPECS: list[Condition] = [
    Noise(None),
    Noise(None, color="babble"),
    Level(),
    Telephony(enabled=False),
    CodecRoundTrip(),
    Bitrate(),
    FrameLoss(),
    FrameLoss(0.0, "gilbert", 3.0),
    Jitter(),
    BargeIn(None),
    Pause(3, 0.0),
    Silence(0.0),
]

ACTIVE_SPECS: list[Condition] = [
    Noise(12, color="pink"),
    Noise(3, color="hum", hum_hz=60.0),
    Level(-12.0, clip_dbfs=-20.0),
    Telephony(),
    CodecRoundTrip(12_000),
    Bitrate(16_000),
    FrameLoss(0.05, "gilbert", 3.0, frame_ms=10),
    Jitter(25.0, frame_ms=20),
    BargeIn(0.8),
    Backchannel("uh-huh", 1.0),
    Pause(2, 1.5),
    Silence(4.0),
    Reconnect(12.5, "signal"),
]


@pytest.mark.parametrize("spec", CLEAN_SPECS, ids=lambda s: s.describe())
def test_clean_spec_is_an_exact_no_op(speech: Pcm, spec: BaseCondition) -> None:
    assert spec.is_clean
    out = spec.apply(speech, _rng(123))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, speech)
    assert Conditions((spec,), seed=5).is_clean  # type: ignore[arg-type]
    np.testing.assert_array_equal(Conditions((spec,), seed=5).apply(speech), speech)  # type: ignore[arg-type]


def test_clean_bundle_is_a_no_op(speech: Pcm) -> None:
    bundle = Conditions(tuple(CLEAN_SPECS), seed=9)
    assert bundle.is_clean and bundle.kinds() == ()
    assert bundle.describe() == "clean, seed 9"
    np.testing.assert_array_equal(bundle.apply(speech), speech)


@pytest.mark.parametrize("spec", [s for s in ACTIVE_SPECS if s.signal], ids=lambda s: s.kind)
def test_signal_specs_are_deterministic(speech: Pcm, spec: BaseCondition) -> None:
    clip = speech[: 2 * CALL_SAMPLE_RATE]
    first = spec.apply(clip, _rng(41))
    assert first.tobytes() == spec.apply(clip, _rng(41)).tobytes()
    assert not np.array_equal(first, clip)
    assert len(first) == len(clip)


@pytest.mark.parametrize(
    "spec", [Noise(10), Noise(10, color="babble"), FrameLoss(0.1)], ids=lambda s: s.describe()
)
def test_random_specs_differ_between_seeds(speech: Pcm, spec: BaseCondition) -> None:
    assert not np.array_equal(spec.apply(speech, _rng(1)), spec.apply(speech, _rng(2)))


def test_bundle_same_seed_same_bytes_other_seed_other_bytes(speech: Pcm) -> None:
    items = (Noise(15, color="babble"), FrameLoss(0.1, "gilbert", 2.0), Level(-3.0))
    a = Conditions(items, seed=41).apply(speech)
    assert a.tobytes() == Conditions(items, seed=41).apply(speech).tobytes()
    assert a.tobytes() != Conditions(items, seed=42).apply(speech).tobytes()


@pytest.mark.parametrize("spec", ACTIVE_SPECS + CLEAN_SPECS, ids=lambda s: s.describe())
def test_spec_dict_round_trips_through_json(spec: Condition) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["kind"] == spec.kind
    assert spec_from_dict(data) == spec


# -- Conditions ------------------------------------------------------------------------------
def test_bundle_applies_in_fixed_order_whatever_the_item_order(speech: Pcm) -> None:
    noise, level, loss = Noise(10), Level(-10.0), FrameLoss(0.1)
    forward = Conditions((noise, level, loss), seed=3)
    backward = Conditions((loss, level, noise), seed=3)
    out = forward.apply(speech)
    np.testing.assert_array_equal(out, backward.apply(speech))
    manual = level.apply(speech, forward.rng_for(level))
    manual = noise.apply(manual, forward.rng_for(noise))
    manual = loss.apply(manual, forward.rng_for(loss))
    np.testing.assert_array_equal(out, manual)
    assert SIGNAL_ORDER == ("level", "noise", "telephony", "codec", "loss")


def test_adding_an_item_does_not_change_the_others_randomness(speech: Pcm) -> None:
    noise = Noise(10)
    alone = Conditions((noise,), seed=8)
    together = Conditions((Jitter(10.0), FrameLoss(0.1), noise), seed=8)
    assert alone.rng_for(noise).random() == together.rng_for(noise).random()
    np.testing.assert_array_equal(alone.apply(speech), together.apply(speech, skip=("loss",)))


def test_turns_get_their_own_reproducible_streams(speech: Pcm) -> None:
    bundle = Conditions((Noise(10), FrameLoss(0.1)), seed=4)
    turn0, turn1 = bundle.apply(speech, turn=0), bundle.apply(speech, turn=1)
    assert not np.array_equal(turn0, turn1)
    np.testing.assert_array_equal(turn1, bundle.apply(speech, turn=1))
    loss = bundle.items[1]
    expected = loss.mask(10, bundle.rng_for(loss, turn=1))  # type: ignore[union-attr]
    np.testing.assert_array_equal(expected, loss.mask(10, bundle.rng_for(loss, turn=1)))  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="turn=-1 is outside"):
        bundle.apply(speech, turn=-1)


def test_equal_items_of_one_kind_get_their_own_streams() -> None:
    a, b = FrameLoss(0.1), FrameLoss(0.1)
    bundle = Conditions((a, b), seed=1)
    assert bundle.rng_for(a).random() != bundle.rng_for(b).random()
    with pytest.raises(ValueError, match="not one of this bundle's items"):
        bundle.rng_for(Noise(3))


def test_bundle_kinds_describe_and_find() -> None:
    bundle = Conditions(
        (FrameLoss(0.05, "gilbert", 3.0), Noise(None), Noise(12, color="pink"), Jitter()), seed=41
    )
    assert bundle.kinds() == ("noise", "loss")
    assert bundle.describe() == "noise pink 12 dB, loss gilbert 5% burst 3, seed 41"
    assert bundle.find(Noise) == Noise(12, color="pink")
    assert bundle.find(Jitter) is None
    assert not bundle.is_clean


def test_describe_of_every_spec() -> None:
    assert [s.describe() for s in ACTIVE_SPECS] == [
        "noise pink 12 dB",
        "noise hum 60 Hz 3 dB",
        "level -12 dB clip -20 dBFS",
        "telephony 8 kHz mu-law",
        "codec opus 12 kbps",
        "bitrate 16 kbps",
        "loss gilbert 5% burst 3",
        "jitter 25 ms",
        "barge-in at 0.8 s",
        "backchannel 'uh-huh' at 1 s",
        "pause 1.5 s after word 2",
        "silence 4 s",
        "reconnect signal after 12.5 s",
    ]


def test_bundle_dict_round_trips_through_json() -> None:
    bundle = Conditions(tuple(ACTIVE_SPECS), seed=1234)
    data = json.loads(json.dumps(bundle.to_dict()))
    assert data["format_version"] == 1
    assert Conditions.from_dict(data) == bundle
    assert Conditions.from_dict({"items": [], "seed": 3}) == Conditions(seed=3)
    assert Conditions([Noise(3)]) == Conditions((Noise(3),))  # type: ignore[arg-type]


def test_bundle_skip_leaves_a_kind_to_the_caller(speech: Pcm) -> None:
    bundle = Conditions((FrameLoss(0.2),), seed=2)
    np.testing.assert_array_equal(bundle.apply(speech, skip=("loss",)), speech)
    with pytest.raises(ValueError, match="unknown kinds"):
        bundle.apply(speech, skip=("packet_loss",))


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Noise(120), r"snr_db=120 is outside the valid range \[-20, 80\]"),
        (lambda: Noise(float("nan")), r"snr_db=nan must be a finite number"),
        (lambda: Noise(10, color="purple"), r"color='purple' is not valid; valid values: 'white'"),
        (lambda: Noise(10, color="file"), r"color='file' needs file="),
        (lambda: Noise(10, color="pink", file="x.wav"), r"color='pink' conflicts with file='x.wav'"),
        (lambda: Noise(10, hum_hz=5.0), r"hum_hz=5.0 is outside the valid range \[20, 1000\]"),
        (lambda: Level(50.0), r"gain_db=50.0 is outside the valid range \[-60, 40\]"),
        (lambda: Level(clip_dbfs=3.0), r"clip_dbfs=3.0 is outside the valid range \[-40, 0\]"),
        (lambda: Telephony(enabled=1), r"enabled=1 must be True or False"),  # type: ignore[arg-type]
        (lambda: CodecRoundTrip(1000), r"bitrate_bps=1000 is outside the valid range \[6000, 510000\]"),
        (lambda: CodecRoundTrip(16_000.5), r"bitrate_bps=16000.5 must be an int"),  # type: ignore[arg-type]
        (lambda: CodecRoundTrip(16_000, codec="g722"), r"codec='g722' is not valid"),  # type: ignore[arg-type]
        (lambda: Bitrate(600_000), r"max_bitrate_bps=600000 is outside"),
        (lambda: FrameLoss(1.5), r"rate=1.5 is outside the valid range \[0, 0.9\]"),
        (lambda: FrameLoss(0.1, "bursty"), r"model='bursty' is not valid; valid values: 'random', 'gilbert'"),  # type: ignore[arg-type]
        (lambda: FrameLoss(0.1, burst_length=3.0), r"burst_length=3.0 only applies to model='gilbert'"),
        (lambda: FrameLoss(0.1, "gilbert", 0.5), r"burst_length=0.5 is outside the valid range \[1, 1000\]"),
        (lambda: FrameLoss(0.8, "gilbert", 2.0), r"rate=0.8 with burst_length=2.0 is impossible"),
        (lambda: FrameLoss(0.1, frame_ms=15), r"frame_ms=15 is not valid; valid values: 10, 20, 40, 60"),
        (lambda: FrameLoss(0.1, rate_tolerance=2.0), r"rate_tolerance=2.0 is outside"),
        (lambda: Jitter(-1.0), r"std_ms=-1.0 is outside the valid range \[0, 1000\]"),
        (lambda: Jitter(5.0, frame_ms=20.0), r"frame_ms=20.0 must be an int"),  # type: ignore[arg-type]
        (lambda: BargeIn(-0.5), r"offset_s=-0.5 is outside the valid range \[0, 60\]"),
        (lambda: Backchannel(""), r"text='' must be a non-empty string"),
        (lambda: Pause(-1, 1.0), r"at_word=-1 is outside the valid range \[0, 1000\]"),
        (lambda: Pause(1, 100.0), r"duration_s=100.0 is outside the valid range \[0, 60\]"),
        (lambda: Silence(-2.0), r"duration_s=-2.0 is outside"),
        (lambda: Reconnect(5.0, "soft"), r"mode='soft' is not valid; valid values: 'full', 'signal'"),  # type: ignore[arg-type]
        (lambda: Conditions(seed=-1), r"seed=-1 is outside the valid range"),
        (lambda: Conditions(("noise",)), r"items contains 'noise', which is not a condition spec"),  # type: ignore[arg-type]
        (
            lambda: spec_from_dict({"kind": "hiss"}),
            r"kind='hiss' is not a condition; valid kinds: level, noise",
        ),
        (lambda: spec_from_dict({"kind": "noise", "snr": 3}), r"unknown field\(s\) snr for kind='noise'"),
        (lambda: spec_from_dict({"kind": "noise"}), r"kind='noise': .*snr_db"),
        (lambda: Conditions.from_dict({"format_version": 9}), r"format_version=9 is not supported"),
        (lambda: Level().apply(np.zeros(3), _rng()), r"pcm must be a 1-D int16 numpy array"),  # type: ignore[arg-type]
        (lambda: FrameLoss(0.1).mask(-1, _rng()), r"n_frames=-1 is outside"),
    ],
)
def test_bad_arguments_raise_with_name_and_valid_range(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_fast_fft_length_is_scipys_next_fast_len() -> None:
    from scipy.fft import next_fast_len

    from pytest_livekit.conditions.media import fast_fft_length

    for n in [*range(1, 3_000), 48_000, 48_001, 144_017, 1_440_007]:
        assert fast_fft_length(n) == next_fast_len(n, real=True), n
