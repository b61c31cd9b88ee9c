"""The example support agent with a bug teams do write: a synchronous call in the event loop.

One second after its session starts, it blocks its loop for 5 s (think of ``requests.get`` to a
CRM, or a local model loaded in a callback). In-process, the loop is the test's: the plugin must
fail the call at once, naming the blocking line, instead of letting every wait time out.
"""

from __future__ import annotations

import asyncio
import time

from livekit.agents import AgentServer, JobContext

from example_suite import support_agent

server = AgentServer()
server.setup_fnc = support_agent.prewarm


def _fetch_customer_record_synchronously() -> None:
    time.sleep(5.0)  # the bug: a blocking call on the event loop


@server.rtc_session(agent_name="stalling-agent")
async def entrypoint(ctx: JobContext) -> None:
    """Run the example agent; block the loop 1 s after the session starts."""
    asyncio.get_running_loop().call_later(1.0, _fetch_customer_record_synchronously)
    await support_agent.entrypoint(ctx)
