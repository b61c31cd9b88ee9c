"""Process entry point of an agent worker started by :class:`pytest_livekit.worker.AgentWorker`.

``python -m pytest_livekit._worker_main package.module:attribute``

It imports the user's ``AgentServer`` (or wraps a bare entrypoint in one) and runs it through
livekit-agents' own production worker runner, exactly what ``python agent.py start`` does, with
three test-run settings the ``start`` command cannot take from outside:

* the health-server port (``start`` always uses 8081, so two workers would collide);
* the agent name, from ``LIVEKIT_AGENT_NAME_OVERRIDE`` (livekit-agents' own override), so each
  test session's worker gets only its own explicit dispatches;
* the worker load limit is lifted (livekit-agents' simulation flag) and the worker reports a load of
  0: livekit-server 1.13.5 offers a job only to workers whose reported load (by default the
  machine's CPU use) is below 1.0, so on a busy two-core test machine it refused every dispatch
  ("no servers available"). Whether the machine is busy is the test's business, not a reason to
  drop the call.

URL, key and secret come from the environment (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``,
``LIVEKIT_API_SECRET``), never argv. ``LIVEKIT_DEV_MODE`` is removed: dev mode sends turn detection
and interruption to LiveKit Cloud.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import os
import sys


def _no_load() -> float:
    """The load the test worker reports: always available (see the module docstring)."""
    return 0.0


def main(argv: list[str]) -> int:
    """Run the worker until SIGTERM/SIGINT."""
    if len(argv) != 2:
        print("usage: python -m pytest_livekit._worker_main module:attribute PORT", file=sys.stderr)
        return 2
    spec, port = argv
    os.environ.pop("LIVEKIT_DEV_MODE", None)
    sys.path.insert(0, os.getcwd())

    from livekit.agents import AgentServer
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker

    from .agent_runner import resolve_agent_target

    target = resolve_agent_target(spec)
    module_name, _, attr = spec.partition(":")
    obj = getattr(sys.modules[module_name], attr)
    if isinstance(obj, AgentServer):
        server = obj
    else:  # a bare entrypoint: give it a server of its own
        server = AgentServer()
        server.rtc_session(agent_name=os.environ.get("LIVEKIT_AGENT_NAME_OVERRIDE", ""))(
            target.entrypoint
        )
    server._port = int(port)  # noqa: SLF001 - AgentServer has no public setter for it
    server.load_fnc = _no_load
    _run_worker(
        server,
        proto.CliArgs(
            log_level=os.environ.get("LIVEKIT_LOG_LEVEL", "INFO"),
            url=os.environ["LIVEKIT_URL"],
            api_key=os.environ["LIVEKIT_API_KEY"],
            api_secret=os.environ["LIVEKIT_API_SECRET"],
            log_format="json",
            dev=False,
            simulation=True,
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
