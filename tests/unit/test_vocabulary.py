"""Tests of the suite's offline STT vocabulary: the test scan, the merge, the model cache."""

from __future__ import annotations

import asyncio
import inspect
import textwrap
from pathlib import Path

import pytest

from pytest_livekit.errors import ConfigError
from pytest_livekit.thresholds import CallType
from pytest_livekit.vocabulary import (
    CALLER_TEXT_METHODS,
    GENERIC_MODEL,
    Phrase,
    SuiteVocabulary,
    VocabularyError,
    collect_say_literals,
    load_stt_phrases,
    parse_model_choice,
    scan_test_files,
)


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
    from pytest_livekit.call import LivekitCall

    for method, (position, default) in CALLER_TEXT_METHODS.items():
        params = list(inspect.signature(getattr(LivekitCall, method)).parameters.values())[1:]  # no self
        text = next(p for p in params if p.name == "text")
        if position is None:
            assert text.kind is inspect.Parameter.KEYWORD_ONLY, method
        else:
            assert params.index(text) == position and text.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if default is not None:
            assert text.default == default, method


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
