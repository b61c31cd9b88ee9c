"""An agent whose speech-to-text is its own client of a vendor's web service.

Written the way a team wraps a vendor without a LiveKit plugin: the class lives in the team's
code, so offline mode cannot know it is a cloud part and keeps it. The network guard must then
catch the first attempt to reach the vendor and fail the test, naming the component and host.
"""

from __future__ import annotations

from typing import Literal

import aiohttp
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    LanguageCode,
    stt,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

#: The vendor's endpoint (``.example`` never resolves on a real network either).
VENDOR_URL = "https://api.speech-vendor.example/v1/listen"


class VendorSTT(stt.STT[Literal["metrics_collected", "error"]]):
    """A streaming STT that sends the caller's audio to a vendor over HTTPS."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        async with aiohttp.ClientSession() as http, http.post(VENDOR_URL, data=b"") as response:
            text = await response.text()
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return VendorStream(stt=self, conn_options=conn_options)


class VendorStream(stt.RecognizeStream):
    """Opens the vendor connection as soon as the session starts listening."""

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(VENDOR_URL) as ws:
            async for frame in self._input_ch:
                if isinstance(frame, self._FlushSentinel):
                    continue
                await ws.send_bytes(frame.data.tobytes())


server = AgentServer()


@server.rtc_session(agent_name="leaky-agent")
async def entrypoint(ctx: JobContext) -> None:
    """A session whose STT is the vendor client; everything else is left to the defaults."""
    session: AgentSession[None] = AgentSession(
        stt=VendorSTT(), llm="openai/gpt-4.1-mini", tts="cartesia/sonic-3"
    )
    await session.start(agent=Agent(instructions="You are a helpful assistant."), room=ctx.room)
    await ctx.connect()
