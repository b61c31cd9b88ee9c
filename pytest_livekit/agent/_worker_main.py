"""Process entry point of an agent worker started by :class:`pytest_livekit.agent.worker.AgentWorker`.

``python -m pytest_livekit.agent._worker_main package.module:attribute``

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

With ``PYTEST_LIVEKIT_PROVIDERS=offline`` (the default the test sets), the worker and each of
its job processes replace the agent's cloud providers with the offline doubles and guard the
network (:func:`start_offline_mode`); the job processes get it through the server's
``setup_fnc``, which livekit-agents runs in every job process before its first job.

The process imports livekit-agents and the agent's module first, then reads the server's URL, key
and secret as one JSON line on stdin (never argv, never the initial environment): the test process
can start a worker before its server is up, so that these imports (about 2 s) overlap pytest's
collection and the server's start. End of stdin before that line: exit 0 (the session ended
first). The three values are then set as ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and
``LIVEKIT_API_SECRET`` for livekit-agents and the job processes. ``LIVEKIT_DEV_MODE`` is removed:
dev mode sends turn detection and interruption to LiveKit Cloud.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any


def _no_load() -> float:
    """The load the test worker reports: always available (see the module docstring)."""
    return 0.0


def start_offline_mode() -> None:
    """Substitute providers and guard the network in this process (a worker or a job process).

    The network guard reports a blocked attempt as an error log line that the worker's log
    reader in the test process recognises (see :data:`pytest_livekit.agent.substitution.VIOLATION_MARKER`).
    """
    from urllib.parse import urlparse

    from pytest_livekit.agent.netguard import guard
    from pytest_livekit.agent.substitution import activate, report_violation

    activate()
    server_host = urlparse(os.environ.get("LIVEKIT_URL", "")).hostname or ""
    if not guard.active:
        guard.on_blocked(lambda attempt: report_violation(attempt.message(), attempt.room))
    guard.activate([server_host])


def offline_job_setup(user_setup: Callable[[Any], Any] | None, proc: Any) -> Any:
    """The worker's ``setup_fnc`` in offline mode: start offline mode in the job process, then
    run the agent's own prewarm (a module-level function with ``functools.partial``: job
    processes receive it pickled).
    """
    start_offline_mode()
    if user_setup is not None:
        return user_setup(proc)
    return None


#: What the worker's forkserver preloads when the worker starts it before importing the agent
#: (:func:`start_forkserver_early`): livekit-agents' own list, less the agent's plugins, which
#: are known only once the agent's module is imported (a job process imports those itself, ~30 ms).
EARLY_FORKSERVER_PRELOAD = ("livekit.agents", "livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze")


def start_forkserver_early() -> bool:
    """Start the forkserver that livekit-agents forks its job processes from, now, without waiting.

    livekit-agents starts it (Linux: ``forkserver``) when the worker runs, after the worker's own
    imports, and the forkserver then imports livekit-agents again and its warm-up (~2 s) before
    the first job process, and the worker registers only once its idle job processes are up.
    Started here, those imports run on another core beside the worker's. livekit-agents reuses
    a forkserver that runs. Returns False (and starts nothing) off Linux.

    The forkserver keeps the environment it was started with, and so do the job processes forked
    from it: :class:`JobProcessSetup` hands them what the worker sets later (the server's URL and
    keys among it).
    """
    if not sys.platform.startswith("linux"):
        return False
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(EARLY_FORKSERVER_PRELOAD))
    forkserver.ensure_running()
    return True


def stop_early_forkserver() -> None:
    """Stop a forkserver :func:`start_forkserver_early` started that the agent will not use (its
    ``AgentServer`` spawns job processes, or runs jobs in threads).
    """
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # type: ignore[attr-defined]  # noqa: SLF001 - the stdlib's own teardown


class JobProcessSetup:
    """A job process's ``setup_fnc``: first the worker's environment changes since the
    forkserver started (the server's URL, key and secret, livekit-agents' own settings), then the
    agent's setup (``inner``, if any).

    Pickled when the worker starts a job process, after livekit-agents set its variables, so the
    changes are taken then. Job processes forked from an early forkserver would miss them:
    livekit-agents and agents read ``LIVEKIT_URL`` and the keys from the environment.
    """

    def __init__(self, baseline: dict[str, str], inner: Callable[[Any], Any] | None) -> None:
        self.baseline = baseline
        self.inner = inner
        self.changes: dict[str, str] = {}
        self.removed: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        changes = {k: v for k, v in os.environ.items() if self.baseline.get(k) != v}
        removed = [k for k in self.baseline if k not in os.environ]
        return {"baseline": {}, "inner": self.inner, "changes": changes, "removed": removed}

    def __call__(self, proc: Any) -> Any:
        """Apply the environment changes, then run the agent's setup."""
        os.environ.update(self.changes)
        for name in self.removed:
            os.environ.pop(name, None)
        return self.inner(proc) if self.inner is not None else None


def read_connection(stream: Any) -> dict[str, str] | None:
    """The server's ``url``, ``api_key`` and ``api_secret`` from one JSON line, or None at end
    of input (the test session ended before it had a server for this worker).
    """
    import json

    line = stream.readline()
    if not line.strip():
        return None
    data = json.loads(line)
    missing = [k for k in ("url", "api_key", "api_secret") if not isinstance(data.get(k), str)]
    if missing:
        raise ValueError(f"connection line lacks {', '.join(missing)}")
    return {k: data[k] for k in ("url", "api_key", "api_secret")}


def main(argv: list[str]) -> int:
    """Run the worker until SIGTERM/SIGINT."""
    if len(argv) != 2:
        print("usage: python -m pytest_livekit.agent._worker_main module:attribute PORT", file=sys.stderr)
        return 2
    spec, port = argv
    os.environ.pop("LIVEKIT_DEV_MODE", None)
    sys.path.insert(0, os.getcwd())
    forkserver_env = dict(os.environ) if start_forkserver_early() else None

    from livekit.agents import AgentServer, JobExecutorType
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker

    from pytest_livekit.agent.in_process import resolve_agent_target

    try:
        target = resolve_agent_target(spec)
    except Exception:
        # say which import path the worker used: what imports in the test process must import here
        print("pytest-livekit worker: import path (sys.path):\n  " + "\n  ".join(sys.path), file=sys.stderr)
        raise
    module_name, _, attr = spec.partition(":")
    obj = getattr(sys.modules[module_name], attr)
    if isinstance(obj, AgentServer):
        server = obj
    else:  # a bare entrypoint: give it a server of its own
        server = AgentServer()
        server.rtc_session(agent_name=os.environ.get("LIVEKIT_AGENT_NAME_OVERRIDE", ""))(
            target.entrypoint
        )
    offline = os.environ.get("PYTEST_LIVEKIT_PROVIDERS") == "offline"
    if offline:
        from pytest_livekit.agent.substitution import drop_cloud_model_runners

        drop_cloud_model_runners()
    # imports done: now wait for the server (the test sends it when it has one)
    print("pytest-livekit worker: imported, waiting for the server", file=sys.stderr, flush=True)
    connection = read_connection(sys.stdin)
    if connection is None:
        return 0
    os.environ["LIVEKIT_URL"] = connection["url"]
    os.environ["LIVEKIT_API_KEY"] = connection["api_key"]
    os.environ["LIVEKIT_API_SECRET"] = connection["api_secret"]
    if offline:
        start_offline_mode()
        server.setup_fnc = functools.partial(offline_job_setup, server.setup_fnc)
    if forkserver_env is not None:
        # (private attributes: an AgentServer that lacks them is served as livekit-agents starts it)
        forks = getattr(server, "_mp_ctx_str", None) == "forkserver"
        if forks and getattr(server, "_job_executor_type", None) == JobExecutorType.PROCESS:
            server.setup_fnc = JobProcessSetup(forkserver_env, server.setup_fnc)
        else:
            stop_early_forkserver()
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
