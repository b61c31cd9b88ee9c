"""The plugin's fixtures. Each one is a thin wrapper over a library object that works without
pytest: :class:`~pytest_livekit.session.LivekitSession` (the server, the worker pool and the
call factory) and :class:`~pytest_livekit.call.livekit_call.LivekitCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from pytest_livekit.pytest_run.glue import progress_for, session_for, worker_pool
from pytest_livekit.pytest_run.keys import CALL_KEY, LOOP_KEY, SERVER_KEY, SETTINGS_KEY, WORKER_KEY
from pytest_livekit.pytest_run.limits import call_ended
from pytest_livekit.session import ServerHandle

if TYPE_CHECKING:
    from pytest_livekit.agent.in_process import AgentTarget
    from pytest_livekit.agent.worker import WorkerPool
    from pytest_livekit.call.livekit_call import LivekitCall
    from pytest_livekit.call.scenarios import Scenario
    from pytest_livekit.config import LivekitSettings
    from pytest_livekit.metrics.thresholds import CallType

__all__ = [
    "ServerHandle",
    "livekit_agent",
    "livekit_call",
    "livekit_call_type",
    "livekit_llm_rules",
    "livekit_scenario",
    "livekit_server",
    "livekit_settings",
    "livekit_workers",
    "make_livekit_call",
]


@pytest.fixture(scope="session")
def livekit_settings(pytestconfig: pytest.Config) -> LivekitSettings:
    """The resolved plugin settings (:class:`pytest_livekit.config.LivekitSettings`)."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def livekit_server(pytestconfig: pytest.Config, livekit_settings: LivekitSettings) -> Iterator[ServerHandle]:
    """A livekit-server for the whole session (one per xdist worker), stopped at session end.

    Binary mode starts :class:`pytest_livekit.server.binary.LivekitServer` on free loopback ports with a
    random secret; docker mode the official image; external mode (``--livekit-url``) checks the
    given server answers. See :meth:`pytest_livekit.session.LivekitSession.start`.
    """
    session = session_for(pytestconfig)
    try:
        handle = session.start()
    finally:
        if session.server is not None:  # its log tail goes into failure reports, a failed start's too
            pytestconfig.stash[SERVER_KEY] = session.server
    try:
        yield handle
    finally:
        session.stop_server()


@pytest.fixture(scope="session")
def livekit_workers(pytestconfig: pytest.Config) -> Iterator[WorkerPool]:
    """Agent worker processes for worker mode (:class:`pytest_livekit.agent.worker.WorkerPool`), one per
    agent spec, started on first use (the configured agent's at session start) and stopped at
    session end.
    """
    pool = worker_pool(pytestconfig)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def livekit_agent(request: pytest.FixtureRequest, livekit_settings: LivekitSettings) -> AgentTarget:
    """The agent under test (:class:`pytest_livekit.agent.in_process.AgentTarget`).

    From ``@pytest.mark.livekit(agent=...)``, else ``--livekit-agent`` / ini ``livekit_agent``.
    Override this fixture to return your own ``AgentTarget`` or ``'module:attribute'`` string.
    """
    from pytest_livekit.config import marker_options

    opts = marker_options(request.node, livekit_settings)
    if opts.agent is not None:
        from pytest_livekit.agent.in_process import resolve_agent_target

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
def livekit_call_type(request: pytest.FixtureRequest, livekit_settings: LivekitSettings) -> CallType | None:
    """The test's call type (:class:`pytest_livekit.metrics.thresholds.CallType`) with its limits, SLOs and
    script, after the marker's limit overrides; ``None`` when the test has no call type.

    Tests marked ``@pytest.mark.livekit(call_types="all")`` (or a list) run once per call type,
    with this fixture set to each in turn.
    """
    from pytest_livekit.config import marker_options

    opts = marker_options(request.node, livekit_settings)
    name = getattr(request, "param", None) or opts.call_type
    if name is None:
        return None
    base = session_for(request.config).call_type(name)
    return base.with_overrides(opts.limits) if base is not None and opts.limits else base


@pytest.fixture
def livekit_scenario(request: pytest.FixtureRequest) -> Scenario:
    """The :class:`~pytest_livekit.call.scenarios.Scenario` this test id plays.

    From ``@pytest.mark.livekit(scenarios="file.toml")``: one test id per scenario or table row::

        @pytest.mark.livekit(scenarios="scenarios/refund.toml")
        async def test_refund(livekit_call, livekit_scenario):
            result = await livekit_call.run_scenario(livekit_scenario)
            assert_task_completed(result)
    """
    from pytest_livekit.call.scenarios import Scenario

    param = getattr(request, "param", None)
    if not isinstance(param, Scenario):
        raise pytest.UsageError(
            f"{request.node.nodeid}: livekit_scenario needs @pytest.mark.livekit(scenarios=\"file.toml\")."
        )
    return param


def _call_folder(settings: LivekitSettings, request: pytest.FixtureRequest, suffix: str = "") -> Path:
    """``<artifacts>/<module path>.<test name>``: tests with the same name in two files (or
    folders) never share a folder, e.g. ``voice.test_refund.test_happy_path[refund]``.
    """
    from pytest_livekit.call.livekit_call import sanitize

    module, _, name = request.node.nodeid.partition("::")
    module = module.removesuffix(".py").replace("/", ".").replace("\\", ".")
    return Path(settings.artifacts_dir) / (sanitize(f"{module}.{name}", max_len=150) + suffix)


@pytest.fixture
def make_livekit_call(
    request: pytest.FixtureRequest,
    livekit_server: ServerHandle,
    livekit_settings: LivekitSettings,
    livekit_call_type: CallType | None,
) -> Callable[..., contextlib.AbstractAsyncContextManager[LivekitCall]]:
    """Factory for extra or repeated calls in one test: ``async with factory() as call``.

    Keyword arguments override the marker (``call_type=``, ``join_timeout=``, ``agent=``,
    ``agent_mode=``, ``providers=``, ``offline_plan=``) or go to
    :class:`~pytest_livekit.call.livekit_call.LivekitCall` (``conditions=``, ...). When the block ends in the
    test body, the call is checked against its call type's limits (a breach fails the test
    there, or warns under ``--livekit-limits=warn``).
    """
    from pytest_livekit.config import marker_options

    session = session_for(request.config)
    opts = marker_options(request.node, livekit_settings)
    counter = iter(range(1, 10_000))

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[LivekitCall]:
        n = next(counter)
        # the fixtures (which users may override) only where the test did not say otherwise
        if not overrides.get("agent"):
            overrides["agent"] = request.getfixturevalue("livekit_agent")
        if not overrides.get("offline_plan") and "llm_rules" not in overrides:
            overrides["llm_rules"] = request.getfixturevalue("livekit_llm_rules")
        overrides.setdefault("call_type", livekit_call_type)
        request.getfixturevalue("livekit_workers")  # the pool is stopped with the session
        call = session.new_call(
            request.node.name,
            options=opts,
            artifacts_dir=_call_folder(livekit_settings, request, "" if n == 1 else f"-{n}"),
            audio_root=Path(str(request.path)).parent,
            **overrides,
        )
        call.test_id = request.node.nodeid
        if call.worker is not None:
            request.node.stash[WORKER_KEY] = call.worker
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
async def livekit_call(
    make_livekit_call: Callable[..., contextlib.AbstractAsyncContextManager[LivekitCall]],
) -> AsyncIterator[LivekitCall]:
    """A call to the agent under test in a fresh room: the caller is connected and the agent is
    listening (:class:`pytest_livekit.call.livekit_call.LivekitCall`). Artifacts are written at teardown.

    If the call type has limits, the plugin hangs up when the test body returns (if it passed)
    and checks them: a breach fails the test (or warns under ``--livekit-limits=warn``).
    """
    async with make_livekit_call() as call:
        yield call
