"""Tests of the suite's offline STT vocabulary: the test scan, the merge, the model cache."""

from __future__ import annotations

import asyncio
import inspect
import textwrap
from pathlib import Path

import pytest

from pytest_livekit.agent.vocabulary import (
    CALLER_AUDIO_METHODS,
    CALLER_TEXT_METHODS,
    GENERIC_MODEL,
    Phrase,
    SuiteVocabulary,
    VocabularyError,
    caller_input_problems,
    collect_say_literals,
    load_stt_phrases,
    parse_model_choice,
    scan_test_files,
)
from pytest_livekit.errors import ConfigError
from pytest_livekit.metrics.thresholds import CallType


def _write(tmp_path: Path, name: str, source: str) -> Path:
    """Write a dedented test module and return its path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# -- the test scan --------------------------------------------------------------------------------
def test_scan_finds_literals_on_any_receiver_positional_and_keyword(tmp_path: Path) -> None:
    path = _write(tmp_path, "test_calls.py", """
        async def test_a(livekit_call, make_livekit_call):
            await livekit_call.say("Where is my order?")
            async with make_livekit_call() as c:
                await c.say(text="Can I speak to a human")
                await c.barge_in("stop please", offset_s=0.2)
                await c.backchannel("uh huh")
                await c.backchannel(offset_s=0.3)
                await c.play("audio/hello.wav", text="hello there")
                await c.play("audio/no_transcript.wav")
    """)

    scan = scan_test_files([path], root=tmp_path)

    assert [(lit.text, lit.method, lit.line) for lit in scan.literals] == [
        ("Where is my order?", "say", 3),
        ("Can I speak to a human", "say", 5),
        ("stop please", "barge_in", 6),
        ("uh huh", "backchannel", 7),
        ("mm-hmm", "backchannel", 8),
        ("hello there", "play", 9),
    ]
    assert scan.literals[4].default and scan.literals[4].where == "test_calls.py:8 backchannel() default text"
    assert scan.literals[0].where == "test_calls.py:3 say()"
    assert scan.skipped == () and scan.unparseable == () and scan.files == 1


def test_scan_skips_and_counts_fstrings_variables_and_expressions(tmp_path: Path) -> None:
    path = _write(tmp_path, "test_dynamic.py", """
        async def test_a(call, name, livekit_call_type):
            await call.say(f"hello {name}")
            await call.say(name)
            await call.say("a " + "b")
            await call.say(*["splatted"])
            await call.say(**{"text": "kw"})
            for line in livekit_call_type.script:   # collected from the call types instead
                await call.say(line)
    """)

    scan = scan_test_files([path])

    assert scan.literals == ()
    assert [(s.line, s.reason) for s in scan.skipped] == [
        (3, "f-string"), (4, "variable 'name'"), (5, "expression"), (6, "*args"), (7, "**kwargs"),
    ]
    assert str(scan.skipped[0]).endswith("test_dynamic.py:3 say(): f-string")


def test_scan_resolves_constants_loops_and_parametrize(tmp_path: Path) -> None:
    path = _write(tmp_path, "test_resolved.py", """
        import pytest

        REFUND = "I want a refund"
        GREETINGS = ["hello", "good morning"]

        async def test_constant(call):
            await call.say(REFUND)

        async def test_loops(call):
            for phrase in ["yes", "no"]:
                await call.say(phrase)
            for greeting in GREETINGS:
                await call.say(greeting)
            local = "thank you"
            await call.say(local)

        @pytest.mark.parametrize("text", ["cancel it", pytest.param("stop it", id="stop")])
        async def test_param(call, text):
            await call.say(text)

        @pytest.mark.parametrize("text, expected", [("track my parcel", 1), ("where is it", 2)])
        async def test_param_pairs(call, text, expected):
            await call.say(text)

        class TestGrouped:
            REFUND = "shadowed in the class, invisible to methods"

            async def test_method(self, call):
                await call.say(REFUND)

        async def test_shadowed(call, REFUND):
            await call.say(REFUND)   # the parameter, not the module constant
    """)

    scan = scan_test_files([path])

    assert [lit.text for lit in scan.literals] == [
        "I want a refund", "yes", "no", "hello", "good morning", "thank you",
        "cancel it", "stop it", "track my parcel", "where is it", "I want a refund",
    ]
    assert [(s.line, s.reason) for s in scan.skipped] == [(33, "variable 'REFUND'")]


def test_scan_ignores_agent_session_say(tmp_path: Path) -> None:
    path = _write(tmp_path, "test_agent.py", """
        async def test_a(session, call):
            await session.say("Hello, I am the agent with order 1234")
            await self.session.say("agent speech")
            await call.say("caller speech")
    """)

    assert collect_say_literals([path]) == ["caller speech"]


def test_unparseable_and_missing_files_are_reported_not_raised(tmp_path: Path) -> None:
    broken = _write(tmp_path, "test_broken.py", "async def test_a(call):\n    await call.say('x'\n")
    binary = tmp_path / "test_binary.py"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    good = _write(tmp_path, "test_good.py", "async def test_b(call):\n    await call.say('fine')\n")

    scan = scan_test_files([broken, binary, tmp_path / "test_missing.py", good], root=tmp_path)

    assert [lit.text for lit in scan.literals] == ["fine"]
    assert [path for path, _ in scan.unparseable] == ["test_broken.py", "test_binary.py", "test_missing.py"]
    assert scan.unparseable[0][1].startswith("SyntaxError")
    assert scan.files == 1


def test_directories_are_searched_for_test_modules_and_conftest(tmp_path: Path) -> None:
    _write(tmp_path, "tests/test_one.py", "async def test(call):\n    await call.say('one')\n")
    _write(tmp_path, "tests/sub/two_test.py", "async def test(call):\n    await call.say('two')\n")
    _write(tmp_path, "tests/conftest.py", "async def helper(call):\n    await call.say('three')\n")
    _write(tmp_path, "tests/helpers.py", "async def helper(call):\n    await call.say('not a test file')\n")
    _write(tmp_path, "tests/.venv/test_dep.py", "async def test(call):\n    await call.say('vendored')\n")

    scan = scan_test_files([tmp_path / "tests", tmp_path / "tests" / "test_one.py"], root=tmp_path)

    assert sorted(lit.text for lit in scan.literals) == ["one", "three", "two"]
    assert scan.files == 3  # test_one.py given twice, scanned once


def test_caller_text_methods_match_livekit_call() -> None:
    from pytest_livekit.call.livekit_call import LivekitCall

    for method, (position, default) in CALLER_TEXT_METHODS.items():
        params = list(inspect.signature(getattr(LivekitCall, method)).parameters.values())[1:]  # no self
        text = next(p for p in params if p.name == "text")
        if position is None:
            assert text.kind is inspect.Parameter.KEYWORD_ONLY, method
        else:
            assert params.index(text) == position and text.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if default is not None:
            assert text.default == default, method


def test_caller_audio_methods_match_livekit_call() -> None:
    from pytest_livekit.call.livekit_call import LivekitCall

    for method, (position, keyword) in CALLER_AUDIO_METHODS.items():
        params = list(inspect.signature(getattr(LivekitCall, method)).parameters.values())[1:]
        assert params[position].name == keyword, method
        assert params[position].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


# -- caller input the call would refuse -----------------------------------------------------------
def _tone_file(path: Path, amplitude: float = 0.5) -> Path:
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, amplitude * np.sin(np.arange(8_000) / 5.0), 8_000, subtype="PCM_16")
    return path


def test_scan_finds_literal_audio_paths(tmp_path: Path) -> None:
    path = _write(tmp_path, "tests/test_audio.py", """
        from pathlib import Path

        HELLO = "audio/hello.wav"

        async def test_a(call, livekit_session, tmp_path, name):
            await call.play("audio/a.wav", text="hello")
            await call.play(path="audio/b.wav")
            await call.play(Path("audio/c.wav"))
            await call.play(HELLO)
            await call.play(tmp_path / "computed.wav")   # computed: left to run time, silently
            await call.play(name)
            await livekit_session.play("not a caller.wav")
    """)

    scan = scan_test_files([path], root=tmp_path)

    assert [(a.audio, a.line, a.method) for a in scan.audio] == [
        ("audio/a.wav", 7, "play"), ("audio/b.wav", 8, "play"), ("audio/c.wav", 9, "play"),
        ("audio/hello.wav", 10, "play"),
    ]
    assert scan.audio[0].where == "tests/test_audio.py:7 play('audio/a.wav')"
    assert scan.audio[0].folder == str((tmp_path / "tests").resolve()) and not scan.audio[0].conftest
    assert scan.skipped == ()  # paths are not vocabulary: nothing to report as skipped
    assert [lit.text for lit in scan.literals] == ["hello"]


def test_scan_marks_calls_where_the_test_expects_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "test_expected.py", """
        import pytest

        async def test_a(call):
            await call.say("")
            with pytest.raises(ValueError):
                await call.say("")
            try:
                await call.play("nope.wav")
            except Exception:
                pass
            try:
                await call.say("")
            finally:
                pass

        @pytest.mark.xfail(reason="known")
        async def test_b(call):
            await call.say("")

        @pytest.mark.xfail
        class TestC:
            async def test_c(self, call):
                await call.say("")
    """)

    scan = scan_test_files([path])

    assert [(lit.line, lit.expects_error) for lit in scan.literals] == [
        (5, False), (7, True), (13, False), (19, True), (24, True),
    ]
    assert [(a.line, a.expects_error) for a in scan.audio] == [(9, True)]


def test_caller_input_problems_name_the_line_and_say_what_the_call_says(tmp_path: Path) -> None:
    from pytest_livekit.audio import caller_text_problem

    _tone_file(tmp_path / "tests" / "audio" / "ok.wav")
    _tone_file(tmp_path / "shared" / "root.wav")  # found under the rootdir (livekit_session.new_call)
    _tone_file(tmp_path / "tests" / "quiet.wav", amplitude=0.0)
    (tmp_path / "tests" / "notes.wav").write_text("not audio")
    path = _write(tmp_path, "tests/test_inputs.py", """
        import pytest

        async def test_a(call):
            await call.say("I want a refund")
            await call.say("")
            await call.barge_in("stop 🙂")
            await call.backchannel()
            await call.play("audio/ok.wav", text="日本語")   # a transcript is never synthesised
            await call.play("shared/root.wav")
            await call.play("audio/missing.wav")
            await call.play("quiet.wav")
            await call.play("notes.wav")
            await call.play("/no/such/dir/turn.wav")
            with pytest.raises(Exception):
                await call.say("")
    """)

    problems = caller_input_problems(scan_test_files([path], root=tmp_path), root=tmp_path)

    wheres = [where for where, _ in problems]
    assert wheres == [
        "tests/test_inputs.py:6 say()",
        "tests/test_inputs.py:7 barge_in()",
        "tests/test_inputs.py:11 play('audio/missing.wav')",
        "tests/test_inputs.py:12 play('quiet.wav')",
        "tests/test_inputs.py:13 play('notes.wav')",
        "tests/test_inputs.py:14 play('/no/such/dir/turn.wav')",
    ]
    messages = [message for _, message in problems]
    assert messages[0] == str(caller_text_problem(""))
    assert messages[1] == str(caller_text_problem("stop 🙂"))
    missing = (tmp_path / "tests" / "audio" / "missing.wav").resolve()
    assert messages[2].startswith(f"caller audio file {str(missing)!r} does not exist.")
    assert "holds no speech (digital silence" in messages[3]
    assert "cannot be read as audio" in messages[4]
    assert "'/no/such/dir/turn.wav' does not exist" in messages[5]


def test_a_relative_path_in_a_conftest_is_checked_only_where_found(tmp_path: Path) -> None:
    (tmp_path / "tests" / "notes.wav").parent.mkdir(parents=True)
    (tmp_path / "tests" / "notes.wav").write_text("not audio")
    path = _write(tmp_path, "tests/conftest.py", """
        async def helper(call):
            await call.play("per-test-folder.wav")   # resolves against each test's own folder
            await call.play("notes.wav")
    """)

    problems = caller_input_problems(scan_test_files([path], root=tmp_path), root=tmp_path)

    assert [where for where, _ in problems] == ["tests/conftest.py:4 play('notes.wav')"]


def test_collect_reports_every_refused_input_and_the_rest_of_the_vocabulary(tmp_path: Path) -> None:
    _write(tmp_path, "tests/test_calls.py", """
        async def test_a(call):
            await call.say("")
            await call.say("返金してください")
            await call.say("order zqxjkv please")
            await call.play("gone.wav")
    """)

    with pytest.raises(VocabularyError) as info:
        SuiteVocabulary.collect(test_paths=[tmp_path / "tests"], root=tmp_path)

    message = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert message.startswith("3 caller input(s) in the collected tests would fail their call at run time")
    assert "\n  tests/test_calls.py:3 say(): say() needs some text to speak; got an empty string.\n" in message
    assert "\n      Hint: for a caller who says nothing, use 'await call.stay_silent(seconds)'." in message
    assert "tests/test_calls.py:4 say(): say('返金してください'): the offline English TTS cannot say '返'" in message
    assert "tests/test_calls.py:6 play('gone.wav'): caller audio file" in message
    # the rest of the vocabulary is still checked, in the same message; the refused text is not
    # part of it (no second error about its "words")
    assert "'zqxjkv':" in message and "返金" not in message.split("word(s) the pronunciation")[-1]


def test_refused_text_under_pytest_raises_is_left_out_of_the_vocabulary(tmp_path: Path) -> None:
    _write(tmp_path, "test_faults.py", """
        import pytest

        async def test_a(call):
            await call.say("where is my order")
            with pytest.raises(Exception):
                await call.say("返金してください")
            with pytest.raises(Exception):
                await call.say("")
    """)

    vocab = SuiteVocabulary.collect(test_paths=[tmp_path / "test_faults.py"], root=tmp_path)

    assert vocab.texts == ("where is my order",)
    vocab.check()


# -- the setting ----------------------------------------------------------------------------------
def test_phrase_file_format_and_mixed_setting(tmp_path: Path) -> None:
    (tmp_path / "phrases.txt").write_text(
        "# what callers say\n\ncancel my subscription\nthank you  # end-of-line comment\n   \n",
        encoding="utf-8",
    )

    assert load_stt_phrases(["good bye", "phrases.txt"], root=tmp_path) == [
        ("good bye", "livekit_stt_phrases"),
        ("cancel my subscription", "phrases.txt:3 (livekit_stt_phrases)"),
        ("thank you", "phrases.txt:4 (livekit_stt_phrases)"),
    ]
    assert load_stt_phrases("phrases.txt", root=tmp_path)[0][0] == "cancel my subscription"
    assert load_stt_phrases(tmp_path / "phrases.txt")[1][0] == "thank you"
    assert load_stt_phrases("just one phrase", root=tmp_path) == [("just one phrase", "livekit_stt_phrases")]
    assert load_stt_phrases(None) == [] and load_stt_phrases([]) == []


def test_missing_phrase_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match=r"cannot read the phrase file .*nope\.txt") as info:
        load_stt_phrases(["nope.txt"], root=tmp_path)
    assert isinstance(info.value, ConfigError)


# -- the vocabulary -------------------------------------------------------------------------------
def _suite(tmp_path: Path) -> SuiteVocabulary:
    """A vocabulary from all three sources, with overlaps."""
    _write(tmp_path, "tests/test_calls.py", """
        async def test_a(call):
            await call.say("Where is my order?")
            await call.say("Thank you, goodbye!")
    """)
    (tmp_path / "phrases.txt").write_text("thank you goodbye\nopening hours\n", encoding="utf-8")
    call_types = {
        "refund": CallType("refund", script=("I want a refund", "Yes please")),
        "status": CallType("status", script=("Where is my order",)),
    }
    return SuiteVocabulary.collect(
        call_types=call_types, stt_phrases=["can I speak to a human", "phrases.txt"],
        test_paths=[tmp_path / "tests"], root=tmp_path,
    )


def test_collect_merges_normalises_and_keeps_a_stable_order(tmp_path: Path) -> None:
    vocab = _suite(tmp_path)

    assert vocab.texts == (
        "i want a refund", "yes please", "where is my order", "can i speak to a human",
        "thank you goodbye", "opening hours",
    )
    assert vocab.phrases[2] == Phrase(
        "where is my order", ("call type 'status' script", "tests/test_calls.py:3 say()")
    )
    assert vocab.phrases[4].sources == ("phrases.txt:1 (livekit_stt_phrases)", "tests/test_calls.py:4 say()")
    assert vocab.scan.files == 1


def test_digest_is_stable_and_depends_only_on_the_phrase_set() -> None:
    a = SuiteVocabulary.from_phrases(["where is my order", "hello"])
    same = SuiteVocabulary.from_phrases([("Hello!", "elsewhere"), ("Where is my order?", "x.py:1")])
    other = SuiteVocabulary.from_phrases(["where is my order", "hello there"])

    assert a.digest == same.digest  # order, spelling and sources do not matter
    assert a.digest != other.digest
    assert len(a.digest) == 64
    # Pinned: a digest change must be deliberate (it rebuilds every cached model).
    assert SuiteVocabulary.from_phrases(["hello"]).digest == (
        "3e68accb1414784618056c28bab9b11db20219829c794b3fa97951896c85bc36"
    )


def test_missing_words_error_lists_words_phrases_and_sources(tmp_path: Path) -> None:
    _write(tmp_path, "test_digits.py", "async def test(call):\n    await call.say('order 1234 please')\n")
    vocab = SuiteVocabulary.collect(
        call_types=[CallType("refund", script=("refund my zqxjkv",))],
        stt_phrases=["order 1234 please"],
        test_paths=[tmp_path / "test_digits.py"], root=tmp_path,
    )

    with pytest.raises(VocabularyError) as info:
        vocab.build_model(tmp_path / "cache")

    message = str(info.value)
    assert "2 word(s)" in message
    assert "'1234':" in message and "'zqxjkv':" in message
    assert "\"order 1234 please\" from livekit_stt_phrases; test_digits.py:2 say()" in message
    assert "\"refund my zqxjkv\" from call type 'refund' script" in message
    assert "Hint: spell numbers" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_json_round_trip_and_file_transport(tmp_path: Path) -> None:
    vocab = _suite(tmp_path)

    again = SuiteVocabulary.from_json(vocab.to_json())
    assert again == vocab and again.digest == vocab.digest and again.phrases[2].sources == vocab.phrases[2].sources

    path = vocab.write(tmp_path / "run" / "vocabulary.json")
    assert SuiteVocabulary.read(path) == vocab


def test_from_json_rejects_foreign_or_tampered_data() -> None:
    with pytest.raises(VocabularyError, match="not a pytest-livekit STT vocabulary"):
        SuiteVocabulary.from_json('{"something": "else"}')
    with pytest.raises(VocabularyError, match="not a pytest-livekit STT vocabulary"):
        SuiteVocabulary.from_json("not json")
    data = SuiteVocabulary.from_phrases(["hello"]).to_json().replace('"hello"', '"goodbye"')
    with pytest.raises(VocabularyError, match="digest does not match"):
        SuiteVocabulary.from_json(data)


def test_model_is_built_once_then_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_livekit.offline import stt as offline_stt

    builds: list[tuple[str, ...]] = []
    real_build = offline_stt.build_domain_lm

    def counting_build(phrases, path):  # type: ignore[no-untyped-def]
        builds.append(tuple(phrases))
        return real_build(phrases, path)

    monkeypatch.setattr(offline_stt, "build_domain_lm", counting_build)
    vocab = SuiteVocabulary.from_phrases(["where is my order", "can i speak to a human"])
    cache = tmp_path / "cache"

    first = vocab.build_model(cache)
    second = SuiteVocabulary.from_json(vocab.to_json()).build_model(cache)  # e.g. a worker process

    assert first == second == vocab.model_path(cache) and first.is_file()
    assert builds == [("where is my order", "can i speak to a human")]
    assert [p.name for p in cache.iterdir()] == [first.name]  # no temporary file left behind
    assert "\\data\\" in first.read_text()


def test_empty_vocabulary_cannot_build_a_domain_model(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="vocabulary is empty"):
        SuiteVocabulary().build_model(tmp_path)


def test_model_choice(tmp_path: Path) -> None:
    vocab = SuiteVocabulary.from_phrases(["hello"])

    assert vocab.language_model(tmp_path, GENERIC_MODEL) is None  # SphinxSTT's generic default
    assert vocab.language_model(tmp_path, " Domain ") == vocab.model_path(tmp_path)
    assert parse_model_choice(None) == "domain"
    with pytest.raises(VocabularyError, match="unknown STT model 'tiny'"):
        parse_model_choice("tiny")


def test_built_model_recognises_a_suite_phrase(tmp_path: Path) -> None:
    from pytest_livekit.offline.tts import synthesize_speech

    vocab = SuiteVocabulary.from_phrases(["where is my order", "can i speak to a human", "yes please"])
    stt = vocab.make_stt(tmp_path)
    try:
        assert stt.language_model == vocab.model_path(tmp_path)
        assert stt.transcribe_pcm(*synthesize_speech("can I speak to a human")) == "can i speak to a human"
    finally:
        asyncio.run(stt.aclose())
