"""Caller input the call would refuse, found at collection (pytester): an empty ``say("")``, text
the offline TTS cannot say, and ``play("x.wav")`` files that are missing, not audio, too long,
truncated or silent. Each is named with its ``file:line`` and the message the call itself would
raise; the run stops once, before any server starts, with every problem in one message.

No inner run places a real call: the conftest below replaces ``livekit_call`` with an unstarted
:class:`~pytest_livekit.call.livekit_call.LivekitCall` (its ``say``/``play`` check their input before they
need a caller), so a check that failed to stop a run could not start a server either.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]

PYPROJECT = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
"""

# An unstarted call: say()/play() validate their input first, and anything past that would fail
# with "call not started" (an AssertionError), never reach a server.
CONFTEST = """
from pathlib import Path

import pytest

from pytest_livekit.call.livekit_call import LivekitCall


@pytest.fixture
def livekit_call(request):
    return LivekitCall("ws://127.0.0.1:9", "key", "s" * 32, agent="no_agent:server",
                       audio_root=Path(str(request.path)).parent)
"""


def _tone(path: Path, *, seconds: float = 0.5, rate: int = 8_000, channels: int = 1, subtype: str = "PCM_16",
          amplitude: float = 0.5) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = amplitude * np.sin(2 * np.pi * 440.0 * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(x[:, None], channels, axis=1), rate, subtype=subtype)
    return path


def _suite(pytester: pytest.Pytester, tests: str, **more: str) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_turns=tests, **more)


def _the_error(result: pytest.RunResult) -> str:
    """The usage error's text; asserts it is said exactly once."""
    err = result.stderr.str()
    assert err.count("ERROR: pytest-livekit:") == 1, err
    return err


def test_refused_caller_text_is_one_usage_error_naming_each_line_and_the_fix(pytester: pytest.Pytester) -> None:
    _suite(pytester, """
        import pytest

        async def test_fine(livekit_call):
            await livekit_call.say("Where is my order")

        async def test_empty(livekit_call):
            await livekit_call.say("")

        async def test_other_scripts(livekit_call):
            await livekit_call.barge_in("stop 🙂")
            await livekit_call.backchannel(text="Привет")

        async def test_blank(livekit_call):
            await livekit_call.say("   ")
    """)
    result = pytester.runpytest()  # a real run, not --co: it stops at collection
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-livekit:",
        "*4 caller input(s) in the collected tests would fail their call at run time*",
        "  test_turns.py:7 say(): say() needs some text to speak; got an empty string.",
        "      Hint: for a caller who says nothing, use 'await call.stay_silent(seconds)'.",
        "  test_turns.py:10 barge_in(): say('stop 🙂'): the offline English TTS cannot say '🙂' (U+1F642)*",
        "      Hint: write the words out in Latin letters, or play a recording with*",
        "  test_turns.py:11 backchannel(): say('Привет'): the offline English TTS cannot say 'П' (U+041F)*",
        "      Hint: *",
        "  test_turns.py:14 say(): say() needs some text to speak; got an empty string.",
        "      Hint: *",
    ])
    err = _the_error(result)
    assert "word(s) the pronunciation dictionary lacks" not in err  # no second error about 'Привет'
    assert "where is my order" not in err.lower()
    result.stdout.fnmatch_lines(["*no tests ran*"])
    assert "passed" not in result.stdout.str() and "livekit-server" not in result.stdout.str()


def test_refused_audio_files_are_named_with_their_line_and_the_call_s_own_message(pytester: pytest.Pytester) -> None:
    audio = pytester.path / "audio"
    _tone(audio / "ok.wav")
    _tone(audio / "telephone_8bit.wav", subtype="PCM_U8")
    _tone(audio / "surround_24bit.wav", rate=48_000, channels=6, subtype="PCM_24")
    _tone(audio / "float.wav", rate=16_000, subtype="FLOAT")
    _tone(audio / "silent.wav", amplitude=0.0)
    (audio / "notes.wav").write_text("refund order 1234\n" * 50)
    (audio / "empty.wav").write_bytes(b"")
    cut = _tone(audio / "cut.wav", seconds=2.0)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with wave.open(str(audio / "hour.wav"), "wb") as w:  # 1 h of 8-bit 8 kHz: 28.8 MB, never read
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8_000)
        w.writeframes(bytes([128]) * (8_000 * 3600))
    _suite(pytester, """
        from pathlib import Path

        GREETING = "audio/ok.wav"

        async def test_good_files(livekit_call):
            await livekit_call.play(GREETING, text="hello")
            await livekit_call.play("audio/telephone_8bit.wav")
            await livekit_call.play(Path("audio/surround_24bit.wav"))
            await livekit_call.play(path="audio/float.wav")

        async def test_bad_files(livekit_call, tmp_path):
            await livekit_call.play("audio/missing.wav")
            await livekit_call.play("audio/notes.wav")
            await livekit_call.play("audio/empty.wav")
            await livekit_call.play("audio/silent.wav")
            await livekit_call.play("audio/cut.wav")
            await livekit_call.play("audio/hour.wav")
            await livekit_call.play(tmp_path / "made_at_run_time.wav")   # computed: run time's to check
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    folder = str(audio)
    result.stderr.fnmatch_lines([
        "*6 caller input(s)*",
        f"  test_turns.py:12 play('audio/missing.wav'): caller audio file '{folder}/missing.wav' does not exist.",
        "      Hint: paths are resolved relative to the test file's folder*",
        f"  test_turns.py:13 play('audio/notes.wav'): caller audio file '{folder}/notes.wav' cannot be read as audio:*",
        "      Hint: give a WAV/FLAC/OGG file*",
        f"  test_turns.py:14 play('audio/empty.wav'): caller audio file '{folder}/empty.wav' cannot be read as audio:*",
        "      Hint: *",
        f"  test_turns.py:15 play('audio/silent.wav'): caller audio file '{folder}/silent.wav' holds no speech "
        "(digital silence, 0.5 s).",
        "      Hint: for a caller who says nothing, use 'await call.stay_silent(seconds)'*",
        f"  test_turns.py:16 play('audio/cut.wav'): caller audio file '{folder}/cut.wav' is truncated: its header "
        "promises 16000 frames (2.00 s) but the file holds 7989 (1.00 s).",
        "      Hint: the file was cut short*sf.write('cut-fixed.wav', *sf.read('cut.wav'))*",
        f"  test_turns.py:17 play('audio/hour.wav'): caller audio file '{folder}/hour.wav' is 3600 s long; a caller "
        "clip is one turn (at most 600 s).",
        "      Hint: cut the turn you want out of it*",
    ])
    err = _the_error(result)
    for good in ("ok.wav", "telephone_8bit", "surround_24bit", "float.wav", "made_at_run_time"):
        assert good not in err


def test_problems_of_every_file_and_the_vocabulary_come_in_one_message(pytester: pytest.Pytester) -> None:
    _suite(
        pytester,
        """
        async def test_a(livekit_call):
            await livekit_call.say("")
        """,
        test_more="""
        async def test_b(livekit_call):
            await livekit_call.play("gone.wav")
            await livekit_call.say("the zebra zxqv")
        """,
    )
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*2 caller input(s)*",
        "  test_more.py:2 play('gone.wav'): caller audio file '*gone.wav' does not exist.",
        "      Hint: *",
        "  test_turns.py:2 say(): say() needs some text to speak; got an empty string.",
        "      Hint: *",
        "The offline STT vocabulary has 1 word(s) the pronunciation dictionary lacks*",
        "  'zxqv':",
        '    "the zebra zxqv" from test_more.py:3 say()',
    ])
    _the_error(result)


def test_input_a_test_expects_to_fail_runs_and_fails_there_with_the_same_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests of the error itself (``pytest.raises``, ``try``/``except``, ``xfail``) are not
    refused at collection: they run, next to the file's other tests, and see the call's message.
    """
    _suite(pytester, """
        import pytest

        from pytest_livekit.errors import AudioInputError, ConfigError

        async def test_empty_say_is_refused(livekit_call):
            with pytest.raises(ConfigError, match=r"say\\(\\) needs some text to speak; got an empty string"):
                await livekit_call.say("")

        async def test_missing_file_is_refused(livekit_call):
            try:
                await livekit_call.play("missing.wav")
            except AudioInputError as exc:
                assert "missing.wav' does not exist" in str(exc)
            else:
                raise AssertionError("play() of a missing file did not fail")

        @pytest.mark.xfail(raises=AudioInputError, strict=True)
        async def test_emoji(livekit_call):
            await livekit_call.say("hello 🙂")

        def test_plain():
            pass
    """)
    # the subprocess imports this checkout's plugin, not whichever one is installed
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, xfailed=1)
    assert "ERROR: pytest-livekit" not in result.stderr.str()


def test_a_run_stopped_by_refused_input_keeps_earlier_calls(pytester: pytest.Pytester) -> None:
    old = pytester.path / ".livekit" / "calls" / "test_old.test_call"
    old.mkdir(parents=True)
    (old / "trace.json").write_text("{}")
    _suite(pytester, """
        async def test_a(livekit_call):
            await livekit_call.say("")
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (old / "trace.json").exists()


def test_only_files_of_tests_that_place_calls_are_checked(pytester: pytest.Pytester) -> None:
    _suite(pytester, """
        def test_not_a_call(call=None):
            if call:
                call.say("")
                call.play("missing.wav")
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
