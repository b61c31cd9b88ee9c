"""Regression tests for the refund-support agent: real calls through a real livekit-server."""

from __future__ import annotations

import pytest

from pytest_livekit import LivekitCall, assert_asr_accuracy, assert_time_to_first_audio, assert_tool_called


@pytest.mark.livekit(call_type="refund")
async def test_refund_happy_path(livekit_call: LivekitCall) -> None:
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")

    await livekit_call.say("Yes please refund it")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    assert_tool_called(livekit_call, "issue_refund", order_id="1234")


@pytest.mark.livekit(call_type="order_status")
async def test_order_lookup(livekit_call: LivekitCall) -> None:
    await livekit_call.say("Where is my order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")


@pytest.mark.livekit(call_type="escalation")
async def test_escalation_to_human(livekit_call: LivekitCall) -> None:
    await livekit_call.say("Can I speak to a human please")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "transfer_to_human")


async def test_greeting_from_a_recorded_wav(livekit_call: LivekitCall) -> None:
    # A recorded caller: 16 kHz stereo WAV, resampled to 48 kHz mono by the caller.
    await livekit_call.play("audio/hello_16k_stereo.wav", text="hello")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=1500)
    assert_asr_accuracy(livekit_call, max_wer=0.0)
