"""One test body per call type: each runs its own caller script against its own limits."""

from __future__ import annotations

import pytest

from pytest_livekit import LivekitCall, assert_no_duplicated_turns, assert_within_limits
from pytest_livekit.metrics.thresholds import CallType


# the call types with a fixed script (verified_refund is played from scenario files instead)
@pytest.mark.livekit(call_types=["refund", "order_status", "escalation"])
async def test_scripted_call(livekit_call: LivekitCall, livekit_call_type: CallType) -> None:
    for line in livekit_call_type.script:
        await livekit_call.say(line)
        await livekit_call.wait_for_agent_reply()
    assert_no_duplicated_turns(livekit_call)
    assert_within_limits(livekit_call)
