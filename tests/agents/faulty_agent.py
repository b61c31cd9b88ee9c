"""The example support agent with one failing part each: a tool that raises, and a TTS, LLM or
STT whose stream raises (as a provider outage does). The fault matrix checks that each fails the
test with what broke and where, soon after the fault.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, RunContext, room_io
from livekit.agents.llm import function_tool

from example_suite import support_agent
from pytest_livekit.offline import EspeakTTS, ScriptedLLM, SphinxSTT


class ToolFailsAgent(support_agent.SupportAgent):
    """The support agent whose order lookup raises (the CRM is down)."""

    # livekit's FunctionTool type names the class in its parameters, so an overriding tool never
    # matches its base's type (the signature is the same)
    @function_tool
    async def lookup_order(self, context: RunContext[None], order_id: str) -> str:  # type: ignore[override]
        """Look up an order by its number."""
        raise RuntimeError("CRM unreachable: connection refused (crm.internal:443)")


class BrokenTTS(EspeakTTS):
    """A TTS whose every synthesis fails, like a provider outage."""

    def synthesize(self, text: str, **kwargs: Any) -> Any:
        """Fail at once."""
        raise RuntimeError("TTS provider outage: 503 Service Unavailable")


class BrokenLLM(ScriptedLLM):
    """An LLM whose every chat fails, like a provider outage."""

    def chat(self, **kwargs: Any) -> Any:
        """Fail at once."""
        raise RuntimeError("LLM provider outage: 503 Service Unavailable")


class BrokenSTT(SphinxSTT):
    """An STT whose streams fail, like a provider outage."""

    def stream(self, **kwargs: Any) -> Any:
        """Fail at once."""
        raise RuntimeError("STT provider outage: 503 Service Unavailable")


def _session(ctx: JobContext, **parts: Any) -> AgentSession[None]:
    userdata: dict[str, Any] = ctx.proc.userdata
    defaults: dict[str, Any] = {
        "vad": userdata["vad"],
        "stt": userdata["stt"],
        "llm": ScriptedLLM(support_agent.RULES),
        "tts": EspeakTTS(),
    }
    defaults.update(parts)
    return AgentSession(
        **defaults,
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
        aec_warmup_duration=None,
        user_away_timeout=None,
    )


async def _run(ctx: JobContext, agent: Any, **parts: Any) -> None:
    session = _session(ctx, **parts)
    await session.start(agent, room=ctx.room, room_options=room_io.RoomOptions(close_on_disconnect=False))
    await ctx.connect()


tool_fails = AgentServer()
tool_fails.setup_fnc = support_agent.prewarm


@tool_fails.rtc_session(agent_name="tool-fails")
async def tool_fails_entrypoint(ctx: JobContext) -> None:
    """A tool raises."""
    await _run(ctx, ToolFailsAgent())


tts_fails = AgentServer()
tts_fails.setup_fnc = support_agent.prewarm


@tts_fails.rtc_session(agent_name="tts-fails")
async def tts_fails_entrypoint(ctx: JobContext) -> None:
    """Every TTS synthesis raises."""
    await _run(ctx, support_agent.SupportAgent(), tts=BrokenTTS())


llm_fails = AgentServer()
llm_fails.setup_fnc = support_agent.prewarm


@llm_fails.rtc_session(agent_name="llm-fails")
async def llm_fails_entrypoint(ctx: JobContext) -> None:
    """Every LLM chat raises."""
    await _run(ctx, support_agent.SupportAgent(), llm=BrokenLLM(support_agent.RULES))


stt_fails = AgentServer()
stt_fails.setup_fnc = support_agent.prewarm


@stt_fails.rtc_session(agent_name="stt-fails")
async def stt_fails_entrypoint(ctx: JobContext) -> None:
    """Every STT stream raises."""
    await _run(ctx, support_agent.SupportAgent(), stt=BrokenSTT(phrases=support_agent.CALLER_PHRASES))
