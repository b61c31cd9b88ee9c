"""A shop's voice agent as a team ships it: cloud providers, nothing written for tests.

This is the shape of LiveKit's starter template: LiveKit Inference STT, LLM and TTS, the
multilingual turn detector, a noise filter, keys from ``.env.local``. ``test_shop_agent.py`` tests
it unmodified: pytest-livekit replaces the cloud parts with its offline doubles (the header says
``providers=offline``) and the test states what the stand-in LLM does with the agent's own tool.
Run ``pytest --livekit-providers=real`` with your keys to call the real services instead.
"""

from __future__ import annotations

from dotenv import load_dotenv
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    RunContext,
    inference,
    room_io,
)
from livekit.agents.llm import function_tool
from livekit.plugins import noise_cancellation, silero
from livekit.plugins.turn_detector.multilingual import MultilingualModel

load_dotenv(".env.local")

#: Delivery dates the shop's back office knows, by order number.
DELIVERIES = {"1234": "tomorrow before noon", "5678": "next Monday"}


class ShopAssistant(Agent):
    """Answers delivery questions."""

    def __init__(self) -> None:
        super().__init__(
            instructions="You answer questions about deliveries. Be brief and friendly.",
            llm=inference.LLM(model="openai/gpt-4.1-mini"),
        )

    @function_tool
    async def delivery_date(self, context: RunContext[None], order_number: str) -> str:  # noqa: D417
        """When an order will be delivered.

        Args:
            order_number: the order's number, digits only.
        """
        return DELIVERIES.get(order_number, "unknown: there is no such order")


server = AgentServer()


def prewarm(proc: JobProcess) -> None:
    """Load the VAD once per process."""
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session(agent_name="shop-agent")
async def shop_agent(ctx: JobContext) -> None:
    """One call: cloud STT/TTS, the multilingual turn detector, noise cancellation."""
    session: AgentSession[None] = AgentSession(
        stt=inference.STT(model="deepgram/nova-3", language="multi"),
        tts=inference.TTS(model="cartesia/sonic-3", voice="9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
        turn_detection=MultilingualModel(),
        vad=ctx.proc.userdata["vad"],
        preemptive_generation=True,
    )
    await session.start(
        agent=ShopAssistant(),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            audio_input=room_io.AudioInputOptions(noise_cancellation=noise_cancellation.BVC()),
        ),
    )
    await ctx.connect()
