"""Integration: the fault matrix. Each fault ends the test with one clear failure (what broke,
where, what to look at) within 10 s of the fault, and the call's artifacts are kept.

Agent-side faults that livekit-agents catches and only logs (a tool that raises, a provider
stream that fails) would otherwise leave the caller in silence until a 30 s timeout, or pass
with an answer built on a failed tool.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.errors import AgentCrashedError

pytestmark = pytest.mark.integration

FAULTY = "tests.agents.faulty_agent"


@pytest.mark.parametrize(
    ("agent", "words"),
    [
        ("tool_fails", ["tool lookup_order() raised RuntimeError: CRM unreachable", "faulty_agent.py"]),
        ("tts_fails", ["TTS raised RuntimeError: TTS provider outage", "faulty_agent.py"]),
        ("llm_fails", ["LLM raised RuntimeError: LLM provider outage", "faulty_agent.py"]),
        ("stt_fails", ["STT raised RuntimeError: STT provider outage", "faulty_agent.py"]),
    ],
)
async def test_an_agent_fault_fails_the_call_at_once_naming_the_part(
    make_livekit_call: Any, agent: str, words: list[str]
) -> None:
    call = None
    started = time.monotonic()  # the STT fails when the session starts, the others mid-call
    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent=f"{FAULTY}:{agent}") as call:
            await call.say("I want a refund for order one two three four")
            await call.wait_for_agent_reply()
    assert time.monotonic() - started < 12.0, "the fault took the reply timeout"
    message = str(excinfo.value)
    for word in words:
        assert word in message
    if call is None:  # failed while starting: the factory's call is not bound; its folder is
        return
    assert any(e.source == "agent" for e in call.record.errors)
    saved = json.loads((Path(call.record.artifacts_dir) / "call.json").read_text())
    assert any(e["source"] == "agent" for e in saved["errors"])  # kept with the call
    assert (Path(call.record.artifacts_dir) / "call.wav").exists()
