"""The bad-input matrix for caller audio and caller text: every case either works (and is what
it claims to be) or fails with one clear message that says what to fix.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pytest_livekit.agent.in_process import AgentTarget
from pytest_livekit.audio import (
    CALL_SAMPLE_RATE,
    MAX_CLIP_SECONDS,
    caller_text_problem,
    check_audio_file,
    header_frames,
    load_wav,
)
from pytest_livekit.errors import AudioInputError, ConfigError, PytestLivekitError
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
    assert header_frames(path) == rate  # read right, or a whole file would count as truncated
    audio = load_wav(path, text="hello")
    assert audio.pcm.dtype == np.int16 and audio.pcm.ndim == 1
    assert abs(len(audio.pcm) - CALL_SAMPLE_RATE) <= 2  # 1 s, whatever the rate
    assert np.abs(audio.pcm).max() > 0.3 * 32767  # the tone survived the conversion


# -- files whose header and body disagree -----------------------------------------------------
def _wav_bytes(pcm: np.ndarray, rate: int, *, data_size: int | None = None, trailer: bytes = b"") -> bytes:
    """A mono 16-bit WAV whose data chunk claims ``data_size`` bytes (default: the truth)."""
    import struct

    body = pcm.astype("<i2").tobytes()
    size = len(body) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + body + trailer
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _pcm(seconds: float, rate: int = 16_000) -> np.ndarray:
    return (_tone(rate, seconds)[:, 0] * 32767).astype(np.int16)


def _cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "FLOAT", "wav"), ("WAVEX", "PCM_16", "wav"),
     ("RF64", "PCM_16", "rf64"), ("AIFF", "PCM_16", "aiff")],
)
def test_a_truncated_file_is_an_error_with_what_the_header_promised(
    tmp_path: Path, fmt: str, subtype: str, suffix: str
) -> None:
    """A file cut short (an interrupted copy) would otherwise play part of the turn in silence:
    libsndfile reads what is there, and the ASR reference would not match what was spoken.
    """
    path = tmp_path / f"cut.{suffix}"
    sf.write(path, _tone(48_000, 2.0), 48_000, format=fmt, subtype=subtype)
    assert header_frames(path) == 96_000
    _cut(path)
    with pytest.raises(AudioInputError) as excinfo:
        load_wav(path)
    message = str(excinfo.value)
    held = sf.info(str(path)).frames
    assert 0.9 * 48_000 <= held <= 1.1 * 48_000
    assert f"{str(path)!r} is truncated: its header promises 96000 frames (2.00 s) but the file holds {held}" in message
    assert "copy or export it again" in message and message.count("\n") == 1


def test_the_truncation_hint_yields_a_file_that_loads(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    cut = tmp_path / "turn.wav"
    sf.write(cut, _tone(48_000, 2.0), 48_000, subtype="PCM_16")
    _cut(cut)
    with pytest.raises(AudioInputError) as excinfo:
        load_wav(cut)
    command = re.search(r'python -c "(.+)"\.$', str(excinfo.value))
    assert command is not None, str(excinfo.value)
    subprocess.run([sys.executable, "-c", command.group(1)], cwd=tmp_path, check=True, timeout=60)
    fixed = tmp_path / "turn-fixed.wav"
    assert header_frames(fixed) == sf.info(str(fixed)).frames
    assert abs(len(load_wav(fixed).pcm) - CALL_SAMPLE_RATE) < 0.01 * CALL_SAMPLE_RATE


def test_a_truncated_flac_cannot_be_read(tmp_path: Path) -> None:
    """FLAC carries its length in STREAMINFO and libsndfile refuses a cut stream itself."""
    path = tmp_path / "cut.flac"
    sf.write(path, _tone(48_000, 2.0), 48_000, format="FLAC")
    _cut(path)
    with pytest.raises(AudioInputError, match="cannot be read as audio"):
        load_wav(path)


@pytest.mark.parametrize(
    ("data_size", "trailer"),
    [
        (0xFFFFFFFF, b""),  # a streaming writer (ffmpeg/sox to a pipe): length left open
        (32_000 + 36, b""),  # a writer that counts header bytes into the data size
        (None, b"LIST" + (4).to_bytes(4, "little") + b"INFO"),  # a chunk after the data
    ],
    ids=["open-length", "overcounted-by-36-bytes", "trailing-chunk"],
)
def test_legitimate_header_variants_load_in_full(tmp_path: Path, data_size: int | None, trailer: bytes) -> None:
    path = tmp_path / "turn.wav"
    path.write_bytes(_wav_bytes(_pcm(1.0), 16_000, data_size=data_size, trailer=trailer))
    audio = load_wav(path)
    assert abs(len(audio.pcm) - CALL_SAMPLE_RATE) <= 2
    check_audio_file(path)


def test_a_truncated_streaming_wav_cannot_be_told_from_a_whole_one(tmp_path: Path) -> None:
    """With the length left open there is no promise to break: the part is played (documented
    limit of the check, not a silent loss the header could have told)."""
    path = tmp_path / "turn.wav"
    path.write_bytes(_wav_bytes(_pcm(2.0), 16_000, data_size=0xFFFFFFFF))
    _cut(path)
    assert header_frames(path) is None
    assert 0.9 * CALL_SAMPLE_RATE <= len(load_wav(path).pcm) <= 1.1 * CALL_SAMPLE_RATE


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


def _truncated(tmp_path: Path) -> Path:
    p = tmp_path / "cut.wav"
    sf.write(p, _tone(8_000, 2.0), 8_000, subtype="PCM_16")
    return _cut(p)


def _directory(tmp_path: Path) -> Path:
    p = tmp_path / "turn.wav"
    p.mkdir()
    return p


BAD_FILES = pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing, ["does not exist", "relative to the test file's folder"]),
        (_empty, ["cannot be read as audio", "re-export"]),
        (_no_samples, ["has no samples", "re-record"]),
        (_not_audio, ["cannot be read as audio", "WAV/FLAC/OGG"]),
        (_directory, ["cannot be read as audio"]),
        (_silent, ["holds no speech", "digital silence", "stay_silent"]),
        (_hour_long, ["3600 s long", f"at most {MAX_CLIP_SECONDS:.0f} s", "trim"]),
        (_truncated, ["is truncated: its header promises 16000 frames (2.00 s)", "export it again"]),
    ],
    ids=["missing", "empty", "no-samples", "not-audio", "directory", "silent", "one-hour", "truncated"],
)


@BAD_FILES
def test_bad_files_fail_with_what_to_fix(tmp_path: Path, make, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(AudioInputError) as excinfo:
        load_wav(path)
    message = str(excinfo.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert message.count("\n") <= 3  # one clear message, not a traceback dump


@BAD_FILES
def test_the_collection_time_check_says_the_same_as_loading(tmp_path: Path, make, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(AudioInputError) as at_run_time:
        load_wav(path)
    with pytest.raises(AudioInputError) as at_collection:
        check_audio_file(path)
    assert str(at_collection.value) == str(at_run_time.value)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "FLOAT"])
def test_the_collection_time_check_passes_what_loads(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "turn.wav"
    sf.write(path, _tone(8_000, 20.0, channels=6), 8_000, subtype=subtype)  # several blocks
    check_audio_file(path)
    load_wav(path)


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



async def _never_runs(ctx: object) -> None:
    """The agent of calls that fail before anyone joins: it is never started."""
    raise AssertionError("the call under test must fail before the agent starts")


_UNUSED_AGENT = AgentTarget(entrypoint=_never_runs, spec="tests.unit.test_bad_input:_never_runs")


def _call() -> object:
    from pytest_livekit.call.livekit_call import LivekitCall

    return LivekitCall("ws://127.0.0.1:9", "key", "s" * 32, agent=_UNUSED_AGENT)


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


@pytest.mark.parametrize("text", ["", "   ", "refund 🙂", "返金してください", "zero\u200bwidth"])
def test_the_collection_time_text_check_says_what_say_says(text: str) -> None:
    problem = caller_text_problem(text)
    assert problem is not None
    with pytest.raises(PytestLivekitError) as at_run_time:
        _call().synthesize(text)  # type: ignore[attr-defined]
    assert type(at_run_time.value) is type(problem)
    assert str(at_run_time.value) == str(problem)


@pytest.mark.parametrize("text", ["I want a refund for order 1234, please!", "Café crème", "...", "mm-hmm"])
def test_text_the_tts_can_try_has_no_collection_time_problem(text: str) -> None:
    assert caller_text_problem(text) is None  # "..." fails only once synthesised (no speech)


# -- the call API at run time, before anything is sent ----------------------------------------
def test_an_empty_say_through_the_call_fails_before_anything_is_sent() -> None:
    """``say("")`` on the call itself (not only ``synthesize``): the call has no caller here, so
    reaching the send path would fail differently (an AssertionError, "call not started").
    """
    import asyncio

    call = _call()
    with pytest.raises(ConfigError) as excinfo:
        asyncio.run(call.say(""))  # type: ignore[attr-defined]
    assert str(excinfo.value) == str(caller_text_problem(""))
    assert call.record.caller_turns == []  # type: ignore[attr-defined]
    assert [step["action"] for step in call.record.script] == ["say"]  # type: ignore[attr-defined]


def test_unsayable_text_through_the_call_fails_before_anything_is_sent() -> None:
    import asyncio

    call = _call()
    with pytest.raises(AudioInputError, match=r"cannot say '🙂' \(U\+1F642\)"):
        asyncio.run(call.say("refund 🙂"))  # type: ignore[attr-defined]
    assert call.record.caller_turns == []  # type: ignore[attr-defined]


def test_play_of_a_missing_file_through_the_call_names_the_resolved_path(tmp_path: Path) -> None:
    import asyncio

    from pytest_livekit.call.livekit_call import LivekitCall

    call = LivekitCall(
        "ws://127.0.0.1:9", "key", "s" * 32, agent=_UNUSED_AGENT, audio_root=tmp_path
    )
    with pytest.raises(AudioInputError) as excinfo:
        asyncio.run(call.play("audio/nope.wav"))
    assert f"caller audio file {str(tmp_path / 'audio' / 'nope.wav')!r} does not exist" in str(excinfo.value)
    assert call.record.caller_turns == []


def test_an_empty_barge_in_through_the_call_fails_before_waiting_for_the_agent() -> None:
    import asyncio

    with pytest.raises(ConfigError, match="needs some text to speak"):
        asyncio.run(_call().barge_in(""))  # type: ignore[attr-defined]


def test_say_speaks_plain_text() -> None:
    audio = _call().synthesize("I want a refund for order 1234")  # type: ignore[attr-defined]
    assert len(audio.pcm) > CALL_SAMPLE_RATE
