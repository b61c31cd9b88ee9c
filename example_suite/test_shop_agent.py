"""The shop's production agent (``shop_agent.py``), tested unmodified and offline.

The stand-in LLM's behaviour is stated here, with the agent's own tool: when the caller names an
order, call ``delivery_date`` with the number they said (spoken digits become digits), then say
what the tool returned. The tool's real schema checks the rule when the agent starts.
"""

from __future__ import annotations

import pytest

from pytest_livekit import LivekitCall, assert_asr_accuracy, assert_time_to_first_audio, assert_tool_called

DIGIT = "(?:zero|one|two|three|four|five|six|seven|eight|nine)"

DELIVERY_RULES = [
    {
        "when": rf"order (?P<number>(?:{DIGIT} ?)+)",
        "call": [{"tool": "delivery_date", "arguments": {"order_number": "{number:digits}"}}],
        "then": "It arrives {output}.",
    }
]


@pytest.mark.livekit(agent="shop_agent:server", llm_rules=DELIVERY_RULES, default_reply="Hello, how can I help?")
async def test_delivery_question_uses_the_agents_own_tool(livekit_call: LivekitCall) -> None:
    await livekit_call.say("When will order one two three four arrive")
    await livekit_call.wait_for_agent_reply()
    assert_tool_called(livekit_call, "delivery_date", order_number="1234")
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    # livekit-agents' own assertion vocabulary, over the voice call's events
    livekit_call.expect.contains_function_call(name="delivery_date", arguments={"order_number": "1234"})
    livekit_call.expect.contains_message(role="assistant")
