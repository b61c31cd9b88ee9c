"""Integration: livekit-agents' own ``RunResult.expect`` over a real voice call (real
livekit-server, real rtc rooms, the example agent's real AgentSession)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_livekit.call.expect import voice_run_result

pytestmark = pytest.mark.integration

EXAMPLE_AGENT = "example_suite.support_agent:server"


@pytest.mark.livekit(agent=EXAMPLE_AGENT, call_type="refund")
async def test_refund_call_asserted_with_livekits_vocabulary(livekit_call: Any) -> None:
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()

    result = voice_run_result(livekit_call)
    # In order, as the agent's session saw the call: the caller's turn as the STT heard it, the
    # tool call and its output, then the reply.
    heard = result.expect.next_event().is_message(role="user").event().item.text_content or ""
    assert "refund" in heard
    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
    result.expect.next_event().is_function_call_output(is_error=False)
    reply = result.expect.next_event().is_message(role="assistant").event().item
    assert "refund" in (reply.text_content or "")
    result.expect.no_more_events()

    # Order-independent forms.
    again = voice_run_result(livekit_call)
    again.expect.contains_function_call(name="lookup_order", arguments={"order_id": "1234"})
    again.expect.contains_message(role="assistant")
    with pytest.raises(AssertionError, match="No FunctionCallEvent satisfying criteria"):
        again.expect.contains_function_call(name="issue_refund")
