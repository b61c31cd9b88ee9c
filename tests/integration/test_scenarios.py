"""Integration: declarative scenarios through a real livekit-server, against an agent the test did
not write (tests/agents/starter_agent.py, offline by substitution), and a persona caller whose
lines a real LLM client chooses (livekit's OpenAI plugin against an OpenAI-compatible server on
loopback, tests/support/openai_compatible_server.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_livekit import assert_task_completed
from pytest_livekit.call.scenarios import Persona, Response, Scenario
from tests.support.openai_compatible_server import OpenAICompatibleServer, Rule

pytestmark = pytest.mark.integration

STARTER = "tests.agents.starter_agent:server"
_DIGIT = "(?:zero|one|two|three|four|five|six|seven|eight|nine)"

#: The offline "LLM" of the starter agent: name first, then the order number, then the lookup.
RULES = [
    # "my order", not "check my order": a real LLM would still understand the opening when the
    # offline STT mishears one word of it (seen once in CI: "i want to two my order").
    {"when": r"\bmy order\b", "say": "Sure. What is your name?"},
    {"when": r"name is", "say": "Thank you. What is the order number?"},
    {
        # from the first digit word to the end: ``:digits`` keeps the digits and skips the rest, as
        # a real LLM reads "five six seven i eight" (an offline STT insertion seen in CI) as 5678
        "when": rf"(?P<number>\b{_DIGIT}\b.*)",
        "call": [{"tool": "check_order", "arguments": {"order_number": "{number:digits}"}}],
        "then": "Your order is {output}.",
    },
]


@pytest.mark.livekit(agent=STARTER, llm_rules=RULES, default_reply="Sorry, can you repeat that?",
                     scenarios="scenarios/order_status.toml")
async def test_a_scenario_answers_what_the_agent_asks_and_is_judged_by_its_tools(
    livekit_call: Any, livekit_scenario: Scenario
) -> None:
    result = await livekit_call.run_scenario(livekit_scenario)
    assert_task_completed(result)
    chosen = [step.chosen_by for step in result.steps]
    assert chosen == ["opening", "response 'your name'", "response 'order number'", "hang up"]
    assert result.tool_accuracy == 1.0 and result.outcome == "completed"
    said = [t.text for t in livekit_call.record.caller_turns]
    assert said == ["I want to check my order", f"My name is {livekit_scenario.facts['name']}",
                    f"The order number is {livekit_scenario.facts['order_number']}"]
    if livekit_scenario.persona.character == "hesitant":  # thought first, paused mid-sentence
        steps = [s["action"] for s in livekit_call.record.script]
        assert steps.count("stay_silent") == 3
        assert all(s.get("pause") for s in livekit_call.record.script if s["action"] == "say")
    # the trace carries every exchange and why each line was chosen (written at teardown)
    assert livekit_call.record.scenario["completed"] is True
    assert livekit_call.record.scenario["steps"][1]["chosen_by"] == "response 'your name'"


@pytest.mark.livekit(agent=STARTER, llm_rules=RULES, default_reply="Sorry, can you repeat that?")
async def test_an_off_script_agent_ends_the_scenario_with_a_clear_verdict(livekit_call: Any) -> None:
    scenario = Scenario(
        name="no_name_answer", goal="find out where my order is", hang_up_when="your order is",
        facts={"order_number": "one two three four"}, opening="I want to check my order",
        responses=(Response("order number", "The order number is {order_number}"),),
        source="test",
    )
    result = await livekit_call.run_scenario(scenario)
    assert not result.completed and result.stopped == "off-script"
    text = result.explain()
    assert "NOT completed (ended: off-script)" in text
    assert "agent: 'Sure. What is your name?'" in text
    with pytest.raises(AssertionError, match="the agent never said 'your order is'"):
        assert_task_completed(result)


@pytest.mark.livekit(agent=STARTER, llm_rules=RULES, default_reply="Sorry, can you repeat that?")
async def test_a_caller_that_talks_over_says_mhm_while_the_agent_is_speaking(livekit_call: Any) -> None:
    scenario = Scenario(
        name="talks_over", hang_up_when="your order is", max_turns=2,
        facts={"name": "Alice Martin"}, opening="I want to check my order",
        responses=(Response("your name", "My name is {name}"),), fallback="My name is {name}",
        persona=Persona(character="talks_over"), source="test",
    )
    await livekit_call.run_scenario(scenario)  # whether the agent copes is the agent's business
    record = livekit_call.record
    backchannels = [t for t in record.caller_turns if t.kind == "backchannel"]
    assert backchannels and all(t.text == "mhm" for t in backchannels)
    for turn in backchannels:  # each one started within the agent's audible reply (between its words)
        assert any(h.start <= turn.started_at for h in record.heard), (turn, record.heard)
        assert any(h.end >= turn.started_at for h in record.heard), (turn, record.heard)
        assert any(abs(h.end - turn.started_at) < 1.0 or h.start <= turn.started_at <= h.end
                   for h in record.heard), (turn, record.heard)


# -- a persona whose lines a real LLM chooses -------------------------------------------------------

OPENAI_AGENT = "tests.agents.openai_agent:server"

#: The agent's own model (its real provider client): greet, then look the order up.
AGENT_RULES = [
    Rule(r"^hello", reply="Hello. How can I help you today?"),
    Rule(r"where.*order", tool="lookup_order", arguments={"order_id": "1234"},
         after_tool="Found it, {output}. It is on its way."),
]
#: The caller's model: answers the agent's question, and judges the last reply.
PERSONA_RULES = [
    Rule(r"Check if the following message fulfills", tool="check_intent",
         arguments={"success": True, "reason": "the agent says the order is on its way"}),
    Rule(r"how can i help", reply="Where is my order one two three four"),
]


@pytest.fixture(scope="module")
def agent_model() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(AGENT_RULES) as server:
        yield server


@pytest.fixture
def persona_model() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(PERSONA_RULES) as server:
        yield server


@pytest.mark.livekit(agent=OPENAI_AGENT, providers="real")
async def test_a_persona_caller_speaks_the_lines_its_llm_chose(
    agent_model: OpenAICompatibleServer, persona_model: OpenAICompatibleServer,
    monkeypatch: pytest.MonkeyPatch, make_livekit_call: Any,
) -> None:
    from livekit.plugins import openai

    monkeypatch.setenv("OPENAI_BASE_URL", agent_model.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", agent_model.api_key)
    caller_llm = openai.LLM(base_url=persona_model.base_url, api_key=persona_model.api_key)
    scenario = Scenario(
        name="impatient_llm_caller", goal="find out where order one two three four is",
        facts={"order_number": "one two three four"}, opening="Hello", hang_up_when="on its way",
        max_turns=3, persona=Persona(character="plain", description="in a hurry, short answers"),
        judge="says the order is on its way", source="test",
    )
    try:
        async with make_livekit_call() as call:
            result = await call.run_scenario(scenario, persona_llm=caller_llm)
    finally:
        await caller_llm.aclose()  # the test made this client: it closes it (its HTTP connection too)
    assert_task_completed(result)
    assert [(s.caller_said, s.chosen_by) for s in result.steps] == [
        ("Hello", "opening"), ("Where is my order one two three four", "llm"), (None, "hang up"),
    ]
    assert result.judge == {"intent": scenario.judge, "ok": True, "reason": ""}
    # the persona model saw the goal, the facts and the character, and the agent's words
    asked = [r for r in persona_model.chat_requests if "how can i help" in (r.last_user_text or "").lower()]
    assert len(asked) == 1
    system = asked[0].messages[0]["content"]
    assert "find out where order one two three four is" in system and "in a hurry" in system
    # the chosen line is a say step of the script: a replay says the same words
    assert [s["text"] for s in call.record.script if s["action"] == "say"] == [
        "Hello", "Where is my order one two three four",
    ]
    # ... and the trace's scenario section (written at teardown) has every line and why
    assert [s["chosen_by"] for s in call.record.scenario["steps"]] == ["opening", "llm", "hang up"]
