"""Unit tests of :mod:`pytest_livekit.audio`: resampling, downmixing, WAV loading, levels and the
energy-based activity detector. Pure numpy + soundfile, no server, no network."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from pytest_livekit.audio import (
    CALL_SAMPLE_RATE,
    ActivityDetector,
    CallerAudio,
    SpeechSegment,
    float_to_pcm16,
    load_wav,
    resample,
    rms_dbfs,
    to_mono_float,
)
from pytest_livekit.errors import AudioInputError

FRAME = 0.01  # seconds per detector frame
FRAME_SAMPLES = int(CALL_SAMPLE_RATE * FRAME)


def _sine(freq: float, rate: int, n: int, amp: float = 0.5) -> npt.NDArray[np.float64]:
    """An analytically generated sine of ``n`` samples at ``rate`` Hz."""
    return amp * np.sin(2.0 * np.pi * freq * np.arange(n) / rate)


def _interior(x: npt.NDArray[np.float64], fraction: float = 0.1) -> npt.NDArray[np.float64]:
    """``x`` without ``fraction`` of its length at either end (filter edge effects)."""
    m = max(1, int(len(x) * fraction))
    return x[m:-m]


# -- resample ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate_in", "rate_out"),
    [(8_000, 48_000), (16_000, 48_000), (22_050, 48_000), (44_100, 48_000), (48_000, 16_000)],
)
@pytest.mark.parametrize("freq", [440.0, 2_500.0])
def test_resample_keeps_sine_frequency_and_amplitude(
    rate_in: int, rate_out: int, freq: float
) -> None:
    n = int(rate_in * 0.3)
    amp = 0.5
    y = resample(_sine(freq, rate_in, n, amp), rate_in, rate_out)
    expected = _sine(freq, rate_out, len(y), amp)
    err = np.max(np.abs(_interior(y) - _interior(expected)))
    assert err < 1e-3, f"max deviation {err:.2e} from the analytic sine"
    # Amplitude (peak of the interior) matches, independent of phase alignment.
    assert np.max(np.abs(_interior(y))) == pytest.approx(amp, abs=2e-3)


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "n"),
    [
        (8_000, 48_000, 801),
        (16_000, 48_000, 16_001),
        (22_050, 48_000, 1_001),
        (44_100, 48_000, 44_099),
        (48_000, 16_000, 4_801),
        (48_000, 16_000, 3),
        (44_100, 48_000, 1),
    ],
)
def test_resample_output_length_is_ceil_of_ratio(rate_in: int, rate_out: int, n: int) -> None:
    y = resample(np.zeros(n), rate_in, rate_out)
    assert len(y) == math.ceil(n * rate_out / rate_in)
    assert y.dtype == np.float64


def test_resample_identity_and_empty_input() -> None:
    x = _sine(300.0, 16_000, 160)
    same = resample(x, 16_000, 16_000)
    np.testing.assert_array_equal(same, x)
    assert len(resample(np.zeros(0), 16_000, 48_000)) == 0


def test_resample_down_attenuates_content_above_new_nyquist() -> None:
    """A 12 kHz tone cannot exist at 16 kHz: the anti-alias filter must remove it (no alias)."""
    y = resample(_sine(12_000.0, 48_000, 48_000, amp=0.5), 48_000, 16_000)
    assert np.max(np.abs(_interior(y))) < 0.5 * 10 ** (-60 / 20)


# -- to_mono_float / float_to_pcm16 ----------------------------------------------------------
def test_to_mono_float_int16_stereo() -> None:
    data = np.array([[16384, 0], [-32768, -32768], [32767, 32767]], dtype=np.int16)
    mono = to_mono_float(data)
    assert mono.dtype == np.float64
    assert mono.shape == (3,)
    np.testing.assert_allclose(mono, [0.25, -1.0, 32767 / 32768])


def test_to_mono_float_int32_stereo() -> None:
    data = np.array([[2**30, 2**30], [-(2**31), 0], [2**31 - 1, 2**31 - 1]], dtype=np.int32)
    mono = to_mono_float(data)
    np.testing.assert_allclose(mono, [0.5, -0.5, (2**31 - 1) / 2**31])
    assert np.all(np.abs(mono) <= 1.0)


def test_to_mono_float_float_stereo_and_mono() -> None:
    stereo = np.array([[0.5, -0.5], [1.0, 0.0], [-0.2, -0.4]], dtype=np.float32)
    np.testing.assert_allclose(to_mono_float(stereo), [0.0, 0.5, -0.3], rtol=1e-6)
    assert to_mono_float(stereo).dtype == np.float64
    mono = np.array([0.1, -0.7])
    np.testing.assert_array_equal(to_mono_float(mono), mono)
    assert to_mono_float(mono).ndim == 1


def test_to_mono_float_uint8_is_centered() -> None:
    mono = to_mono_float(np.array([0, 128, 255], dtype=np.uint8))
    assert mono[1] == pytest.approx(0.0, abs=0.01)
    assert mono[0] == pytest.approx(-1.0, abs=0.01)


def test_float_to_pcm16_clips_and_scales() -> None:
    out = float_to_pcm16(np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [-32767, -32767, -16384, 0, 16384, 32767, 32767])


# -- load_wav ---------------------------------------------------------------------------------
def test_load_wav_16k_stereo_becomes_48k_mono_int16(tmp_path: Path) -> None:
    rate, seconds = 16_000, 0.75
    n = int(rate * seconds)
    left = _sine(440.0, rate, n, amp=0.4)
    right = _sine(440.0, rate, n, amp=0.2)
    path = tmp_path / "caller.wav"
    sf.write(str(path), np.stack([left, right], axis=1), rate, subtype="PCM_16")

    audio = load_wav(path, text="hello there")

    assert isinstance(audio, CallerAudio)
    assert audio.pcm.dtype == np.int16
    assert audio.pcm.ndim == 1
    assert len(audio.pcm) == math.ceil(n * CALL_SAMPLE_RATE / rate)
    assert audio.duration == pytest.approx(seconds, abs=1e-3)
    assert audio.source == str(path)
    assert audio.text == "hello there"
    # Downmixed (mean of 0.4 and 0.2) and resampled: a 0.3-amplitude 440 Hz sine at 48 kHz.
    got = audio.pcm.astype(np.float64) / 32767.0
    expected = _sine(440.0, CALL_SAMPLE_RATE, len(got), amp=0.3)
    assert np.max(np.abs(_interior(got) - _interior(expected))) < 2e-3


def test_load_wav_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError) as info:
        load_wav(missing)
    msg = str(info.value)
    assert "does not exist" in msg
    assert "Hint" in msg
    assert str(missing) in msg


def test_load_wav_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(1234).bytes(2048))
    with pytest.raises(AudioInputError) as info:
        load_wav(path)
    msg = str(info.value)
    assert "cannot be read" in msg
    assert "Hint" in msg
    assert str(path) in msg
    assert info.value.__cause__ is None  # terse: no chained libsndfile traceback


def test_load_wav_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros((0, 2)), 16_000)
    assert os.path.getsize(path) > 0
    with pytest.raises(AudioInputError, match="no samples"):
        load_wav(path)


# -- rms_dbfs --------------------------------------------------------------------------------
def test_rms_dbfs_of_full_scale_sine_is_minus_3_db() -> None:
    pcm = float_to_pcm16(_sine(1_000.0, CALL_SAMPLE_RATE, 4_800, amp=1.0))
    assert rms_dbfs(pcm) == pytest.approx(-3.01, abs=0.05)


def test_rms_dbfs_half_scale_is_6_db_lower() -> None:
    full = rms_dbfs(float_to_pcm16(_sine(1_000.0, CALL_SAMPLE_RATE, 4_800, amp=1.0)))
    half = rms_dbfs(float_to_pcm16(_sine(1_000.0, CALL_SAMPLE_RATE, 4_800, amp=0.5)))
    assert full - half == pytest.approx(6.02, abs=0.05)


def test_rms_dbfs_of_silence_and_empty_is_minus_120() -> None:
    assert rms_dbfs(np.zeros(480, dtype=np.int16)) == -120.0
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == -120.0


# -- ActivityDetector ------------------------------------------------------------------------
_TONE = float_to_pcm16(_sine(440.0, CALL_SAMPLE_RATE, FRAME_SAMPLES, amp=0.3))
_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def _feed(
    detector: ActivityDetector, pattern: list[tuple[bool, float]]
) -> list[tuple[float, SpeechSegment]]:
    """Push 10 ms frames for ``(loud, seconds)`` runs; returns ``(t, closed segment)`` pairs."""
    closed: list[tuple[float, SpeechSegment]] = []
    i = 0
    for loud, seconds in pattern:
        for _ in range(round(seconds / FRAME)):
            t = i * FRAME
            seg = detector.push(t, FRAME, _TONE if loud else _SILENCE)
            if seg is not None:
                closed.append((t, seg))
            i += 1
    return closed


def test_detector_finds_one_segment_with_frame_accurate_edges() -> None:
    det = ActivityDetector()
    closed = _feed(det, [(False, 0.5), (True, 1.0), (False, 1.0)])
    assert len(closed) == 1
    t_closed, seg = closed[0]
    assert seg.start == pytest.approx(0.5, abs=FRAME)
    assert seg.end == pytest.approx(1.5, abs=FRAME)
    # It closes once release_seconds of quiet have passed, not earlier and not much later.
    assert t_closed + FRAME - seg.end == pytest.approx(det.release_seconds, abs=FRAME)
    assert det.segments == [seg]
    assert det.all_segments() == [seg]
    assert not det.active
    assert det.onset() is None


def test_detector_open_segment_is_reported_by_all_segments() -> None:
    det = ActivityDetector()
    assert _feed(det, [(False, 0.2), (True, 0.3)]) == []
    assert det.active
    assert det.onset() == pytest.approx(0.2, abs=FRAME)
    assert det.segments == []
    (seg,) = det.all_segments()
    assert seg.start == pytest.approx(0.2, abs=FRAME)
    assert seg.end == pytest.approx(0.5, abs=FRAME)


@pytest.mark.parametrize("loud_frames", [1, 2])
def test_detector_short_bursts_do_not_open_a_segment(loud_frames: int) -> None:
    det = ActivityDetector(onset_frames=3)
    _feed(det, [(False, 0.3), (True, loud_frames * FRAME), (False, 1.0)])
    assert det.all_segments() == []
    assert not det.active


def test_detector_onset_frames_consecutive_loud_frames_open_a_segment() -> None:
    det = ActivityDetector(onset_frames=3)
    _feed(det, [(False, 0.3), (True, 3 * FRAME)])
    assert det.active
    # The segment starts at the first frame of the run, not at the frame that confirmed it.
    assert det.onset() == pytest.approx(0.3, abs=FRAME / 2)


def test_detector_isolated_loud_frames_separated_by_silence_never_open() -> None:
    det = ActivityDetector(onset_frames=3)
    _feed(det, [(True, FRAME), (False, FRAME)] * 20)
    assert det.all_segments() == []


@pytest.mark.parametrize("dip", [0.05, 0.2, 0.3])
def test_detector_short_dips_do_not_split_a_segment(dip: float) -> None:
    det = ActivityDetector(release_seconds=0.35)
    closed = _feed(det, [(False, 0.5), (True, 0.5), (False, dip), (True, 0.5), (False, 1.0)])
    assert len(closed) == 1
    seg = closed[0][1]
    assert seg.start == pytest.approx(0.5, abs=FRAME)
    assert seg.end == pytest.approx(1.5 + dip, abs=FRAME)


def test_detector_long_gap_splits_into_two_segments() -> None:
    det = ActivityDetector(release_seconds=0.35)
    _feed(det, [(False, 0.5), (True, 0.5), (False, 0.6), (True, 0.5), (False, 1.0)])
    segs = det.all_segments()
    assert len(segs) == 2
    assert segs[0].start == pytest.approx(0.5, abs=FRAME)
    assert segs[0].end == pytest.approx(1.0, abs=FRAME)
    assert segs[1].start == pytest.approx(1.6, abs=FRAME)
    assert segs[1].end == pytest.approx(2.1, abs=FRAME)


def test_detector_threshold_ignores_quiet_noise() -> None:
    quiet = float_to_pcm16(_sine(440.0, CALL_SAMPLE_RATE, FRAME_SAMPLES, amp=10 ** (-60 / 20)))
    det = ActivityDetector(threshold_dbfs=-45.0)
    for i in range(100):
        det.push(i * FRAME, FRAME, quiet)
    assert det.all_segments() == []


@pytest.mark.parametrize(
    ("rate_in", "rate_out"),
    [(22_050, 48_000), (16_000, 48_000), (8_000, 48_000), (44_100, 48_000), (48_000, 16_000), (48_000, 8_000)],
)
@pytest.mark.parametrize("n", [1, 2, 1_001, 30_001])
def test_resample_equals_scipy_resample_poly(rate_in: int, rate_out: int, n: int) -> None:
    """numpy only (scipy's signal module takes ~0.8 s to import), and the same output as
    ``scipy.signal.resample_poly`` with the same filter."""
    import scipy.signal

    from pytest_livekit.audio import _lowpass

    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    taps = scipy.signal.firwin(32 * max(up, down) + 1, 0.9 / max(up, down), window=("kaiser", 8.0))
    np.testing.assert_allclose(_lowpass(max(up, down)), taps, rtol=0, atol=1e-15)
    x = np.random.default_rng(n).standard_normal(n)
    expected = scipy.signal.resample_poly(x, up, down, window=taps)
    y = resample(x, rate_in, rate_out)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


def test_what_a_process_loaded_is_frozen_once_before_its_first_call() -> None:
    """Objects loaded before the first call are exempt from full collections (an in-process
    agent shares the process: a full walk of livekit-agents' objects stalled it ~0.2 s); objects
    made later are not, so later garbage is still collected."""
    code = (
        "import gc\n"
        "from pytest_livekit.audio import freeze_loaded_objects\n"
        "assert gc.get_freeze_count() == 0\n"
        "freeze_loaded_objects()\n"
        "first = gc.get_freeze_count()\n"
        "assert first > 1000, first\n"
        "later = [[i] for i in range(5000)]\n"
        "freeze_loaded_objects()\n"
        "assert gc.get_freeze_count() <= first, (first, gc.get_freeze_count())\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "ok"
