"""pytest hooks: options, the ``livekit`` marker, header, report sections, summary, cleanup.

Hooks only: each one hands pytest's objects to the library (:mod:`pytest_livekit.session`,
:mod:`pytest_livekit.outputs.run_summary`, ...) or to the glue that connects them
(:mod:`pytest_livekit.pytest_run.glue`, :mod:`pytest_livekit.pytest_run.limits`,
:mod:`pytest_livekit.pytest_run.outcomes`). Nothing heavy is imported at module level, because pytest loads
this plugin in every run of every project that has it installed.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_livekit.config import MARKER_HELP, add_options, marker_options, resolve_settings
from pytest_livekit.errors import PytestLivekitError
from pytest_livekit.fixtures import (
    livekit_agent,
    livekit_call,
    livekit_call_type,
    livekit_llm_rules,
    livekit_scenario,
    livekit_server,
    livekit_settings,
    livekit_workers,
    make_livekit_call,
)
from pytest_livekit.outputs.run_summary import OutputOptions
from pytest_livekit.pytest_run.call_results import finish_test_call, note_outcome
from pytest_livekit.pytest_run.glue import (
    call_sections,
    check_collected,
    clear_previous_calls,
    mark_asyncio,
    parametrize_scenarios,
    progress_for,
    run_collector,
    session_for,
    stop_everything_started,
    stop_unneeded_workers,
    uses_call,
    worker_pool,
)
from pytest_livekit.pytest_run.keys import (
    CALL_KEY,
    CHECKED_KEY,
    CLEARED_KEY,
    IN_BODY_KEY,
    LOOP_KEY,
    OUTCOME_KEY,
    PRESTARTED_KEY,
    PROGRESS_KEY,
    SERVER_KEY,
    SESSION_KEY,
    SETTINGS_KEY,
    WORKER_KEY,
)
from pytest_livekit.pytest_run.limits import call_ended, check_open_calls, limits_at_teardown
from pytest_livekit.pytest_run.outcomes import no_outcome
from pytest_livekit.pytest_run.timeout_guard import PHASE_KEY, fail_if_timed_out, timed_out_in

__all__ = [
    # the fixtures pytest registers from this module
    "livekit_agent",
    "livekit_call",
    "livekit_call_type",
    "livekit_llm_rules",
    "livekit_scenario",
    "livekit_server",
    "livekit_settings",
    "livekit_workers",
    "make_livekit_call",
    # kept importable from here (tests and conftests written before they moved)
    "CALL_KEY",
    "CHECKED_KEY",
    "IN_BODY_KEY",
    "LOOP_KEY",
    "OUTCOME_KEY",
    "PROGRESS_KEY",
    "SERVER_KEY",
    "SETTINGS_KEY",
    "WORKER_KEY",
    "call_ended",
    "progress_for",
    "worker_pool",
]

#: How each style of a summary line is shown on the terminal.
_MARKUP = {"warn": {"yellow": True}, "bad": {"red": True, "bold": True}}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--livekit-*`` options and their ``livekit_*`` ini twins."""
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and validate the configuration early."""
    config.addinivalue_line("markers", MARKER_HELP)
    run_collector(config)
    if config.option.help or config.option.version:
        return  # validation must never break --help / --version
    try:
        config.stash[SETTINGS_KEY] = settings = resolve_settings(config)
        if settings.otel_path is not None:
            from pytest_livekit.outputs.otel import require_otel

            require_otel()  # a missing extra is said now, not after a long run
    except PytestLivekitError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Worker mode set for the run: spawn the agent's worker now, so that its imports (about
    2 s) overlap collection and the server's start rather than wait for the first call.
    """
    config = session.config
    xdist_controller = getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")
    if SETTINGS_KEY not in config.stash or config.option.collectonly or xdist_controller:
        return
    session_for(config).prestart_worker()


def pytest_itemcollected(item: pytest.Item) -> None:
    """The first test that places a call: set the caller's process and the server going now
    (:meth:`~pytest_livekit.session.LivekitSession.prestart`), so they start while the rest of
    collection and its checks run instead of after them.
    """
    config = item.config
    if PRESTARTED_KEY in config.stash or SETTINGS_KEY not in config.stash or not uses_call(item):
        return
    config.stash[PRESTARTED_KEY] = True
    xdist_controller = getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")
    if config.option.collectonly or xdist_controller:
        return  # the controller places no call; its workers prestart their own
    session_for(config).prestart()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: the run's calls are about to start (xdist workers never clear)."""
    stop_unneeded_workers(session)
    if hasattr(session.config, "workerinput") or session.testsfailed:
        return  # (pytest calls this even when collection failed)
    if any(uses_call(item) for item in session.items):
        clear_previous_calls(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """With xdist, on the controller: a worker collected, the calls are about to start."""
    if ids:
        clear_previous_calls(node.config)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """One line: which server mode and agent are in use, and where each setting came from."""
    settings = config.stash.get(SETTINGS_KEY, None)
    return [settings.header()] if settings is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.livekit(call_types=...)``: one test id per call type;
    ``scenarios=...``: one test id per scenario (and table row) of the files.
    """
    marks = list(metafunc.definition.iter_markers("livekit"))
    if any("scenarios" in m.kwargs for m in marks):
        parametrize_scenarios(metafunc)
        return
    if not any("call_types" in m.kwargs for m in marks):
        return
    settings = metafunc.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return
    try:
        opts = marker_options(metafunc.definition, settings)
    except PytestLivekitError as exc:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {exc}") from None
    if "livekit_call_type" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: call_types= needs the livekit_call, make_livekit_call "
            "or livekit_call_type fixture."
        )
    metafunc.parametrize("livekit_call_type", list(opts.call_types), ids=list(opts.call_types), indirect=True)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Mark livekit tests as asyncio tests, so they run in pytest-asyncio's strict mode (its
    default) without the user configuring anything.

    pytest-asyncio 1.x decides in its own ``pytest_pycollect_makeitem`` hook wrapper, right after
    pytest built the items: an item with an ``asyncio`` mark becomes one of its items, any other
    async test is left to fail ("async def functions are not natively supported"); a mark added
    later (``pytest_collection_modifyitems``) is too late. ``trylast`` makes this wrapper the
    inner one, so its code after the ``yield`` marks the new items before pytest-asyncio looks.
    Items of classes and parametrized tests are all built here.
    """
    result = yield
    for item in result if isinstance(result, (list, tuple)) else [result]:
        if isinstance(item, pytest.Function):
            mark_asyncio(item, item.fixturenames, item.obj)
    return result


# pytest registers only attributes named pytest_*, hence specname for a second implementation.
@pytest.hookimpl(specname="pytest_generate_tests", wrapper=True)
def pytest_generate_tests_mark_asyncio(metafunc: pytest.Metafunc) -> Any:
    """Mark a livekit test's definition too, before pytest-asyncio's own ``pytest_generate_tests``
    (``tryfirst``; a wrapper runs before it) reads it: with a ``pytest_asyncio_loop_factories``
    hook, pytest-asyncio parametrizes only the tests marked at that point.
    """
    mark_asyncio(metafunc.definition, metafunc.fixturenames, metafunc.definition.obj)
    return (yield)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Validate ``livekit`` markers, the offline STT vocabulary and the agent target at
    collection, not mid-run.
    """
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return
    problems = check_collected(settings, items)
    if problems:
        config.stash[CLEARED_KEY] = True  # a run that stops here must not clear earlier calls
        raise pytest.UsageError("pytest-livekit:\n" + "\n".join(problems))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Per-attempt state starts empty (pytest-rerunfailures runs the same item again)."""
    item.stash[CALL_KEY] = []
    item.stash[PROGRESS_KEY] = []
    item.stash[OUTCOME_KEY] = no_outcome()
    item.stash[CHECKED_KEY] = {}
    item.stash[IN_BODY_KEY] = False
    item.stash[PHASE_KEY] = "setup"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The phase a pytest-timeout timeout fires in (see :mod:`pytest_livekit.pytest_run.timeout_guard`)."""
    item.stash[PHASE_KEY] = "teardown"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout on a test that places calls: the plugin's timer, so that a timeout ends it
    with a clear failure and its calls' artifacts kept (both methods; see
    :mod:`pytest_livekit.pytest_run.timeout_guard`). Other tests keep pytest-timeout's own.
    """
    if not uses_call(item):
        return None
    from pytest_livekit.pytest_run.timeout_guard import set_timer

    return set_timer(item, settings)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """When the test body returns (and only if it passed): hang up the calls with limits that are
    still open (``livekit_call``'s), and check every call with limits not checked yet, so a breach
    fails the test itself (its call phase), not its teardown. A test that failed keeps its own
    failure; an xfail test whose check fails stays xfailed.
    """
    item.stash[IN_BODY_KEY] = True
    item.stash[PHASE_KEY] = "call"
    try:
        result = yield
    except BaseException as exc:
        fail_if_timed_out(item, exc)
        raise
    finally:
        item.stash[IN_BODY_KEY] = False
    try:
        check_open_calls(item)
    except BaseException as exc:
        fail_if_timed_out(item, exc)
        raise
    fail_if_timed_out(item, None)  # the test caught the timeout's cancellation and returned
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Short errors for our own exceptions; call timeline and server log on failures; the call's
    trace, metrics properties and artifacts at teardown.
    """
    report: pytest.TestReport = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    timeout = timed_out_in(item, report.when) if report.when != "call" and report.failed else None
    if timeout is not None and (exc is None or type(exc).__name__ == "CancelledError"):
        # pytest-timeout's signal method cancelled a fixture's setup or teardown
        report.longrepr = timeout
        exc = pytest.fail.Exception(timeout, pytrace=False)
    if isinstance(exc, PytestLivekitError):
        # Our messages carry their evidence and a hint; the plugin's stack frames add nothing.
        report.longrepr = f"{type(exc).__name__}: {exc}"
    calls = item.stash.get(CALL_KEY, [])
    if report.when == "teardown" and calls:
        exc = limits_at_teardown(item, report, calls) or exc
    if calls:
        note_outcome(item, report, exc)
    if report.when == "call" or report.failed:
        for progress in item.stash.get(PROGRESS_KEY, []):
            progress.close()  # erase it before pytest writes the result
    report.sections += call_sections(item, report, calls[-1] if calls else None)
    if report.when == "teardown" and calls:
        # Rows and traces travel to the xdist controller as attributes of the report (TestReport
        # keeps extra attributes), not as user properties: junit.xml gets only the livekit.*
        # properties meant for people, and a user's own record_property("livekit", ...) is theirs.
        finished = [finish_test_call(item, report, c, n) for n, c in enumerate(calls, start=1)]
        report.livekit_rows = [row for row, _ in finished]  # type: ignore[attr-defined]
        report.livekit_traces = [trace for _, trace in finished]  # type: ignore[attr-defined]
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Evaluate the session SLOs per call type (a breach fails the run); write the session's
    JSONL, HTML report, baseline and OTel files; compare against a baseline.
    """
    if hasattr(session.config, "workerinput"):
        return  # xdist worker: the controller sees every report and decides
    settings = session.config.stash.get(SETTINGS_KEY, None)
    summary = run_collector(session.config).summary
    if settings is None:
        return
    summary.options = OutputOptions.from_settings(settings)
    summary.check_slos()
    summary.write_files()
    if summary.failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """A table per call type, SLO breaches, then one line per call (quiet under -q)."""
    summary = run_collector(config).summary
    session = config.stash.get(SESSION_KEY, None)
    for note in getattr(session, "notes", []):
        if note not in summary.notes:
            summary.notes.append(note)
    for line in summary.table_lines(config.get_verbosity()):
        if line.style == "section":
            terminalreporter.section(line.text)
        else:
            terminalreporter.write_line(line.text, **_MARKUP.get(line.style, {}))


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Ctrl-C: stop every worker, caller process and server we started before pytest exits."""
    stop_everything_started()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Safety net: nothing we started outlives the session."""
    stop_everything_started()
