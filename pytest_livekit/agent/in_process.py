"""Run the agent under test in-process, joined to the test's room.

The user points the plugin at their production entrypoint: either an ``AgentServer`` (its
``@server.rtc_session`` function and ``setup_fnc``/prewarm are used) or a plain
``async def entrypoint(ctx: JobContext)``. It runs inside livekit-agents' ``fake_job_context``
with a real ``rtc.Room`` that the runner connects first with an agent-kind token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_livekit.errors import AgentCrashedError, AgentTargetError

Entrypoint = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class AgentTarget:
    """What to run as the agent under test."""

    entrypoint: Entrypoint
    """``async def entrypoint(ctx: JobContext)``."""
    prewarm: Callable[[Any], Any] | None = None
    """``def prewarm(proc: JobProcess)``; run once per process before the first call."""
    agent_name: str = "agent-under-test"
    """Name used for explicit dispatch and the ``lk.agent.name`` attribute."""
    spec: str = "<object>"
    """The ``module:attribute`` it was loaded from, for messages."""


def resolve_agent_target(spec: str | Any, *, rootdir: Path | None = None) -> AgentTarget:
    """Turn ``"package.module:attribute"`` (or the object itself) into an :class:`AgentTarget`.

    Raises:
        AgentTargetError: the module or attribute does not exist, or is neither an
            ``AgentServer`` nor an async entrypoint function; the message says what is valid.
    """
    obj: Any = spec
    label = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
    if isinstance(spec, str):
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise AgentTargetError(
                f"{spec!r} is not a valid agent target. Expected 'package.module:attribute', "
                "e.g. 'my_agent:server' (an AgentServer) or 'my_agent:entrypoint'.\n"
                "Hint: set livekit_agent in pytest.ini/pyproject.toml or --livekit-agent."
            )
        if rootdir is not None and str(rootdir) not in sys.path:
            sys.path.insert(0, str(rootdir))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name and module_name.startswith(exc.name):
                raise AgentTargetError(
                    f"agent target {spec!r}: module {module_name!r} not found "
                    f"(searched sys.path, including {rootdir}).\n"
                    "Hint: check the module path in livekit_agent / --livekit-agent, and that it is "
                    "importable from the rootdir."
                ) from None
            # the agent module itself imports something that is not installed: say what and where
            import traceback

            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
            where = f" ({frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
            import re

            named = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", str(exc))
            missing = f"{named.group(2)}.{named.group(1)}" if named else (exc.name or str(exc))
            package = (
                "livekit-plugins-" + missing.split(".")[2].replace("_", "-")
                if missing.startswith("livekit.plugins.") and missing.count(".") >= 2
                else missing.split(".")[0]
            )
            raise AgentTargetError(
                f"agent target {spec!r}: importing {module_name!r} needs {missing!r}, which is not "
                f"installed{where}: {exc}.\nHint: pip install {package} (into the environment pytest runs "
                "in), or add it to your test dependencies."
            ) from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            raise AgentTargetError(
                f"agent target {spec!r}: module {module_name!r} has no attribute {attr!r}. "
                f"It has: {', '.join(public) or '(nothing public)'}."
            ) from None
    # AgentServer: use what @server.rtc_session registered (private attributes, stable in 1.8).
    entry = getattr(obj, "_entrypoint_fnc", None)
    if entry is not None or type(obj).__name__ == "AgentServer":
        if entry is None:
            raise AgentTargetError(
                f"agent target {label!r} is an AgentServer without an entrypoint.\n"
                "Hint: decorate your entrypoint with @server.rtc_session(agent_name=...)."
            )
        setup = getattr(obj, "_setup_fnc", None)
        name = getattr(obj, "_agent_name", "") or "agent-under-test"
        return AgentTarget(entrypoint=entry, prewarm=setup, agent_name=name, spec=str(label))
    if inspect.iscoroutinefunction(obj):
        return AgentTarget(entrypoint=obj, spec=str(label))
    raise AgentTargetError(
        f"agent target {label!r} is a {type(obj).__name__}, not an AgentServer or an "
        "'async def entrypoint(ctx: JobContext)' function."
    )


class InProcessAgent:
    """The agent under test, running in this process and event loop.

    Args:
        target: what to run.
        url: server WebSocket URL.
        token: agent-kind token for the room (see :func:`pytest_livekit.server.tokens.agent_token`).
        identity: the agent's participant identity (must match the token).
        job_metadata: passed as ``ctx.job.metadata``.
        ice_servers: connect only through these TURN servers (relay-only ICE): the packet relay's
            address for a shaped agent.
    """

    def __init__(
        self,
        target: AgentTarget,
        *,
        url: str,
        token: str,
        identity: str,
        job_metadata: str = "",
        ice_servers: list[dict[str, Any]] | None = None,
    ) -> None:
        from livekit import rtc

        self._ice_servers = ice_servers
        self.target = target
        self.identity = identity
        self._url = url
        self._token = token
        self._metadata = job_metadata
        self.room = rtc.Room()
        self.failure: BaseException | None = None
        self.failure_traceback: str | None = None
        self._failed = asyncio.Event()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.session: Any = None
        self._on_failure: list[Callable[[], None]] = []

    def on_failure(self, callback: Callable[[], None]) -> None:
        """Register a callback run when the agent crashes (wakes waiters)."""
        self._on_failure.append(callback)

    def fail(self, exc: BaseException) -> None:
        """Fail the agent with ``exc``: kept as :attr:`failure`, waiters woken, callbacks run.

        The runner's own failure path (the entrypoint or the session raised); the call also
        uses it when offline mode breaks inside the agent (a network violation).
        """
        if self.failure is None:
            self.failure = exc
            self.failure_traceback = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
        self._failed.set()
        for cb in self._on_failure:
            cb()

    async def wait_until_failed(self) -> None:
        """Return when the agent has failed (never, for an agent that does not)."""
        await self._failed.wait()

    def raise_if_failed(self) -> None:
        """Raise :class:`AgentCrashedError` (chained to the agent's exception) if it crashed."""
        if self.failure is not None:
            raise AgentCrashedError(
                f"the agent under test ({self.target.spec}) raised "
                f"{type(self.failure).__name__}: {self.failure}\n"
                f"Agent traceback:\n{self.failure_traceback}"
            ) from self.failure

    async def start(self) -> None:
        """Connect the agent's room and start the entrypoint inside a fake job context."""
        from livekit import rtc

        from pytest_livekit.call.rtc_stats import relay_only_config

        # a shaped agent reaches the server only through the packet relay's TURN address
        rtc_config = relay_only_config(self._ice_servers) if self._ice_servers else None
        await self.room.connect(self._url, self._token, rtc.RoomOptions(connect_timeout=10.0, rtc_config=rtc_config))
        self._runner = asyncio.create_task(self._run(), name="pytest-livekit-agent")

    async def _run(self) -> None:
        from livekit.agents.testing import fake_job_context

        # The job context is a contextvar: enter and leave it inside this one task so that the
        # token reset happens in the context that set it.
        with fake_job_context(
            room=self.room,
            job_id=f"job-{self.room.name}",
            job_metadata=self._metadata,
            agent_identity=self.identity,
        ) as ctx:
            self.job_context = ctx
            try:
                if self.target.prewarm is not None:
                    _run_prewarm_once(self.target, ctx.proc)
                entry: asyncio.Future[None] = asyncio.ensure_future(self.target.entrypoint(ctx))
                stop: asyncio.Future[bool] = asyncio.ensure_future(self._stop.wait())
                waiting: set[asyncio.Future[Any]] = {entry, stop}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                error = entry.exception() if entry in done else None
                if error is not None:
                    self.fail(error)
                self.session = getattr(ctx, "_primary_agent_session", None)
                if self.session is not None:
                    self.session.on("close", self._on_session_close)
                await stop
                if not entry.done():
                    entry.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await entry
            except Exception as exc:  # prewarm failed
                self.fail(exc)
            finally:
                await self._shutdown(ctx)

    def _on_session_close(self, ev: Any) -> None:
        error = getattr(ev, "error", None)
        if error is not None and not self._stop.is_set():
            exc = error if isinstance(error, BaseException) else RuntimeError(str(error))
            self.fail(exc)

    async def _shutdown(self, ctx: Any) -> None:
        session = getattr(ctx, "_primary_agent_session", None)
        if session is not None:
            with contextlib.suppress(Exception):
                await session.aclose()
        # fake jobs never run shutdown callbacks; run them like a worker would (private list).
        for cb in list(getattr(ctx, "_shutdown_callbacks", [])):
            with contextlib.suppress(Exception):
                await cb("test finished")
        # The JobContext's session folder is only cleaned by a session's end hook; an agent
        # without an AgentSession would leave it to the garbage collector (ResourceWarning).
        tempdir = getattr(ctx, "_tempdir", None)
        if tempdir is not None:
            with contextlib.suppress(Exception):
                tempdir.cleanup()

    async def aclose(self) -> None:
        """Close the session, run shutdown callbacks, disconnect the agent's room."""
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.room.disconnect()


_prewarmed: dict[int, Any] = {}


def _run_prewarm_once(target: AgentTarget, proc: Any) -> None:
    # A worker prewarms once per process and reuses ``proc.userdata`` for every job; do the same
    # so that model loads (VAD, STT) are paid once per test session, not per test.
    key = id(target.prewarm)
    if key not in _prewarmed:
        assert target.prewarm is not None
        target.prewarm(proc)
        _prewarmed[key] = proc.userdata
    else:
        proc.userdata.update(_prewarmed[key])
