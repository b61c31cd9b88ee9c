"""Offline/real providers, the offline LLM's declared rules and the STT vocabulary as users meet
them (pytester): the header, usage errors at start and at collection, the vocabulary collected
from the suite, and the placeholder credentials of offline mode.

Everything here collects (``--co``) or runs trivial inner tests: no call is placed.
"""

from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING

import pytest

# Imported here, before any in-process inner run: parsing rules and checking words imports
# livekit-agents (and numpy), which pytester drops from sys.modules after each inner run, and numpy
# cannot be imported twice in one process.
import pytest_livekit.offline.llm  # noqa: F401
import pytest_livekit.offline.stt  # noqa: F401
from pytest_livekit.agent.substitution import PLACEHOLDER
from pytest_livekit.pytest_run.keys import SETTINGS_KEY

if TYPE_CHECKING:
    from pytest_livekit.config import LivekitSettings

WARNING = "WARNING: calls use the agent's real, paid AI services and your keys"


# -- the header ------------------------------------------------------------------------------------
def test_header_says_offline_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["livekit: * · providers=offline (default) · limits=fail (default) · *"])
    assert "WARNING" not in result.stdout.str()


def test_header_says_real_from_cli_with_the_paid_services_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_providers = offline\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co", "--livekit-providers=real")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"livekit: * · providers=real (cli) - {WARNING} · limits=*"])


def test_header_says_real_from_ini_with_the_paid_services_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_providers = real\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"livekit: * · providers=real (ini) - {WARNING} · *"])


def test_header_says_offline_from_cli_without_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_providers = real\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co", "--livekit-providers=offline")
    result.stdout.fnmatch_lines(["livekit: * · providers=offline (cli) · *"])
    assert "WARNING" not in result.stdout.str()


# -- invalid values --------------------------------------------------------------------------------
def test_invalid_cli_value_lists_the_choices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co", "--livekit-providers=cloud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--livekit-providers: invalid choice: 'cloud' (choose from *offline*real*)*"])


def test_invalid_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_providers = cloud\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*livekit_providers = 'cloud' is not valid. Valid values: offline, real."])


GROUP_RULE = (
    '{"when": "order (?P<order_id>[a-z ]+)", '
    '"call": [{"tool": "lookup_order", "arguments": {"order_id": "{orderid:digits}"}}]}'
)


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        pytest.param(
            'providers="cloud"',
            "test_x.py::test_x: providers='cloud' is not valid. Valid values: 'offline', 'real'.",
            id="providers",
        ),
        pytest.param(
            'stt_model="open"',
            "test_x.py::test_x: stt_model='open' is not valid. Valid values: 'domain', 'generic'.",
            id="stt_model",
        ),
        pytest.param(
            'default_reply="  "',
            "test_x.py::test_x: default_reply must be a non-empty string, got '  '.",
            id="default_reply-blank",
        ),
        pytest.param(
            "default_reply=3",
            "test_x.py::test_x: default_reply must be a non-empty string, got 3.",
            id="default_reply-not-text",
        ),
        pytest.param(
            'llm_rules={"when": "hi", "say": "Hello."}',
            "test_x.py::test_x: llm_rules must be a list of rules (dicts or Rule objects), got *",
            id="llm_rules-not-a-list",
        ),
        pytest.param(
            'llm_rules=[{"when": "refund", "sya": "Let me check."}]',
            "test_x.py::test_x: @pytest.mark.livekit(llm_rules=...)[[]0] (when = 'refund'): "
            "unknown key 'sya'; valid keys: when, say, call, then.",
            id="llm_rules-unknown-key",
        ),
        pytest.param(
            'llm_rules=[{"when": "hi", "say": "Hello."}, {"say": "Goodbye."}]',
            "test_x.py::test_x: @pytest.mark.livekit(llm_rules=...)[[]1]: 'when' is missing "
            "(a regular expression for what the caller says).",
            id="llm_rules-missing-when",
        ),
        pytest.param(
            f"llm_rules=[{GROUP_RULE}]",
            "test_x.py::test_x: @pytest.mark.livekit(llm_rules=...)[[]0] "
            "(when = 'order (?P<order_id>[[]a-z ]+)').call[[]0].arguments.order_id: "
            "'{orderid:digits}' names no group of the pattern; groups: order_id*",
            id="llm_rules-placeholder-names-no-group",
        ),
    ],
)
def test_invalid_marker_values_fail_at_collection(pytester: pytest.Pytester, marker: str, expected: str) -> None:
    pytester.makepyfile(
        test_x=f"""
        import pytest

        @pytest.mark.livekit({marker})
        def test_x():
            pass
        """
    )
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-livekit:", expected])
    assert "Traceback" not in result.stderr.str()


def test_valid_marker_values_collect(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x=f"""
        import pytest
        from pytest_livekit.offline.llm import Rule

        @pytest.mark.livekit(
            providers="real", stt_model="generic", default_reply="Sure.",
            llm_rules=[{GROUP_RULE.replace("orderid", "order_id")}, Rule("human", reply="One moment.")],
        )
        def test_x():
            pass
        """
    )
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


def test_bad_call_type_rule_is_a_usage_error_at_start(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest_livekit.call_types.refund]
        script = ["I want a refund"]

        [[tool.pytest_livekit.call_types.refund.llm.rules]]
        when = "refund"
        sya = "Let me check."
        """
    )
    pytester.makepyfile("def test_x(): pass")  # no livekit test needed: said at start
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*tool.pytest_livekit.call_types.refund.llm.rules[[]0] (when = 'refund'): unknown key 'sya'; "
            "valid keys: when, say, call, then."
        ]
    )


def test_bad_run_wide_llm_table_is_a_usage_error_at_start(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest_livekit.llm]
        default_reply = "Okay."

        [[tool.pytest_livekit.llm.rules]]
        say = "Hello."
        """
    )
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tool.pytest_livekit.llm.rules[[]0]: 'when' is missing*"])


# -- the vocabulary --------------------------------------------------------------------------------
def test_word_missing_from_the_dictionary_fails_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        async def test_x(livekit_call):
            await livekit_call.say("I want a refund")
            await livekit_call.say("the zebra zxqv")
        """
    )
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-livekit:",
            "offline STT vocabulary: The offline STT vocabulary has 1 word(s) the pronunciation "
            "dictionary lacks*",
            "  'zxqv':",
            '    "the zebra zxqv" from test_x.py:3 say()',
            "Hint: *",
        ]
    )
    assert "refund" not in result.stderr.str()


def test_vocabulary_is_not_checked_without_livekit_tests(pytester: pytest.Pytester) -> None:
    """Only the modules of tests that place calls are scanned."""
    pytester.makepyfile(
        test_x="""
        def test_x(call=None):
            if call:
                call.say("the zebra zxqv")
        """
    )
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


VALID_SUITE_PYPROJECT = """
[tool.pytest.ini_options]
livekit_stt_phrases = ["Where is my order?", "phrases.txt"]

[tool.pytest_livekit.call_types.refund]
script = ["I want a refund, please.", "Order one two three"]

[tool.pytest_livekit.call_types.booking]
script = ["Book a table for two"]
"""


def _collect_settings(pytester: pytest.Pytester, *args: str) -> tuple[pytest.HookRecorder, LivekitSettings]:
    reprec = pytester.inline_run("--co", *args)
    session = reprec.getcall("pytest_collection_finish").session
    return reprec, session.config.stash[SETTINGS_KEY]


def test_vocabulary_has_scripts_ini_phrases_and_say_literals(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(VALID_SUITE_PYPROJECT)
    pytester.makefile(".txt", phrases="# what callers say\nThank you, goodbye.\n\ncancel my booking  # end\n")
    pytester.makepyfile(
        test_vocab_calls="""
        import pytest

        LINE = "Hello there"

        async def test_refund(livekit_call):
            await livekit_call.say("I want a refund, please.")  # also a script line: once
            await livekit_call.barge_in("Wait, stop")
            await livekit_call.say(LINE)

        @pytest.mark.livekit(llm_rules=[{"when": "hello", "say": "Hi."}], default_reply="Sure.")
        async def test_marker(make_livekit_call):
            async with make_livekit_call() as call:
                await call.say("Is anyone there")
        """,
        test_plain="""
        def test_plain(call=None):
            call.say("never scanned")  # no livekit fixture: not scanned
        """,
    )
    reprec, settings = _collect_settings(pytester)
    assert reprec.ret == pytest.ExitCode.OK
    assert settings.vocabulary is not None
    texts = settings.vocabulary.texts
    assert texts == (
        "i want a refund please",
        "order one two three",
        "book a table for two",
        "where is my order",
        "thank you goodbye",
        "cancel my booking",
        "wait stop",
        "hello there",
        "is anyone there",
    )
    sources = {p.text: p.sources for p in settings.vocabulary.phrases}
    assert sources["i want a refund please"] == ("call type 'refund' script", "test_vocab_calls.py:6 say()")
    assert sources["where is my order"] == ("livekit_stt_phrases",)
    assert sources["thank you goodbye"] == ("phrases.txt:2 (livekit_stt_phrases)",)
    assert sources["is anyone there"] == ("test_vocab_calls.py:13 say()",)


def test_no_vocabulary_when_no_test_places_calls(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(VALID_SUITE_PYPROJECT)
    pytester.makepyfile("def test_x(): pass")
    reprec, settings = _collect_settings(pytester)
    assert reprec.ret == pytest.ExitCode.OK
    assert settings.vocabulary is None
    assert settings.stt_phrases == ("Where is my order?", "phrases.txt")


def test_collected_llm_settings_reach_the_plan(pytester: pytest.Pytester) -> None:
    """End to end at collection: pyproject llm tables and the marker combine in the plan."""
    pytester.makepyprojecttoml(
        VALID_SUITE_PYPROJECT
        + textwrap.dedent(
            """
            [tool.pytest_livekit.llm]
            default_reply = "Run reply."
            greeting = "Hello, how can I help?"

            [[tool.pytest_livekit.llm.rules]]
            when = "goodbye"
            say = "Goodbye!"

            [tool.pytest_livekit.call_types.refund.llm]
            default_reply = "Refund reply."

            [[tool.pytest_livekit.call_types.refund.llm.rules]]
            when = "refund"
            say = "Let me check."
            """
        )
    )
    pytester.makefile(".txt", phrases="thank you goodbye\n")
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.livekit(call_type="refund", llm_rules=[{"when": "human", "say": "Transferring."}])
        async def test_x(livekit_call):
            await livekit_call.say("I want a refund, please.")
        """
    )
    reprec, settings = _collect_settings(pytester)
    assert reprec.ret == pytest.ExitCode.OK
    from pytest_livekit.config import marker_options, offline_plan_for

    (item,) = reprec.getcalls("pytest_collection_finish")[0].session.items
    opts = marker_options(item, settings)
    plan = offline_plan_for(settings, settings.call_type_configs["refund"], opts)
    assert [r["when"] for r in plan.llm_rules] == ["human", "refund", "goodbye"]
    assert plan.default_reply == "Refund reply."
    assert plan.greeting == "Hello, how can I help?"
    assert plan.stt_model == "domain"
    assert "i want a refund please" in plan.stt_phrases
    assert plan.source == "the test's marker, call type 'refund', [tool.pytest_livekit.llm]"


# -- placeholder credentials -----------------------------------------------------------------------
ENV_TEST = """
import os

def test_env():
    assert os.environ.get("OPENAI_API_KEY") == {expected!r}
"""


@pytest.mark.parametrize("providers", ["offline", "real"])
def test_a_run_without_offline_calls_leaves_the_environment_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, providers: str
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pytester.makepyfile(ENV_TEST.format(expected=None))
    pytester.runpytest(f"--livekit-providers={providers}").assert_outcomes(passed=1)
    assert "OPENAI_API_KEY" not in os.environ


def test_placeholders_only_while_an_offline_call_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_livekit.agent import substitution
    from pytest_livekit.agent.netguard import guard
    from pytest_livekit.call.livekit_call import _OfflineInProcess

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-user-own-key")
    offline = _OfflineInProcess()
    offline.acquire("127.0.0.1")
    try:
        assert os.environ["OPENAI_API_KEY"] == PLACEHOLDER
        assert os.environ["DEEPGRAM_API_KEY"] == "dg-user-own-key"  # a set value is kept
        assert substitution.is_active() and guard.active
        offline.acquire("127.0.0.1")  # a second call at the same time
        offline.release()
        assert os.environ["OPENAI_API_KEY"] == PLACEHOLDER  # still one call running
    finally:
        offline.release()
    assert "OPENAI_API_KEY" not in os.environ
    assert os.environ["DEEPGRAM_API_KEY"] == "dg-user-own-key"
    assert not substitution.is_active() and not guard.active


def test_the_llm_rules_fixture_is_the_plugins_and_empty_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(livekit_llm_rules):\n    assert livekit_llm_rules == []\n")
    pytester.runpytest().assert_outcomes(passed=1)
