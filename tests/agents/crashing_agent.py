"""An agent whose entrypoint raises: the test must fail with this traceback, not a timeout."""

from __future__ import annotations

from livekit.agents import JobContext


def _load_config() -> None:
    raise RuntimeError("boom: the agent could not load its config")


async def entrypoint(ctx: JobContext) -> None:
    """Crash before starting a session."""
    _load_config()
