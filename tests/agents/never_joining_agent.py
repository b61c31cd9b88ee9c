"""An agent that never joins the call: its entrypoint does its setup and returns without
``ctx.connect()`` or ``session.start(...)``, a bug teams do write (a return on an early branch,
a forgotten ``await``).

As a worker, its job runs but never enters the room; in-process (where the plugin connects the
room for it) it sits in the room without listening. Either way the call must fail once the join
timeout is up, saying what did not happen and where to look.
"""

from __future__ import annotations

from livekit.agents import AgentServer, JobContext

server = AgentServer()


@server.rtc_session(agent_name="never-joins")
async def entrypoint(ctx: JobContext) -> None:
    """Load the configuration, then return: the session is never started, the room never joined."""
    ctx.proc.userdata["config"] = {"greeting": "Hello"}
