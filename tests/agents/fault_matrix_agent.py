"""One agent server for the whole fault matrix: each call gets the fault its room's name asks for.

The fault matrix (``tests/integration/test_faults.py``) runs its faults in short pytest sessions
of their own, in-process and as a worker. One ``AgentServer`` serves every fault so that a
worker-mode session starts one worker (and its idle job processes) rather than one per fault, and
so that the session's last, healthy call runs on the very worker the faults went through.

pytest-livekit names a call's room after its test (``test_tool_fails`` gives
``test_tool_fails-1a2b3c4d``): the first fault name found in the room's name is the call's fault;
a room that names none gets the plain example support agent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, room_io

from example_suite import support_agent
from pytest_livekit.offline import EspeakTTS, ScriptedLLM
from tests.agents.faulty_agent import BrokenLLM, BrokenSTT, BrokenTTS, ToolFailsAgent

#: The faults, by the name a test puts in its own name.
FAULTS = ("tool_fails", "stt_fails", "llm_fails", "tts_fails", "entrypoint_raises", "loop_blocks")


def fault_of(room_name: str) -> str | None:
    """The fault ``room_name`` asks for, or None for a healthy call."""
    return next((fault for fault in FAULTS if fault in room_name), None)


def _load_config() -> None:
    raise RuntimeError("boom: the agent could not load its config")


def _fetch_customer_record_synchronously() -> None:
    time.sleep(3.0)  # the bug: a blocking call on the event loop (the plugin fails it from 2 s)


async def _run(ctx: JobContext, **parts: Any) -> None:
    """The example support agent's session, with some of its parts replaced."""
    userdata: dict[str, Any] = ctx.proc.userdata
    session_parts: dict[str, Any] = {
        "vad": userdata["vad"],
        "stt": parts.pop("stt", userdata["stt"]),
        "llm": parts.pop("llm", None) or ScriptedLLM(support_agent.RULES),
        "tts": parts.pop("tts", None) or EspeakTTS(),
    }
    agent = parts.pop("agent", None) or support_agent.SupportAgent()
    session = AgentSession(
        **session_parts,
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
        aec_warmup_duration=None,
        user_away_timeout=None,
        session_close_transcript_timeout=0.3,
    )
    await session.start(agent, room=ctx.room, room_options=room_io.RoomOptions(close_on_disconnect=False))
    await ctx.connect()


server = AgentServer()
server.setup_fnc = support_agent.prewarm


@server.rtc_session(agent_name="fault-matrix")
async def entrypoint(ctx: JobContext) -> None:
    """Run the example support agent with the fault the room's name asks for."""
    fault = fault_of(ctx.job.room.name)
    if fault == "tool_fails":
        await _run(ctx, agent=ToolFailsAgent())
    elif fault == "stt_fails":
        await _run(ctx, stt=BrokenSTT(phrases=support_agent.CALLER_PHRASES))
    elif fault == "llm_fails":
        await _run(ctx, llm=BrokenLLM(support_agent.RULES))
    elif fault == "tts_fails":
        await _run(ctx, tts=BrokenTTS())
    elif fault == "entrypoint_raises":
        _load_config()
    elif fault == "loop_blocks":
        # one second from now, block the loop for 3 s (think requests.get to a CRM)
        asyncio.get_running_loop().call_later(1.0, _fetch_customer_record_synchronously)
        await support_agent.run_support_session(ctx, {"min_duration": 0.5})
    else:  # healthy: the example support agent as it ships
        await support_agent.run_support_session(ctx, {"min_duration": 0.5})
