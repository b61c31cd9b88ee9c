"""What the plugin's hooks and fixtures do with pytest's objects: the run's session and worker
pool on ``config.stash``, the run's calls collected from the reports, which tests place calls,
asyncio marks, collection checks, the progress line, and the failure report's sections.

The work itself is done by library objects (:class:`~pytest_livekit.session.LivekitSession`,
:class:`~pytest_livekit.outputs.run_summary.RunSummary`, ...); this module only connects them to pytest.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import pytest

from pytest_livekit.config import marker_options
from pytest_livekit.errors import PytestLivekitError
from pytest_livekit.pytest_run.collector import RunCollector
from pytest_livekit.pytest_run.keys import (
    AGGREGATE_KEY,
    CLEARED_KEY,
    PROGRESS_KEY,
    SERVER_KEY,
    SESSION_KEY,
    SETTINGS_KEY,
    WORKER_KEY,
)

if TYPE_CHECKING:
    from pytest_livekit.agent.worker import WorkerPool
    from pytest_livekit.config import LivekitSettings
    from pytest_livekit.outputs.run_summary import RunSummary
    from pytest_livekit.pytest_run.progress import CallProgress
    from pytest_livekit.session import LivekitSession

__all__ = [
    "ASYNCIO_MARK",
    "CALL_FIXTURES",
    "call_sections",
    "check_collected",
    "clear_previous_calls",
    "is_coroutine_test",
    "mark_asyncio",
    "parametrize_scenarios",
    "progress_for",
    "run_collector",
    "run_summary",
    "session_for",
    "stop_unneeded_workers",
    "uses_call",
    "worker_pool",
]

#: The fixtures that place calls (a test using one is a livekit test).
CALL_FIXTURES = frozenset({"livekit_call", "make_livekit_call"})


def uses_call(item: pytest.Item) -> bool:
    """True when the test places calls (its fixture closure has a call fixture)."""
    return bool(CALL_FIXTURES & set(getattr(item, "fixturenames", ())))


# -- the run's session and its worker pool ------------------------------------------------------


def session_for(config: pytest.Config) -> LivekitSession:
    """The run's :class:`~pytest_livekit.session.LivekitSession` (created on first use from the
    run's settings; one per xdist worker, as each has its own config).
    """
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        from pytest_livekit.session import LivekitSession

        session = config.stash[SESSION_KEY] = LivekitSession.from_settings(config.stash[SETTINGS_KEY])
        # an xdist worker by its own config, not by an environment variable a test's inner
        # pytest inherits from the worker that runs it
        workerinput = getattr(config, "workerinput", None)
        session.log_name = str(workerinput["workerid"]) if workerinput else "main"
    return session


def worker_pool(config: pytest.Config) -> WorkerPool:
    """The session's :class:`~pytest_livekit.agent.worker.WorkerPool` (created on first use)."""
    return session_for(config).workers


def stop_unneeded_workers(session: pytest.Session) -> None:
    """After collection: a prestarted worker that no selected test uses is stopped at once."""
    livekit = session.config.stash.get(SESSION_KEY, None)
    pool = livekit.existing_workers() if livekit is not None else None
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if pool is None or settings is None:
        return
    needed: set[tuple[str, str]] = set()
    for item in session.items:
        if not uses_call(item):
            continue
        try:
            opts = marker_options(item, settings)
        except PytestLivekitError:
            continue  # the test reports its bad marker itself
        if (opts.agent_mode or settings.agent_mode.value) == "worker":
            spec = opts.agent or settings.agent
            needed.add((str(spec), str(opts.providers or settings.providers.value)))
    pool.keep_prestarted(needed)


# -- the run's calls ----------------------------------------------------------------------------


def run_collector(config: pytest.Config) -> RunCollector:
    """The run's :class:`RunCollector`, registered with pytest on first use."""
    if AGGREGATE_KEY not in config.stash:
        config.stash[AGGREGATE_KEY] = RunCollector()
        config.pluginmanager.register(config.stash[AGGREGATE_KEY], "livekit-run-aggregate")
    return config.stash[AGGREGATE_KEY]


def run_summary(config: pytest.Config) -> RunSummary:
    """The run's calls so far (see :class:`RunCollector`)."""
    return run_collector(config).summary


def clear_previous_calls(config: pytest.Config) -> None:
    """Remove the earlier runs' call folders (like Playwright's test-results), once, when this run
    is about to place its calls: a run that stops at collection, ``--collect-only`` and
    ``--livekit-keep-previous`` lose nothing. Only folders this plugin wrote (with a
    ``trace.json`` or ``call.json``) go; the summary says how many.
    """
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or config.stash.get(CLEARED_KEY, False) or config.option.collectonly:
        return
    config.stash[CLEARED_KEY] = True
    if settings.keep_previous:
        return
    from pytest_livekit.outputs.artifacts import remove_previous_calls

    removed = remove_previous_calls(settings.artifacts_dir)
    if removed:
        run_summary(config).notes.append(
            f"livekit: removed {removed} call folder{'s' if removed != 1 else ''} of an earlier run from "
            f"{settings.artifacts_dir} (keep them with --livekit-keep-previous)"
        )


# -- collection ---------------------------------------------------------------------------------


def check_collected(settings: LivekitSettings, items: list[pytest.Item]) -> list[str]:
    """Collection's checks: every ``livekit`` marker, the run's offline STT vocabulary (built
    once, from the suite), and the configured agent target (imported once, if a test needs it).

    Returns:
        One line per problem (``nodeid: what``), empty when all is well.
    """
    problems: list[str] = []
    needs_default_agent = False
    for item in items:
        try:
            opts = marker_options(item, settings)
        except PytestLivekitError as exc:
            problems.append(f"{item.nodeid}: {exc}")
            continue
        if uses_call(item) and opts.agent is None:
            needs_default_agent = True
    if any(uses_call(item) for item in items):
        # once per run, the same model for every call (never from the utterance about to be said)
        from pytest_livekit.config import collect_vocabulary

        try:
            collect_vocabulary(settings, sorted(_speaking_files(settings, items)), extra=scenario_phrases(items))
        except PytestLivekitError as exc:
            problems.append(f"offline STT vocabulary: {exc}")
    # With no agent configured, the livekit_agent fixture (which users may override) says so.
    if needs_default_agent and settings.agent is not None:
        try:
            settings.agent_target()  # import now: a typo fails at collection, once
        except PytestLivekitError as exc:
            problems.append(str(exc))
    return problems


def parametrize_scenarios(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.livekit(scenarios="file.toml")``: one test id per scenario (a table's
    rows each get theirs), with ``livekit_scenario`` set to it and the call type it names.

    Raises:
        pytest.UsageError: an invalid marker or scenario file (at collection, naming the file
            and key), or a test that does not use the ``livekit_scenario`` fixture.
    """
    from pytest_livekit.call.scenarios import scenario_params

    nodeid = metafunc.definition.nodeid
    settings = metafunc.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return
    try:
        opts = marker_options(metafunc.definition, settings)
        scenarios = scenario_params(list(opts.scenarios), Path(str(metafunc.definition.path)).parent)
        for scenario in scenarios:
            if scenario.call_type is not None and settings.call_types and scenario.call_type not in settings.call_types:
                from pytest_livekit.errors import ConfigError, did_you_mean

                raise ConfigError(
                    f"{scenario.source}: call_type {scenario.call_type!r} is not configured; valid: "
                    f"{', '.join(settings.call_types)}.{did_you_mean(scenario.call_type, settings.call_types)}"
                )
    except PytestLivekitError as exc:
        raise pytest.UsageError(f"{nodeid}: {exc}") from None
    if "livekit_scenario" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{nodeid}: scenarios= needs the livekit_scenario fixture (the scenario to play).")
    if "livekit_call_type" in metafunc.fixturenames:
        metafunc.parametrize(
            ["livekit_scenario", "livekit_call_type"],
            [(s, s.call_type or opts.call_type) for s in scenarios],
            ids=[s.name for s in scenarios],
            indirect=["livekit_call_type"],
        )
    else:
        metafunc.parametrize("livekit_scenario", scenarios, ids=[s.name for s in scenarios])


def scenario_phrases(items: Iterable[pytest.Item]) -> list[tuple[str, str]]:
    """What the collected scenario tests' callers may say, with where each line came from (for
    the offline STT vocabulary).
    """
    out: list[tuple[str, str]] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        scenario = callspec.params.get("livekit_scenario") if callspec is not None else None
        if scenario is not None and hasattr(scenario, "caller_lines"):
            out += [(line, scenario.source) for line in scenario.caller_lines()]
    return out


def _speaking_files(settings: LivekitSettings, items: Iterable[pytest.Item]) -> set[Path]:
    """The test files that place calls, and the conftest.py files above them up to the rootdir
    (shared fixtures speak from those too).
    """
    paths = {Path(str(item.path)) for item in items if uses_call(item)}
    for path in list(paths):
        for folder in path.parents:
            if (folder / "conftest.py").is_file():
                paths.add(folder / "conftest.py")
            if folder == settings.rootdir:
                break
    return paths


def is_coroutine_test(obj: Any) -> bool:
    """A test body pytest-asyncio can run: a coroutine function (also as a ``staticmethod``), or
    a Hypothesis ``@given`` wrapper around one (the README's ``make_livekit_call`` pattern).
    Async generators are not: pytest-asyncio refuses them as tests.
    """
    obj = getattr(obj, "__func__", obj) if isinstance(obj, staticmethod) else obj
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", None)
    return inspect.iscoroutinefunction(obj) or (
        getattr(obj, "is_hypothesis_test", False) and inspect.iscoroutinefunction(inner)
    )


ASYNCIO_MARK = pytest.mark.asyncio(loop_scope="function")
"""The mark a livekit test gets. Function loop scope: the ``livekit_call`` fixture runs on the
function-scoped loop by default, and a call must be awaited on the loop it was set up on.
"""


def mark_asyncio(node: pytest.Item, fixturenames: Iterable[str], obj: Any) -> None:
    """Mark a livekit test as an asyncio test, unless it carries an ``asyncio`` mark already (on
    itself, its class or its module: the user's mark and its ``loop_scope`` win).

    A livekit test is a coroutine test that uses ``livekit_call`` / ``make_livekit_call``
    (its fixture closure: its arguments, ``usefixtures`` marks, and fixtures that use them) or
    carries ``@pytest.mark.livekit``. Other async tests are left to the user's pytest-asyncio
    configuration.
    """
    if node.get_closest_marker("asyncio") is not None or not is_coroutine_test(obj):
        return
    if CALL_FIXTURES & set(fixturenames) or node.get_closest_marker("livekit") is not None:
        node.add_marker(ASYNCIO_MARK)


# -- the progress line --------------------------------------------------------------------------


class _TerminalStream(io.TextIOBase):
    """The terminal pytest writes to, looked up at each write: ``sys.stdout`` is the terminal
    itself inside ``CaptureManager.global_and_fixture_disabled()`` (the only place the progress
    line writes), while outside it the test's captured output.

    The line is not written through pytest's terminal writer: its backspaces would upset the
    writer's count of the current line's width, which places pytest's ``[ 50%]``.
    """

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def progress_for(item: pytest.Item, label: str) -> CallProgress | None:
    """The progress callback for a call of ``item`` (None when off: ``-q``, an xdist worker, not
    a terminal under ``auto``, or ``--livekit-progress=off``).
    """
    from pytest_livekit.pytest_run.progress import CallProgress, ProgressLine

    config = item.config
    settings = config.stash.get(SETTINGS_KEY, None)
    mode = settings.progress if settings is not None else "auto"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if mode == "off" or reporter is None or config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")
    # the test's output is captured while it runs; write past the capture, like live logging
    uncaptured = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext
    if bool(getattr(reporter, "isatty", False)):
        writer = config.get_terminal_writer()
        progress = CallProgress(
            label, line=ProgressLine(cast(IO[str], _TerminalStream()), width=writer.fullwidth),
            column=lambda: int(writer.width_of_current_line), uncaptured=uncaptured,
        )
    elif mode == "on":
        progress = CallProgress(label, write_line=reporter.write_line, uncaptured=uncaptured)
    else:
        return None
    item.stash.setdefault(PROGRESS_KEY, []).append(progress)
    return progress


# -- the failure report -------------------------------------------------------------------------


def call_sections(item: pytest.Item, report: pytest.TestReport, last_call: Any) -> list[tuple[str, str]]:
    """The sections a failed report gets: the last call's room, folder, replay command and
    timeline; the server's and the agent worker's log tails.
    """
    if not report.failed:
        return []
    sections: list[tuple[str, str]] = []
    if last_call is not None:
        rec = last_call.record
        sections.append((
            "livekit call",
            f"room {rec.call_id}; artifacts {rec.artifacts_dir}\n"
            f"replay: python -m pytest_livekit replay {rec.artifacts_dir}\n{rec.timeline()}",
        ))
    server = item.config.stash.get(SERVER_KEY, None)
    uses_server = "livekit_server" in getattr(item, "fixturenames", ())
    if uses_server and server is not None and hasattr(server, "log_tail"):
        sections.append((f"livekit-server log ({server.log_path})", server.log_tail(40)))
    worker = item.stash.get(WORKER_KEY, None)
    if worker is not None:
        sections.append((f"livekit agent worker log ({worker.log_path})", worker.log_tail(40)))
    return sections


def stop_everything_started() -> None:
    """Stop every agent worker, the caller process and every server this process started.

    Only modules already imported are asked (a run that placed no call imports nothing heavy
    here); each stop is idempotent, so Ctrl-C and the end of the session may both call it.
    """
    for name, stop in (
        ("pytest_livekit.agent.worker", "stop_all_workers"),
        ("pytest_livekit.call.caller", "stop_caller_host"),
        ("pytest_livekit.server.binary", "stop_all_servers"),
    ):
        module = sys.modules.get(name)
        if module is not None:
            getattr(module, stop)()
