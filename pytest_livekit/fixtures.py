"""The plugin's fixtures. Each one delegates to a library class that works without pytest.

PYTEST_DONT_REWRITE (only ``assertions`` is rewritten).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio


@dataclass(frozen=True)
class ServerHandle:
    """Where the session's livekit-server is and how to talk to it."""

    mode: str
    """``binary`` or ``external``."""
    url: str
    """WebSocket URL."""
    api_key: str
    """API key."""
    api_secret: str
    """API secret (never logged)."""
    version: str
    """Server version, or ``unknown`` for external servers."""
    log_path: Path | None = None
    """Server log file (managed servers only)."""
    startup_seconds: float | None = None
    """Seconds the managed server took to become ready."""

    def __repr__(self) -> str:
        return f"ServerHandle(mode={self.mode!r}, url={self.url!r}, version={self.version!r})"


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def livekit_settings(pytestconfig: pytest.Config) -> Any:
    """The resolved plugin settings (:class:`pytest_livekit.config.LivekitSettings`)."""
    from .plugin import SETTINGS_KEY

    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def livekit_server(pytestconfig: pytest.Config, livekit_settings: Any) -> Iterator[ServerHandle]:
    """A livekit-server for the whole session (one per xdist worker), stopped at session end.

    Binary mode starts :class:`pytest_livekit.server.LivekitServer` on free loopback ports with a
    random secret; external mode (``--livekit-url``) checks the given server answers.
    """
    from .caller import caller_host
    from .plugin import SERVER_KEY
    from .server import check_reachable

    # The caller's own process imports livekit while the server starts (the first call then
    # finds it ready); it is stopped with the session.
    caller_host().start()
    s = livekit_settings
    if s.server_mode.value == "external":
        url = str(s.url.value)
        check_reachable(url.replace("ws://", "http://").replace("wss://", "https://"))
        yield ServerHandle("external", url, str(s.api_key.value), str(s.api_secret.value), "unknown")
        return
    log_path = s.artifacts_dir.parent / f"livekit-server-{_worker_id()}.log"
    server = _managed_server(s, log_path)
    pytestconfig.stash[SERVER_KEY] = server
    server.start()
    try:
        yield ServerHandle(
            "docker" if hasattr(server, "container_id") else "binary",
            server.url,
            server.api_key,
            server.api_secret,
            server.version,
            server.log_path,
            server.startup_seconds,
        )
    finally:
        server.stop()


def _managed_server(s: Any, log_path: Path) -> Any:
    """The server for binary or docker mode; in auto mode docker is the fallback when no binary
    is found and a Docker engine with the image is available.
    """
    from .errors import ServerBinaryNotFoundError
    from .server import LivekitServer, find_server_binary

    common = dict(port=s.port, startup_timeout=s.startup_timeout, log_path=log_path)
    if s.server_mode.value == "docker":
        from .docker import DockerLivekitServer

        return DockerLivekitServer(str(s.docker_image.value), **common)
    try:
        binary = find_server_binary(s.server_binary.value, root=s.rootdir)
    except ServerBinaryNotFoundError:
        if s.server_mode.source != "auto" or s.server_binary.value:
            raise
        from .docker import DockerLivekitServer, docker_image_available

        if docker_image_available(str(s.docker_image.value)):
            return DockerLivekitServer(str(s.docker_image.value), **common)
        raise
    return LivekitServer(binary, **common)


@pytest.fixture(scope="session")
def livekit_workers(pytestconfig: pytest.Config) -> Iterator[Any]:
    """Agent worker processes for worker mode (:class:`pytest_livekit.worker.WorkerPool`), one per
    agent spec, started on first use (the configured agent's at session start) and stopped at
    session end.
    """
    from .plugin import worker_pool

    pool = worker_pool(pytestconfig)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def livekit_agent(request: pytest.FixtureRequest, livekit_settings: Any) -> Any:
    """The agent under test (:class:`pytest_livekit.agent_runner.AgentTarget`).

    From ``@pytest.mark.livekit(agent=...)``, else ``--livekit-agent`` / ini ``livekit_agent``.
    Override this fixture to return your own ``AgentTarget`` or ``'module:attribute'`` string.
    """
    from .config import marker_options

    opts = marker_options(request.node, livekit_settings)
    if opts.agent is not None:
        from .agent_runner import resolve_agent_target

        return resolve_agent_target(opts.agent, rootdir=livekit_settings.rootdir)
    return livekit_settings.agent_target()


@pytest.fixture
def livekit_llm_rules() -> list[Any]:
    """Offline LLM rules for the test's calls, tried before the marker's, the call type's and the
    run's (dicts in the ``[tool.pytest_livekit...llm]`` form, or ``pytest_livekit.offline.Rule``).

    Override it in a module, class or conftest to compute rules (e.g. from test data)::

        @pytest.fixture
        def livekit_llm_rules():
            return [{"when": "refund", "call": "lookup_order", "then": "Found it."}]
    """
    return []


@pytest.fixture
def livekit_call_type(request: pytest.FixtureRequest, livekit_settings: Any) -> Any:
    """The test's call type (:class:`pytest_livekit.thresholds.CallType`) with its limits, SLOs and
    script, after the marker's limit overrides; ``None`` when the test has no call type.

    Tests marked ``@pytest.mark.livekit(call_types="all")`` (or a list) run once per call type,
    with this fixture set to each in turn.
    """
    from .config import marker_options
    from .thresholds import CallType

    opts = marker_options(request.node, livekit_settings)
    name = getattr(request, "param", None) or opts.call_type
    if name is None:
        return None
    base = livekit_settings.call_type_configs.get(name) or CallType(name)
    return base.with_overrides(opts.limits) if opts.limits else base


def _call_folder(settings: Any, request: pytest.FixtureRequest, suffix: str = "") -> Path:
    """``<artifacts>/<module path>.<test name>``: tests with the same name in two files (or
    folders) never share a folder, e.g. ``voice.test_refund.test_happy_path[refund]``.
    """
    from .call import sanitize

    module, _, name = request.node.nodeid.partition("::")
    module = module.removesuffix(".py").replace("/", ".").replace("\\", ".")
    return Path(settings.artifacts_dir) / (sanitize(f"{module}.{name}", max_len=150) + suffix)


@pytest.fixture
def make_livekit_call(
    request: pytest.FixtureRequest,
    livekit_server: ServerHandle,
    livekit_settings: Any,
    livekit_call_type: Any,
) -> Callable[..., Any]:
    """Factory for extra or repeated calls in one test: ``async with factory() as call``.

    Keyword arguments override the marker (``call_type=``, ``join_timeout=``). When the block ends
    in the test body, the call is checked against its call type's limits (a breach fails the test
    there, or warns under ``--livekit-limits=warn``).
    """
    from . import call_metrics  # noqa: F401 - imported here, not first inside a report hook
    from .agent_runner import resolve_agent_target
    from .call import LivekitCall
    from .config import marker_options
    from .errors import ConfigError

    opts = marker_options(request.node, livekit_settings)
    counter = iter(range(1, 10_000))

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[LivekitCall]:
        from .plugin import CALL_KEY, LOOP_KEY, WORKER_KEY, call_ended

        n = next(counter)
        call_type = livekit_call_type
        if "call_type" in overrides:
            from .thresholds import CallType

            name = overrides.pop("call_type")
            call_type = livekit_settings.call_type_configs.get(name) or CallType(name)
        # The livekit_agent fixture (possibly overridden by the user) only when no agent= is given.
        target = overrides.pop("agent", None) or request.getfixturevalue("livekit_agent")
        if isinstance(target, str) or not hasattr(target, "entrypoint"):
            target = resolve_agent_target(target, rootdir=livekit_settings.rootdir)
        mode = overrides.pop("agent_mode", None) or opts.agent_mode or livekit_settings.agent_mode.value
        providers = overrides.pop("providers", None) or opts.providers or livekit_settings.providers.value
        from .config import offline_plan_for

        offline_plan = overrides.pop("offline_plan", None) or offline_plan_for(
            livekit_settings, call_type, opts, fixture_rules=request.getfixturevalue("livekit_llm_rules")
        )
        worker = None
        if mode == "worker":
            if target.spec.count(":") != 1:
                raise ConfigError(
                    f"worker mode needs the agent as a 'package.module:attribute' string, got "
                    f"{target.spec!r}.\nHint: set livekit_agent or @pytest.mark.livekit(agent=...)."
                )
            worker = request.getfixturevalue("livekit_workers").get(
                target.spec,
                url=livekit_server.url,
                api_key=livekit_server.api_key,
                api_secret=livekit_server.api_secret,
                providers=providers,
            )
            request.node.stash[WORKER_KEY] = worker
        call = LivekitCall(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            agent=target,
            name=request.node.name,
            call_type=call_type.name if call_type is not None else None,
            artifacts_dir=_call_folder(livekit_settings, request, "" if n == 1 else f"-{n}"),
            server_version=livekit_server.version,
            join_timeout=overrides.pop("join_timeout", None) or opts.join_timeout or 30.0,
            audio_root=Path(str(request.path)).parent,
            worker=worker,
            providers=providers,
            offline_plan=offline_plan,
            **overrides,
        )
        call.limits = dict(call_type.limits) if call_type is not None else {}
        from .plugin import progress_for

        label = request.node.name + (f"#{n}" if n > 1 else "")
        call.on_progress = progress = progress_for(request.node, label)
        request.node.stash.setdefault(CALL_KEY, []).append(call)
        request.node.stash[LOOP_KEY] = asyncio.get_running_loop()
        try:
            async with call:
                yield call
        finally:
            if progress is not None:
                progress.close()  # a test's next call gets its own line
        # the block ended without an exception and the call has hung up: its limits, now
        call_ended(request.node, call)

    return factory


@pytest_asyncio.fixture(loop_scope="function")
async def livekit_call(make_livekit_call: Callable[..., Any]) -> AsyncIterator[Any]:
    """A call to the agent under test in a fresh room: the caller is connected and the agent is
    listening (:class:`pytest_livekit.call.LivekitCall`). Artifacts are written at teardown.

    If the call type has limits, the plugin hangs up when the test body returns (if it passed)
    and checks them: a breach fails the test (or warns under ``--livekit-limits=warn``).
    """
    async with make_livekit_call() as call:
        yield call
