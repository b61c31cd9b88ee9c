"""Declarative conversations: the verifying refund line, from scenario files and a table."""

from __future__ import annotations

import pytest

from pytest_livekit import LivekitCall, Scenario, assert_task_completed

VERIFIED = "support_agent:verified_server"


@pytest.mark.livekit(agent=VERIFIED, scenarios="scenarios/verified_refund.toml")
async def test_verified_refund(livekit_call: LivekitCall, livekit_scenario: Scenario) -> None:
    result = await livekit_call.run_scenario(livekit_scenario)
    assert_task_completed(result)


@pytest.mark.livekit(agent=VERIFIED, scenarios="scenarios/refund_table.toml")
async def test_refund_variations(livekit_call: LivekitCall, livekit_scenario: Scenario) -> None:
    result = await livekit_call.run_scenario(livekit_scenario)
    assert_task_completed(result)
