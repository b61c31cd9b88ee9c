"""Integration: an unmodified production-shaped agent runs offline, by substitution.

``tests/agents/starter_agent.py`` is written the way LiveKit's starter template writes an agent
(LiveKit Inference STT/LLM/TTS, the multilingual turn detector, a licensed noise filter, keys
from ``.env.local``). It runs through a real livekit-server in both agent modes with its cloud
parts replaced by the offline doubles; the offline LLM follows rules stated by the test, with
tool arguments taken from what the offline STT heard.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_livekit import assert_tool_called
from pytest_livekit.errors import AgentCrashedError

pytestmark = pytest.mark.integration

STARTER = "tests.agents.starter_agent:server"
LEAKY = "tests.agents.leaky_agent:server"

#: What the offline "LLM" does for this agent: its own tool, arguments from the caller's words.
ORDER_RULES = [
    {
        "when": r"order (?P<number>(?:(?:zero|one|two|three|four|five|six|seven|eight|nine) ?)+)",
        "call": [{"tool": "check_order", "arguments": {"order_number": "{number:digits}"}}],
        "then": "Your order is {output}.",
    }
]


def _heard(call: Any) -> str:
    return " ".join(i.text for i in call.record.items if i.role == "assistant").lower()


@pytest.mark.parametrize("agent_mode", ["in-process", "worker"])
@pytest.mark.livekit(agent=STARTER, llm_rules=ORDER_RULES, default_reply="How can I help?")
async def test_starter_template_agent_runs_unmodified_offline(make_livekit_call: Any, agent_mode: str) -> None:
    # The STT's vocabulary is the suite's: this say() literal is in it, collected once per run.
    async with make_livekit_call(agent_mode=agent_mode) as call:
        await call.say("Where is my order one two three four")
        await call.wait_for_agent_reply()
    assert_tool_called(call, "check_order", order_number="1234")
    call.expect.contains_function_call(name="check_order", arguments={"order_number": "1234"})
    assert "blue kettle" in _heard(call)  # the reply after the tool uses the tool's real output
    assert call.record.providers == "offline"
    replaced = {s["where"]: s["original"] for s in call.record.substitutions}
    assert replaced["AgentSession(stt=...)"] == "inference.STT deepgram/nova-3"
    assert replaced["Assistant(llm=...)"] == "inference.LLM openai/gpt-4.1-mini"
    assert replaced["AgentSession(tts=...)"] == "inference.TTS cartesia/sonic-3"
    assert "AgentSession(turn_detection=...)" in replaced
    assert any("noise_cancellation" in where for where in replaced)


@pytest.mark.parametrize("agent_mode", ["in-process", "worker"])
async def test_an_unsubstituted_provider_fails_the_call_naming_it(
    make_livekit_call: Any, livekit_settings: Any, agent_mode: str, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    with pytest.raises(AgentCrashedError) as excinfo:
        # the agent's STT opens its vendor connection as soon as the session listens
        async with make_livekit_call(agent=LEAKY, agent_mode=agent_mode) as call:
            await call.say("hello")
            await call.wait_for_agent_reply(timeout=20)
    message = str(excinfo.value)
    assert "offline" in message
    assert "api.speech-vendor.example" in message
    assert "STT" in message
    assert time.monotonic() - started < 25
    # the failed call's artifacts are kept, with the violation in its record
    from pytest_livekit.call.livekit_call import sanitize

    folder = next(livekit_settings.artifacts_dir.glob(f"*{sanitize(request.node.name)}"))
    saved = (folder / "call.json").read_text()
    assert "api.speech-vendor.example" in saved


class TestRulesFromAFixture:
    """The rules can also come from a fixture (computed from test data, shared by a class)."""

    @pytest.fixture
    def livekit_llm_rules(self) -> list[dict[str, Any]]:
        return ORDER_RULES

    @pytest.mark.livekit(agent=STARTER)
    async def test_the_fixtures_rules_drive_the_offline_llm(self, livekit_call: Any) -> None:
        await livekit_call.say("Where is my order one two three four")
        await livekit_call.wait_for_agent_reply()
        assert_tool_called(livekit_call, "check_order", order_number="1234")
