"""The bad-input matrix for caller audio and caller text: every case either works (and is what
it claims to be) or fails with one clear message that says what to fix.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pytest_livekit.audio import CALL_SAMPLE_RATE, MAX_CLIP_SECONDS, load_wav
from pytest_livekit.errors import AudioInputError
from pytest_livekit.offline.tts import unsayable_characters


def _tone(rate: int, seconds: float = 1.0, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = amplitude * np.sin(2 * np.pi * 440.0 * t)
    return np.repeat(x[:, None], channels, axis=1)


# -- files that must load -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subtype", "rate", "channels"),
    [
        ("PCM_U8", 16_000, 1),  # 8-bit
        ("PCM_24", 44_100, 2),  # 24-bit
        ("FLOAT", 48_000, 1),  # float
        ("DOUBLE", 22_050, 1),
        ("PCM_16", 48_000, 6),  # 6 channels (5.1)
        ("PCM_16", 8_000, 1),  # telephone rate
    ],
)
def test_formats_load_as_48k_mono_of_the_same_length(tmp_path: Path, subtype: str, rate: int, channels: int) -> None:
    path = tmp_path / "turn.wav"
    sf.write(path, _tone(rate, 1.0, channels), rate, subtype=subtype)
    audio = load_wav(path, text="hello")
    assert audio.pcm.dtype == np.int16 and audio.pcm.ndim == 1
    assert abs(len(audio.pcm) - CALL_SAMPLE_RATE) <= 2  # 1 s, whatever the rate
    assert np.abs(audio.pcm).max() > 0.3 * 32767  # the tone survived the conversion


def test_a_truncated_file_loads_what_it_has(tmp_path: Path) -> None:
    """A WAV cut short (a copy interrupted mid-file) plays the samples that are there."""
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(48_000, 2.0), 48_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    audio = load_wav(path)
    assert 0.9 * CALL_SAMPLE_RATE <= len(audio.pcm) <= 1.1 * CALL_SAMPLE_RATE


# -- files that must fail clearly -----------------------------------------------------------
def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.wav"


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    return p


def _no_samples(tmp_path: Path) -> Path:
    p = tmp_path / "header_only.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
    return p


def _not_audio(tmp_path: Path) -> Path:
    p = tmp_path / "notes.wav"
    p.write_text("refund order 1234, said twice\n" * 100)
    return p


def _silent(tmp_path: Path) -> Path:
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros(48_000), 48_000, subtype="PCM_16")
    return p


def _hour_long(tmp_path: Path) -> Path:
    """A 1 h WAV header over a short body: the duration check must not read the samples."""
    p = tmp_path / "hour.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8_000)
        w.writeframes(np.zeros(8_000 * 3600, dtype=np.int16).tobytes())
    return p


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing, ["does not exist", "relative to the test file's folder"]),
        (_empty, ["cannot be read as audio", "re-export"]),
        (_no_samples, ["has no samples", "re-record"]),
        (_not_audio, ["cannot be read as audio", "WAV/FLAC/OGG"]),
        (_silent, ["holds no speech", "digital silence", "stay_silent"]),
        (_hour_long, ["3600 s long", f"at most {MAX_CLIP_SECONDS:.0f} s", "trim"]),
    ],
    ids=["missing", "empty", "no-samples", "not-audio", "silent", "one-hour"],
)
def test_bad_files_fail_with_what_to_fix(tmp_path: Path, make, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(AudioInputError) as excinfo:
        load_wav(path)
    message = str(excinfo.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert message.count("\n") <= 3  # one clear message, not a traceback dump


def test_a_quiet_but_real_recording_is_not_silent(tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    sf.write(path, _tone(16_000, 1.0, amplitude=0.003), 16_000, subtype="PCM_16")  # about -50 dBFS
    assert len(load_wav(path).pcm) > 0


# -- caller text -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("I want a refund for order 1234, please!", []),
        ("Café crème, $12.50 — 20% off?", []),
        ("hello 🙂", ["🙂"]),
        ("日本語 please", ["日", "本", "語"]),
        ("zero\u200bwidth", ["\u200b"]),
        ("Привет", ["П", "р", "и", "в", "е", "т"]),
    ],
)
def test_unsayable_characters(text: str, bad: list[str]) -> None:
    assert unsayable_characters(text) == bad


def _call() -> object:
    from pytest_livekit.call import LivekitCall

    return LivekitCall("ws://127.0.0.1:9", "key", "s" * 32, agent="tests.agents.starter_agent:server")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["empty string", "stay_silent"]),
        ("   ", ["empty string"]),
        ("...", ["no audible speech", "stay_silent"]),
        ("refund 🙂", ["cannot say '🙂' (U+1F642)", "Latin letters"]),
        ("返金してください", ["cannot say '返' (U+8FD4)", "call.play"]),
    ],
    ids=["empty", "blank", "punctuation-only", "emoji", "japanese"],
)
def test_say_text_the_offline_tts_cannot_speak_fails_before_the_call_speaks(text: str, words: list[str]) -> None:
    from pytest_livekit.errors import PytestLivekitError

    with pytest.raises(PytestLivekitError) as excinfo:
        _call().synthesize(text)  # type: ignore[attr-defined]
    for word in words:
        assert word in str(excinfo.value)


def test_say_speaks_plain_text() -> None:
    audio = _call().synthesize("I want a refund for order 1234")  # type: ignore[attr-defined]
    assert len(audio.pcm) > CALL_SAMPLE_RATE
