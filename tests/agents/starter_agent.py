"""A production-shaped agent, written the way LiveKit's starter template writes one.

Nothing here knows about pytest-livekit: cloud providers through LiveKit Inference model
strings and objects, the multilingual turn-detector model, a licensed noise filter, preemptive
generation, keys from ``.env.local``. The plugin tests it unmodified: in ``offline`` mode the
cloud parts are replaced by the offline doubles, and the network guard catches anything left.
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

#: The shop's orders, as its back office would answer.
ORDERS = {"1234": "a blue kettle, shipped yesterday", "5678": "a garden chair, not shipped yet"}


class Assistant(Agent):
    """A shop's phone assistant with one tool."""

    def __init__(self) -> None:
        super().__init__(
            instructions=(
                "You are a helpful voice assistant for a small shop. Keep answers short. "
                "Use the order tool when the caller gives an order number."
            ),
            llm=inference.LLM(model="openai/gpt-4.1-mini"),
        )

    @function_tool
    async def check_order(self, context: RunContext[None], order_number: str) -> str:  # noqa: D417
        """Look up the status of an order.

        Args:
            order_number: the order's number, digits only.
        """
        return ORDERS.get(order_number, f"there is no order {order_number}")


server = AgentServer()


def prewarm(proc: JobProcess) -> None:
    """Load the VAD once per process."""
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session(agent_name="starter-agent")
async def my_agent(ctx: JobContext) -> None:
    """The call: a session with cloud STT, TTS and turn detection, then greet the caller."""
    ctx.log_context_fields = {"room": ctx.room.name}
    session: AgentSession[None] = AgentSession(
        stt=inference.STT(model="deepgram/nova-3", language="multi"),
        tts=inference.TTS(model="cartesia/sonic-3", voice="9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
        turn_detection=MultilingualModel(),
        vad=ctx.proc.userdata["vad"],
        preemptive_generation=True,
    )
    await session.start(
        agent=Assistant(),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            audio_input=room_io.AudioInputOptions(noise_cancellation=noise_cancellation.BVC()),
        ),
    )
    await ctx.connect()
