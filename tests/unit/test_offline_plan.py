"""``offline_plan_for``: which rules, default reply, greeting, latency and STT model a test's
offline call gets, from its marker, its call type and the run-wide ``[tool.pytest_livekit.llm]``.

Real objects throughout: :class:`LivekitSettings`, :class:`CallType`, :class:`MarkerOptions`
and a :class:`SuiteVocabulary` built from phrases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.agent.substitution import OfflinePlan
from pytest_livekit.agent.vocabulary import SuiteVocabulary
from pytest_livekit.config import LivekitSettings, MarkerOptions, Setting, offline_plan_for
from pytest_livekit.metrics.thresholds import CallType

MARKER_RULE = {"when": "human", "say": "Transferring you."}
TYPE_RULE = {"when": "refund", "say": "Let me check your order."}
RUN_RULE = {"when": "goodbye", "say": "Goodbye!"}


def _settings(*, llm: dict[str, Any] | None = None, vocabulary: Any = None) -> LivekitSettings:
    unset = Setting(None, "default")
    settings = LivekitSettings(
        server_mode=Setting("binary", "auto"),
        server_binary=unset,
        docker_image=unset,
        url=unset,
        api_key=unset,
        api_secret=unset,
        port=None,
        agent_spec=unset,
        agent_mode=Setting("in-process", "default"),
        artifacts_dir=Path("/nonexistent/.livekit/calls"),
        startup_timeout=30.0,
        llm=dict(llm or {}),
    )
    settings.vocabulary = vocabulary
    return settings


def _refund(llm: dict[str, Any] | None = None) -> CallType:
    return CallType("refund", script=("I want a refund",), llm=dict(llm or {}))


def test_rules_marker_first_then_call_type_then_run_wide() -> None:
    settings = _settings(llm={"rules": [RUN_RULE]})
    plan = offline_plan_for(
        settings, _refund({"rules": [TYPE_RULE]}), MarkerOptions(llm_rules=(MARKER_RULE,))
    )
    assert isinstance(plan, OfflinePlan)
    assert plan.llm_rules == [MARKER_RULE, TYPE_RULE, RUN_RULE]
    assert plan.source == "the test's marker, call type 'refund', [tool.pytest_livekit.llm]"


@pytest.mark.parametrize(
    ("marker", "type_rules", "run_rules", "rules", "source"),
    [
        ((), [], [], [], "no rules"),
        ((), [], [RUN_RULE], [RUN_RULE], "[tool.pytest_livekit.llm]"),
        ((), [TYPE_RULE], [], [TYPE_RULE], "call type 'refund'"),
        ((MARKER_RULE,), [], [], [MARKER_RULE], "the test's marker"),
        ((MARKER_RULE,), [], [RUN_RULE], [MARKER_RULE, RUN_RULE], "the test's marker, [tool.pytest_livekit.llm]"),
    ],
)
def test_rules_and_source_of_each_layer(
    marker: tuple[Any, ...], type_rules: list[Any], run_rules: list[Any], rules: list[Any], source: str
) -> None:
    settings = _settings(llm={"rules": run_rules} if run_rules else {})
    call_type = _refund({"rules": type_rules} if type_rules else {})
    plan = offline_plan_for(settings, call_type, MarkerOptions(llm_rules=marker or None))
    assert plan.llm_rules == rules
    assert plan.source == source


def test_no_call_type_uses_marker_and_run_wide_rules() -> None:
    settings = _settings(llm={"rules": [RUN_RULE], "default_reply": "Run reply."})
    plan = offline_plan_for(settings, None, MarkerOptions(llm_rules=(MARKER_RULE,)))
    assert plan.llm_rules == [MARKER_RULE, RUN_RULE]
    assert plan.source == "the test's marker, [tool.pytest_livekit.llm]"
    assert plan.default_reply == "Run reply."


def test_rule_objects_from_a_marker_are_kept_as_given() -> None:
    from pytest_livekit.offline.llm import Rule

    rule = Rule("human", reply="Transferring you.")
    plan = offline_plan_for(_settings(), None, MarkerOptions(llm_rules=(rule,)))
    assert plan.llm_rules == [rule]
    assert plan.llm_rules[0] is rule


@pytest.mark.parametrize(
    ("marker", "call_type", "run", "expected"),
    [
        ("Marker reply.", "Type reply.", "Run reply.", "Marker reply."),
        (None, "Type reply.", "Run reply.", "Type reply."),
        (None, None, "Run reply.", "Run reply."),
        (None, None, None, OfflinePlan.default_reply),
        ("Marker reply.", None, None, "Marker reply."),
    ],
)
def test_default_reply_closest_one_set_wins(
    marker: str | None, call_type: str | None, run: str | None, expected: str
) -> None:
    settings = _settings(llm={"default_reply": run} if run else {})
    plan = offline_plan_for(
        settings, _refund({"default_reply": call_type} if call_type else {}), MarkerOptions(default_reply=marker)
    )
    assert plan.default_reply == expected
    assert OfflinePlan.default_reply == "Okay."


def test_greeting_and_latency_call_type_over_run_wide() -> None:
    settings = _settings(llm={"greeting": "Hi from the run.", "time_to_first_token": 0.3})
    typed = offline_plan_for(
        settings, _refund({"greeting": "Refunds, hello.", "time_to_first_token": 0.1}), MarkerOptions()
    )
    assert (typed.greeting, typed.time_to_first_token) == ("Refunds, hello.", 0.1)
    run_wide = offline_plan_for(settings, _refund(), MarkerOptions())
    assert (run_wide.greeting, run_wide.time_to_first_token) == ("Hi from the run.", 0.3)
    # a call type's explicit 0 latency is a setting, not "unset"
    zero = offline_plan_for(settings, _refund({"time_to_first_token": 0}), MarkerOptions())
    assert zero.time_to_first_token == 0.0


def test_no_greeting_and_no_latency_by_default() -> None:
    plan = offline_plan_for(_settings(), _refund(), MarkerOptions())
    assert plan.greeting is None
    assert plan.time_to_first_token == 0.0
    assert plan.llm_rules == []
    assert plan.source == "no rules"


def test_stt_model_domain_with_phrases_generic_without() -> None:
    vocabulary = SuiteVocabulary.from_phrases(["I want a refund", "Where is my order?"])
    with_phrases = offline_plan_for(_settings(vocabulary=vocabulary), _refund(), MarkerOptions())
    assert with_phrases.stt_model == "domain"
    assert with_phrases.stt_phrases == ["i want a refund", "where is my order"]

    empty = offline_plan_for(_settings(vocabulary=SuiteVocabulary()), _refund(), MarkerOptions())
    assert (empty.stt_model, empty.stt_phrases) == ("generic", [])
    not_collected = offline_plan_for(_settings(vocabulary=None), _refund(), MarkerOptions())
    assert (not_collected.stt_model, not_collected.stt_phrases) == ("generic", [])


def test_marker_stt_model_wins() -> None:
    vocabulary = SuiteVocabulary.from_phrases(["I want a refund"])
    generic = offline_plan_for(_settings(vocabulary=vocabulary), None, MarkerOptions(stt_model="generic"))
    assert generic.stt_model == "generic"
    assert generic.stt_phrases == ["i want a refund"]  # the run's vocabulary travels regardless
    domain = offline_plan_for(_settings(vocabulary=None), None, MarkerOptions(stt_model="domain"))
    assert domain.stt_model == "domain"


def test_plan_of_declarative_rules_round_trips_as_json() -> None:
    """A plan of dict rules travels to a worker as JSON unchanged."""
    settings = _settings(
        llm={"rules": [RUN_RULE], "default_reply": "Run reply.", "greeting": "Hello."},
        vocabulary=SuiteVocabulary.from_phrases(["I want a refund"]),
    )
    plan = offline_plan_for(settings, _refund({"rules": [TYPE_RULE]}), MarkerOptions(llm_rules=(MARKER_RULE,)))
    assert OfflinePlan.from_json(plan.to_json()) == plan
