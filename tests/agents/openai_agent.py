"""An order-support agent that keeps its own cloud LLM: livekit's OpenAI plugin.

Shaped like LiveKit's starter template (``.env.local`` loaded at import, an ``AgentServer`` with
a prewarm and an ``@server.rtc_session`` entrypoint, ``python openai_agent.py start`` runs it).
The LLM is the real provider client, ``openai.LLM``; where it connects and with which key come
from the environment only (``OPENAI_BASE_URL`` and the plugin's own ``OPENAI_API_KEY`` lookup),
so a test proves that the user's settings reach the agent, in-process and in a worker. Speech
stays offline (pocketsphinx, espeak-ng, silero) so the test needs no other provider.
"""

from __future__ import annotations

import os
from typing import Any

from dotenv import load_dotenv
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, RunContext, cli, room_io
from livekit.agents.llm import function_tool
from livekit.plugins import openai, silero

from pytest_livekit.offline import EspeakTTS, SphinxSTT

# As the starter template does: the developer's keys live in .env.local next to where the agent
# is started (the working directory); variables already set in the environment win.
load_dotenv(".env.local", override=False)

#: Orders the fake back office knows.
ORDERS = {"1234": "blue kettle"}

#: What callers say in the tests; the offline STT's language model is built from these.
CALLER_PHRASES = [
    "i want a refund for order one two three four",
    "where is my order one two three four",
    "hello",
    "thank you goodbye",
]

_DIGITS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9"}

#: Silence (seconds) after which the VAD ends the caller's speech (see example_suite's agent).
VAD_MIN_SILENCE_S = 0.3


class OrderAgent(Agent):
    """Looks up orders for callers."""

    def __init__(self) -> None:
        super().__init__(
            instructions="You help callers with refunds and orders. Look orders up before answering."
        )

    # The injected RunContext is not a tool argument, so the docstring leaves it out (D417).
    @function_tool
    async def lookup_order(self, context: RunContext[None], order_id: str) -> str:  # noqa: D417
        """Look up an order by its id.

        Args:
            order_id: the order number, digits only.
        """
        digits = "".join(_DIGITS.get(w, w) for w in order_id.lower().split())
        found = ORDERS.get(digits)
        return f"order {digits}: {found}" if found else f"no order {digits}"


def prewarm(proc: JobProcess) -> None:
    """Load the local models once per process (a worker does this before its first job)."""
    proc.userdata["vad"] = silero.VAD.load(min_silence_duration=VAD_MIN_SILENCE_S)
    stt = SphinxSTT(phrases=CALLER_PHRASES)
    stt.prewarm()
    proc.userdata["stt"] = stt


server = AgentServer()
server.setup_fnc = prewarm


@server.rtc_session(agent_name="openai-order-agent")
async def entrypoint(ctx: JobContext) -> None:
    """One call: the OpenAI plugin as the LLM, offline speech around it."""
    userdata: dict[str, Any] = ctx.proc.userdata
    session: AgentSession[None] = AgentSession(
        vad=userdata["vad"],
        stt=userdata["stt"],
        # Built per call, like production code: it reads OPENAI_API_KEY (and we read
        # OPENAI_BASE_URL) from the environment of the process the call runs in.
        llm=openai.LLM(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"]),
        tts=EspeakTTS(),
        # Offline and fast, as in example_suite/support_agent.py: VAD turns (the default turn
        # detector and adaptive interruption reach LiveKit Cloud), no speculative LLM calls.
        turn_handling={
            "turn_detection": "vad",
            "interruption": {"mode": "vad", "min_duration": 0.5},
            "endpointing": {"min_delay": VAD_MIN_SILENCE_S, "max_delay": 2.0},
            "preemptive_generation": {"enabled": False},
        },
        aec_warmup_duration=None,
        user_away_timeout=None,
        session_close_transcript_timeout=0.3,
    )
    await session.start(
        OrderAgent(),
        room=ctx.room,
        room_options=room_io.RoomOptions(close_on_disconnect=False),
    )
    await ctx.connect()


if __name__ == "__main__":
    cli.run_app(server)
