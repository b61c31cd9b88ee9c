"""Conversations that react to the agent: wait for what it says, branch on it, answer it."""

from __future__ import annotations

import pytest

from pytest_livekit import LivekitCall, assert_tool_called
from pytest_livekit.errors import ConversationError

REFUND = "I want a refund for order one two three four"


@pytest.mark.livekit(call_type="refund")
async def test_the_caller_answers_what_the_agent_asks(livekit_call: LivekitCall) -> None:
    await livekit_call.say(REFUND)
    exchanges = await livekit_call.converse(
        {r"shall i refund": "Yes please refund it", r"anything else": "Thank you goodbye"},
        until=r"refund is on its way",
    )
    assert exchanges == [("I found your order. Shall I refund it to your card?", "Yes please refund it")]
    assert_tool_called(livekit_call, "issue_refund", order_id="1234")


@pytest.mark.livekit(call_type="refund")
async def test_the_caller_branches_on_the_agents_answer(livekit_call: LivekitCall) -> None:
    await livekit_call.say(REFUND)
    reply = await livekit_call.wait_for_agent_to_say(r"refund it|cannot be refunded")
    if "cannot" in reply:
        pytest.fail(f"order 1234 is refundable, the agent said: {reply}")
    await livekit_call.say("Yes please refund it")
    await livekit_call.wait_for_agent_to_say(r"on its way")
    assert_tool_called(livekit_call, "issue_refund", order_id="1234")


# the agent never asks for a date of birth: the conversation fails at once, saying what it said
@pytest.mark.livekit(call_type="refund", expected_tools=["lookup_order"])
async def test_a_conversation_fails_clearly_when_the_agent_never_asks(livekit_call: LivekitCall) -> None:
    await livekit_call.say(REFUND)
    with pytest.raises(ConversationError, match=r"the agent said 'I found your order.*none of the caller's answers"):
        await livekit_call.converse({r"date of birth": "May the first"}, until=r"on its way")
