"""A worker agent whose job entrypoint raises after the worker registered."""

from __future__ import annotations

from livekit.agents import AgentServer, JobContext

server = AgentServer()


def _open_crm_connection() -> None:
    raise ConnectionError("boom: CRM unreachable from the job")


@server.rtc_session(agent_name="crashing")
async def entrypoint(ctx: JobContext) -> None:
    """Crash inside the job process."""
    _open_crm_connection()
