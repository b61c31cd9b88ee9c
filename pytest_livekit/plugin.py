"""pytest hooks: options, the ``livekit`` marker, header, report sections, summary, cleanup.

Thin by design: the work happens in library classes (:mod:`pytest_livekit.server`,
:mod:`pytest_livekit.call`, ...). Nothing heavy is imported at module level, because pytest loads
this plugin in every run of every project that has it installed.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .config import (
    MARKER_HELP,
    LivekitSettings,
    add_options,
    marker_options,
    resolve_settings,
)
from .errors import PytestLivekitError
from .fixtures import (
    livekit_agent,
    livekit_call,
    livekit_call_type,
    livekit_llm_rules,
    livekit_server,
    livekit_settings,
    livekit_workers,
    make_livekit_call,
)

__all__ = [
    "livekit_agent",
    "livekit_call",
    "livekit_call_type",
    "livekit_llm_rules",
    "livekit_server",
    "livekit_settings",
    "livekit_workers",
    "make_livekit_call",
]

SETTINGS_KEY = pytest.StashKey[LivekitSettings]()
CALL_KEY = pytest.StashKey[list[Any]]()
LOOP_KEY = pytest.StashKey[Any]()
"""The event loop the test's calls run on (to hang up a call still open when the body returns)."""
CHECKED_KEY = pytest.StashKey[dict[int, dict[str, Any]]]()
"""``id(call)`` -> its metrics, for the calls whose limits were checked when they ended."""
IN_BODY_KEY = pytest.StashKey[bool]()
"""True while the test function runs (a call whose block ends then is checked then)."""
SERVER_KEY = pytest.StashKey[Any]()
WORKER_KEY = pytest.StashKey[Any]()
_CALL_FIXTURES = {"livekit_call", "make_livekit_call"}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--livekit-*`` options and their ``livekit_*`` ini twins."""
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and validate the configuration early."""
    config.addinivalue_line("markers", MARKER_HELP)
    _aggregate_for(config)
    if config.option.help or config.option.version:
        return  # validation must never break --help / --version
    try:
        config.stash[SETTINGS_KEY] = settings = resolve_settings(config)
        if settings.otel_path is not None:
            from .otel import require_otel

            require_otel()  # a missing extra is said now, not after a long run
    except PytestLivekitError as exc:
        raise pytest.UsageError(str(exc)) from None


CLEARED_KEY = pytest.StashKey[bool]()
WORKERS_KEY = pytest.StashKey[Any]()


def worker_pool(config: pytest.Config) -> Any:
    """The session's :class:`~pytest_livekit.worker.WorkerPool` (created on first use)."""
    pool = config.stash.get(WORKERS_KEY, None)
    if pool is None:
        from .worker import WorkerPool

        settings = config.stash[SETTINGS_KEY]
        pool = config.stash[WORKERS_KEY] = WorkerPool(
            cwd=settings.rootdir,
            log_dir=Path(settings.artifacts_dir).parent,
            startup_timeout=max(60.0, settings.startup_timeout),
        )
    return pool


def pytest_sessionstart(session: pytest.Session) -> None:
    """Worker mode set for the run: spawn the agent's worker now, so that its imports (about
    2 s) overlap collection and the server's start rather than wait for the first call.
    """
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    xdist_controller = getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")
    if settings is None or config.option.collectonly or xdist_controller:
        return
    spec = settings.agent
    if settings.agent_mode.value == "worker" and isinstance(spec, str) and spec.count(":") == 1:
        worker_pool(config).prestart(spec, providers=str(settings.providers.value))


def _stop_unneeded_workers(session: pytest.Session) -> None:
    """After collection: a prestarted worker that no selected test uses is stopped at once."""
    pool = session.config.stash.get(WORKERS_KEY, None)
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if pool is None or settings is None:
        return
    from .config import marker_options

    needed: set[tuple[str, str]] = set()
    for item in session.items:
        if not _uses_call(item):
            continue
        try:
            opts = marker_options(item, settings)
        except PytestLivekitError:
            continue  # the test reports its bad marker itself
        if (opts.agent_mode or settings.agent_mode.value) == "worker":
            spec = opts.agent or settings.agent
            needed.add((str(spec), str(opts.providers or settings.providers.value)))
    pool.keep_prestarted(needed)


def _clear_previous_calls(config: pytest.Config) -> None:
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
    from .artifacts import remove_previous_calls

    removed = remove_previous_calls(settings.artifacts_dir)
    if removed:
        _aggregate_for(config).notes.append(
            f"livekit: removed {removed} call folder{'s' if removed != 1 else ''} of an earlier run from "
            f"{settings.artifacts_dir} (keep them with --livekit-keep-previous)"
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: the run's calls are about to start (xdist workers never clear)."""
    _stop_unneeded_workers(session)
    if hasattr(session.config, "workerinput") or session.testsfailed:
        return  # (pytest calls this even when collection failed)
    if any(_uses_call(item) for item in session.items):
        _clear_previous_calls(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """With xdist, on the controller: a worker collected, the calls are about to start."""
    if ids:
        _clear_previous_calls(node.config)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """One line: which server mode and agent are in use, and where each setting came from."""
    settings = config.stash.get(SETTINGS_KEY, None)
    return [settings.header()] if settings is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.livekit(call_types=...)``: one test id per call type."""
    marks = list(metafunc.definition.iter_markers("livekit"))
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


def _is_coroutine_test(obj: Any) -> bool:
    """A test body pytest-asyncio can run: a coroutine function (also as a ``staticmethod``), or
    a Hypothesis ``@given`` wrapper around one (the README's ``make_livekit_call`` pattern).
    Async generators are not: pytest-asyncio refuses them as tests.
    """
    import inspect

    obj = getattr(obj, "__func__", obj) if isinstance(obj, staticmethod) else obj
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", None)
    return inspect.iscoroutinefunction(obj) or (
        getattr(obj, "is_hypothesis_test", False) and inspect.iscoroutinefunction(inner)
    )


def _uses_call(item: pytest.Item) -> bool:
    return bool(_CALL_FIXTURES & set(getattr(item, "fixturenames", ())))


_ASYNCIO_MARK = pytest.mark.asyncio(loop_scope="function")
"""The mark a livekit test gets. Function loop scope: the ``livekit_call`` fixture runs on the
function-scoped loop by default, and a call must be awaited on the loop it was set up on.
"""


def _mark_asyncio(node: pytest.Item, fixturenames: Any, obj: Any) -> None:
    """Mark a livekit test as an asyncio test, unless it carries an ``asyncio`` mark already (on
    itself, its class or its module: the user's mark and its ``loop_scope`` win).

    A livekit test is a coroutine test that uses ``livekit_call`` / ``make_livekit_call``
    (its fixture closure: its arguments, ``usefixtures`` marks, and fixtures that use them) or
    carries ``@pytest.mark.livekit``. Other async tests are left to the user's pytest-asyncio
    configuration.
    """
    if node.get_closest_marker("asyncio") is not None or not _is_coroutine_test(obj):
        return
    if _CALL_FIXTURES & set(fixturenames) or node.get_closest_marker("livekit") is not None:
        node.add_marker(_ASYNCIO_MARK)


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
            _mark_asyncio(item, item.fixturenames, item.obj)
    return result


# pytest registers only attributes named pytest_*, hence specname for a second implementation.
@pytest.hookimpl(specname="pytest_generate_tests", wrapper=True)
def pytest_generate_tests_mark_asyncio(metafunc: pytest.Metafunc) -> Any:
    """Mark a livekit test's definition too, before pytest-asyncio's own ``pytest_generate_tests``
    (``tryfirst``; a wrapper runs before it) reads it: with a ``pytest_asyncio_loop_factories``
    hook, pytest-asyncio parametrizes only the tests marked at that point.
    """
    _mark_asyncio(metafunc.definition, metafunc.fixturenames, metafunc.definition.obj)
    return (yield)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Validate ``livekit`` markers and the agent target at collection, not mid-run."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return
    problems: list[str] = []
    needs_default_agent = False
    for item in items:
        try:
            opts = marker_options(item, settings)
        except PytestLivekitError as exc:
            problems.append(f"{item.nodeid}: {exc}")
            continue
        if _uses_call(item) and opts.agent is None:
            needs_default_agent = True
    if any(_uses_call(item) for item in items):
        # once per run, the same model for every call (never from the utterance about to be said)
        from .config import collect_vocabulary

        paths = {Path(str(item.path)) for item in items if _uses_call(item)}
        for path in list(paths):  # shared fixtures speak from conftest.py files too
            for folder in path.parents:
                if (folder / "conftest.py").is_file():
                    paths.add(folder / "conftest.py")
                if folder == settings.rootdir:
                    break
        try:
            collect_vocabulary(settings, sorted(paths))
        except PytestLivekitError as exc:
            problems.append(f"offline STT vocabulary: {exc}")
    # With no agent configured, the livekit_agent fixture (which users may override) says so.
    if needs_default_agent and settings.agent is not None:
        try:
            settings.agent_target()  # import now: a typo fails at collection, once
        except PytestLivekitError as exc:
            problems.append(str(exc))
    if problems:
        config.stash[CLEARED_KEY] = True  # a run that stops here must not clear earlier calls
        raise pytest.UsageError("pytest-livekit:\n" + "\n".join(problems))


OUTCOME_KEY = pytest.StashKey[dict[str, Any]]()
PROGRESS_KEY = pytest.StashKey[list[Any]]()


def progress_for(item: pytest.Item, label: str) -> Any:
    """The progress callback for a call of ``item`` (None when off: ``-q``, an xdist worker, not
    a terminal under ``auto``, or ``--livekit-progress=off``).
    """
    from .progress import CallProgress, ProgressLine

    config = item.config
    settings = config.stash.get(SETTINGS_KEY, None)
    mode = settings.progress if settings is not None else "auto"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if mode == "off" or reporter is None or config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return None
    writer = getattr(reporter, "_tw", None)
    # pytest's own output stream: sys.stdout is captured while the test runs
    stream = getattr(writer, "_file", None)
    tty = bool(getattr(reporter, "isatty", False))
    capture = config.pluginmanager.get_plugin("capturemanager")
    # the test's output is captured while it runs; write past the capture, like live logging
    uncaptured = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext
    if tty and stream is not None and writer is not None:
        progress = CallProgress(
            label, line=ProgressLine(stream, width=writer.fullwidth),
            column=lambda: int(writer.width_of_current_line), uncaptured=uncaptured,
        )
    elif mode == "on":
        progress = CallProgress(label, write_line=reporter.write_line, uncaptured=uncaptured)
    else:
        return None
    item.stash.setdefault(PROGRESS_KEY, []).append(progress)
    return progress


def _no_outcome() -> dict[str, Any]:
    """A test's outcome before any phase reported (what the trace says if nothing went wrong)."""
    return {"outcome": "passed", "phase": "", "message": ""}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Per-attempt state starts empty (pytest-rerunfailures runs the same item again)."""
    item.stash[CALL_KEY] = []
    item.stash[PROGRESS_KEY] = []
    item.stash[OUTCOME_KEY] = _no_outcome()
    item.stash[CHECKED_KEY] = {}
    item.stash[IN_BODY_KEY] = False


_LIMITS_HINT = (
    "Hint: the limits are [tool.pytest_livekit.call_types.<type>] in pyproject.toml; override one "
    "for this test with @pytest.mark.livekit(<limit>=...), or report breaches as warnings with "
    "--livekit-limits=warn (or @pytest.mark.livekit(limits=\"warn\"))."
)


def limits_mode(item: pytest.Item) -> str:
    """``fail`` or ``warn``: the marker's ``limits=``, else ``--livekit-limits`` / ``livekit_limits``."""
    settings = item.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return "fail"
    try:
        mode = marker_options(item, settings).limits_mode
    except PytestLivekitError:  # reported at collection
        mode = None
    return str(mode or settings.limits_mode.value)


def _limit_breaches(item: pytest.Item, call: Any) -> list[Any]:
    """The call's breaches of its limits; its metrics are computed once (the call has ended) and
    kept for its trace. A call whose metrics cannot be computed has none here: the teardown
    reports that error, as for every call.
    """
    from .thresholds import check_call

    checked = item.stash.setdefault(CHECKED_KEY, {})
    if id(call) not in checked:
        from .artifacts import ended_call_metrics

        try:
            checked[id(call)] = ended_call_metrics(call)
        except Exception:
            return []
    return check_call(checked[id(call)], call.limits)


def _check_limits(item: pytest.Item, calls: list[Any]) -> None:
    """Check ended calls against their limits: a warning per breached call under ``warn``, one
    :class:`~pytest_livekit.errors.LimitBreachError` for all of them under ``fail``.
    """
    from .assertions import limits_breached_message
    from .errors import LimitBreachError, LimitBreachWarning

    mode = limits_mode(item)
    failures = []
    for call in calls:
        breaches = _limit_breaches(item, call)
        if not breaches:
            continue
        if mode == "warn":  # at the test's own line; -W error::...LimitBreachWarning fails it
            item.warn(LimitBreachWarning(limits_breached_message(call, breaches, timeline=False)))
        else:
            failures.append(limits_breached_message(call, breaches))
    if failures:
        raise LimitBreachError("\n\n".join([*failures, _LIMITS_HINT]))


def call_ended(item: pytest.Item, call: Any) -> None:
    """A call's ``async with make_livekit_call()`` block ended without an exception: if that was in
    the test body, check the call's limits now (a breach fails the test at that line).
    """
    if getattr(call, "limits", None) and item.stash.get(IN_BODY_KEY, False):
        _check_limits(item, [call])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """When the test body returns (and only if it passed): hang up the calls with limits that are
    still open (``livekit_call``'s), and check every call with limits not checked yet, so a breach
    fails the test itself (its call phase), not its teardown. A test that failed keeps its own
    failure; an xfail test whose check fails stays xfailed.
    """
    item.stash[IN_BODY_KEY] = True
    try:
        result = yield
    finally:
        item.stash[IN_BODY_KEY] = False
    checked = item.stash.get(CHECKED_KEY, {})
    calls = [c for c in item.stash.get(CALL_KEY, []) if getattr(c, "limits", None) and id(c) not in checked]
    loop = item.stash.get(LOOP_KEY, None)
    if calls and loop is not None and not loop.is_closed() and not loop.is_running():
        for call in calls:
            loop.run_until_complete(call.aclose())  # the limits need the whole call; idempotent
        _check_limits(item, calls)
    return result


def _limits_at_teardown(item: pytest.Item, report: pytest.TestReport, calls: list[Any]) -> BaseException | None:
    """Calls not checked when the body returned (no event loop to hang them up on, e.g. a sync
    test whose calls ran elsewhere) are checked at teardown, if the test passed so far: a breach
    makes the teardown fail (``fail``, or a warning turned into an error) or warns. A breach
    never passes silently under ``fail``.
    """
    checked = item.stash.get(CHECKED_KEY, {})
    unchecked = [c for c in calls if getattr(c, "limits", None) and id(c) not in checked]
    if not unchecked or report.failed or item.stash.get(OUTCOME_KEY, _no_outcome())["outcome"] != "passed":
        return None
    try:
        _check_limits(item, unchecked)
    except (AssertionError, Warning) as exc:
        report.outcome = "failed"
        report.longrepr = f"{type(exc).__name__}: {exc}"
        return exc
    return None


def _phase_outcome(report: pytest.TestReport, exc: BaseException | None) -> str:
    """``passed``/``failed``/``error``/``timeout``/``skipped`` for one phase's report."""
    from .errors import CallTimeoutError

    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if not report.failed:
        return "passed"
    if isinstance(exc, CallTimeoutError) or "Timeout" in type(exc).__name__ or (
        exc is not None and str(exc).startswith("Timeout")  # pytest-timeout's signal method
    ):
        return "timeout"
    return "failed" if report.when == "call" else "error"


def _failure_text(report: pytest.TestReport, max_lines: int = 24) -> str:
    """The failure's own words: pytest's ``E`` lines and the location, not the source listing."""
    text = str(report.longrepr) if report.longrepr is not None else ""
    lines = text.splitlines()
    errors = [line[1:] for line in lines if line.startswith("E ")]
    if not errors:
        return "\n".join(lines[-max_lines:])
    import textwrap

    where = lines[-1] if not lines[-1].startswith("E ") else ""
    return (textwrap.dedent("\n".join(errors[:max_lines])) + "\n" + where).strip()


_SEVERITY = {"passed": 0, "skipped": 1, "xfailed": 1, "failed": 2, "timeout": 3, "error": 4}


def _note_outcome(item: pytest.Item, report: pytest.TestReport, exc: BaseException | None) -> None:
    """Keep the test's worst phase outcome so far (what the trace records)."""
    outcome = _phase_outcome(report, exc)
    seen = item.stash.setdefault(OUTCOME_KEY, _no_outcome())
    if _SEVERITY[outcome] > _SEVERITY[seen["outcome"]]:
        seen.update(outcome=outcome, phase=report.when, message=_failure_text(report))
    seen["duration_s"] = seen.get("duration_s", 0.0) + float(report.duration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Short errors for our own exceptions; call timeline and server log on failures; the call's
    trace, metrics properties and artifacts at teardown.
    """
    report: pytest.TestReport = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, PytestLivekitError):
        # Our messages carry their evidence and a hint; the plugin's stack frames add nothing.
        report.longrepr = f"{type(exc).__name__}: {exc}"
    calls = item.stash.get(CALL_KEY, [])
    livekit_call_obj = calls[-1] if calls else None
    if report.when == "teardown" and calls:
        exc = _limits_at_teardown(item, report, calls) or exc
    if livekit_call_obj is not None:
        _note_outcome(item, report, exc)
    if report.when == "call" or report.failed:
        for progress in item.stash.get(PROGRESS_KEY, []):
            progress.close()  # erase it before pytest writes the result
    if report.failed and livekit_call_obj is not None:
        rec = livekit_call_obj.record
        report.sections.append(
            (
                "livekit call",
                f"room {rec.call_id}; artifacts {rec.artifacts_dir}\n"
                f"replay: python -m pytest_livekit replay {rec.artifacts_dir}\n{rec.timeline()}",
            )
        )
    server = item.config.stash.get(SERVER_KEY, None)
    uses_server = "livekit_server" in getattr(item, "fixturenames", ())
    if report.failed and uses_server and server is not None and hasattr(server, "log_tail"):
        report.sections.append((f"livekit-server log ({server.log_path})", server.log_tail(40)))
    worker = item.stash.get(WORKER_KEY, None)
    if report.failed and worker is not None:
        report.sections.append((f"livekit agent worker log ({worker.log_path})", worker.log_tail(40)))
    if report.when == "teardown" and calls:
        # Rows and traces travel to the xdist controller as attributes of the report (TestReport
        # keeps extra attributes), not as user properties: junit.xml gets only the livekit.*
        # properties meant for people, and a user's own record_property("livekit", ...) is theirs.
        finished = [_finish_call(item, report, c, n) for n, c in enumerate(calls, start=1)]
        report.livekit_rows = [row for row, _ in finished]  # type: ignore[attr-defined]
        report.livekit_traces = [trace for _, trace in finished]  # type: ignore[attr-defined]
    return report


def _finish_call(
    item: pytest.Item, report: pytest.TestReport, call: Any, n: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """After the call's teardown (it has hung up): metrics, the trace, JUnit properties, the
    keep policy. Runs for passed, failed, errored and timed-out tests alike.
    """
    from .artifacts import finish_call

    settings = item.config.stash.get(SETTINGS_KEY, None)
    recorded = item.stash.setdefault(OUTCOME_KEY, _no_outcome())
    outcome = dict(recorded)
    outcome["rootdir"] = str(settings.rootdir if settings is not None else item.config.rootpath)
    server = item.config.stash.get(SERVER_KEY, None)
    secrets = [getattr(server, "api_secret", "")]
    if settings is not None:
        secrets.append(str(settings.api_secret.value or ""))
    try:
        summary, trace = finish_call(
            call,
            nodeid=item.nodeid,
            outcome=outcome,
            keep=settings.keep if settings is not None else "all",
            secrets=secrets,
            metrics=item.stash.get(CHECKED_KEY, {}).get(id(call)),
        )
    except Exception as exc:  # artifacts must never turn a test result into an internal error
        summary = {"call_type": call.record.call_type, "metrics": {}, "tools": [],
                   "artifacts": call.record.artifacts_dir,
                   "error": f"metrics failed: {type(exc).__name__}: {exc}"}
        trace = None
        report.sections.append(("livekit metrics error", summary["error"]))
    summary["outcome_test"] = outcome["outcome"]
    from .artifacts import junit_properties

    props = junit_properties(summary, trace)
    # a test's second call (make_livekit_call) gets livekit.call2.* names
    report.user_properties.extend((k.replace("livekit.", f"livekit.call{n}.", 1) if n > 1 else k, v) for k, v in props)
    return summary, trace


class _RunAggregate:
    """Every call's summary row of this run, per call type (on the xdist controller too: the
    rows travel as the reports' ``livekit_rows`` attribute).
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, Any]]] = []
        self.traces: list[dict[str, Any]] = []
        self.slo_breaches: list[str] = []
        self.baseline_lines: list[str] = []
        self.baseline_failed = False
        self.written: list[str] = []
        self.notes: list[str] = []
        """Lines for the summary (e.g. how many earlier call folders were removed)."""
        self._worst: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each call's row and trace at its teardown report (on the xdist controller for
        worker reports: the row and the trace travel with the report).
        """
        outcome = _phase_outcome(report, None)  # the exception stays on the worker: no "timeout"
        previous = self._worst.get(report.nodeid, "passed")
        if _SEVERITY[outcome] > _SEVERITY[previous]:
            self._worst[report.nodeid] = outcome
        if report.when == "teardown":
            self.add(report, self._worst.pop(report.nodeid, "passed"))

    def add(self, report: pytest.TestReport, outcome: str) -> None:
        """Take the livekit row (and trace) of a teardown report, if it has one."""
        for row in getattr(report, "livekit_rows", None) or []:
            data = dict(row)
            data["outcome_test"] = data.get("outcome_test") or outcome
            self.rows.append((report.nodeid, data["outcome_test"], data))
        self.traces += [t for t in getattr(report, "livekit_traces", None) or [] if t]

    def summaries(self) -> dict[str, Any]:
        from .thresholds import CallTypeSummary

        out: dict[str, CallTypeSummary] = {}
        for _, _, data in self.rows:
            name = data.get("call_type") or "-"
            out.setdefault(name, CallTypeSummary(name)).add(data)
        return out


AGGREGATE_KEY = pytest.StashKey[_RunAggregate]()


def _aggregate_for(config: pytest.Config) -> _RunAggregate:
    if AGGREGATE_KEY not in config.stash:
        config.stash[AGGREGATE_KEY] = _RunAggregate()
        config.pluginmanager.register(config.stash[AGGREGATE_KEY], "livekit-run-aggregate")
    return config.stash[AGGREGATE_KEY]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Evaluate the session SLOs per call type (a breach fails the run); write the session's
    JSONL, HTML report, baseline and OTel files; compare against a baseline.
    """
    if hasattr(session.config, "workerinput"):
        return  # xdist worker: the controller sees every report and decides
    settings = session.config.stash.get(SETTINGS_KEY, None)
    aggregate = _aggregate_for(session.config)
    if settings is None:
        return
    for name, summary in aggregate.summaries().items():
        call_type = settings.call_type_configs.get(name)
        if call_type is not None and call_type.slo:
            aggregate.slo_breaches += [str(b) for b in summary.check(call_type.slo)]
    _session_files(settings, aggregate)
    failed = aggregate.slo_breaches or aggregate.baseline_failed
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _session_files(settings: LivekitSettings, aggregate: _RunAggregate) -> None:
    """Write calls.jsonl, the report, the OTel file; compare and save baselines. A failure in one
    is reported (and fails the run) without losing the others or crashing pytest.
    """
    traces = sorted(aggregate.traces, key=lambda t: (t["test"]["nodeid"], t["call"]["started_at_epoch"]))
    if not traces:
        if settings.baseline_compare or settings.baseline_save:
            aggregate.baseline_lines.append("baseline: no LiveKit call ran in this session; nothing compared or saved")
        return
    steps: list[tuple[str, Callable[[], Path]]] = [("calls", lambda: _write_jsonl(settings, traces))]
    if settings.report_path is not None:
        steps.append(("report", lambda: _write_report(settings, traces)))
    if settings.otel_path is not None:
        steps.append(("otel", lambda: _write_otel(settings, traces)))
    if settings.baseline_compare:
        steps.append(("baseline comparison", lambda: _compare_baseline(settings, aggregate, traces)))
    if settings.baseline_save:
        steps.append(("baseline", lambda: _save_baseline(settings, traces)))
    for what, step in steps:
        try:
            written = step()
        except Exception as exc:  # one broken output must not cost the others (or crash pytest)
            aggregate.baseline_lines.append(f"livekit: could not write the {what}: {type(exc).__name__}: {exc}")
            aggregate.baseline_failed = True
        else:
            aggregate.written.append(f"{what}: {written}")


def _write_jsonl(settings: LivekitSettings, traces: list[dict[str, Any]]) -> Path:
    from .artifacts import write_session_jsonl

    return write_session_jsonl(settings.session_dir / "calls.jsonl", traces)


def _write_report(settings: LivekitSettings, traces: list[dict[str, Any]]) -> Path:
    from .report import write_report

    assert settings.report_path is not None
    return write_report(settings.report_path, traces, settings=settings)


def _write_otel(settings: LivekitSettings, traces: list[dict[str, Any]]) -> Path:
    from .otel import write_otlp_json

    assert settings.otel_path is not None
    return write_otlp_json(settings.otel_path, traces)


def _compare_baseline(settings: LivekitSettings, aggregate: _RunAggregate, traces: list[dict[str, Any]]) -> Path:
    """Compare with the saved baseline; the comparison (both sides' versions and machines, every
    check) is kept as ``baseline-comparison.json`` next to calls.jsonl.
    """
    from ._files import atomic_write_text
    from .baseline import baseline_from_traces, compare, load_baseline

    assert settings.baseline_compare is not None
    saved = load_baseline(settings.baseline_compare, settings.baselines_dir)
    current = baseline_from_traces("current", traces)
    result = compare(current, saved, settings.tolerances)
    aggregate.baseline_lines += [f"baseline {saved.name}: {w}" for w in result.warnings]
    aggregate.baseline_lines += result.lines()
    aggregate.baseline_lines += [f"REGRESSION {r}" for r in result.regressions]
    aggregate.baseline_failed = aggregate.baseline_failed or not result.ok
    record = {
        **result.to_dict(),
        "baseline": {"versions": saved.versions, "machine": saved.machine, "created_at": saved.created_at},
        "current": {"versions": current.versions, "machine": current.machine, "created_at": current.created_at},
    }
    return atomic_write_text(settings.session_dir / "baseline-comparison.json", json.dumps(record, indent=1))


def _save_baseline(settings: LivekitSettings, traces: list[dict[str, Any]]) -> Path:
    from .baseline import baseline_from_traces, save_baseline

    assert settings.baseline_save is not None
    return save_baseline(baseline_from_traces(settings.baseline_save, traces), settings.baselines_dir)


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """A table per call type, SLO breaches, then one line per call (quiet under -q)."""
    aggregate = _aggregate_for(config)
    for line in aggregate.notes:
        terminalreporter.write_line(line)
    if not aggregate.rows:
        for line in aggregate.baseline_lines:  # e.g. "no LiveKit call ran": still say it
            terminalreporter.write_line(line, yellow=True)
        return
    write = terminalreporter.write_line
    if aggregate.slo_breaches or aggregate.baseline_failed or config.get_verbosity() >= 0:
        terminalreporter.section("livekit calls")
    if config.get_verbosity() >= 0:
        write(f"{'call type':<14}{'calls':>6}  {'ttfa p50':>9} {'p95':>8} {'p99':>8}  {'wer':>5}  "
              f"{'tools ok':>9}  {'failed':>6}  outcomes")
        for name, summary in sorted(aggregate.summaries().items()):
            v = summary.values()
            wer = f"{v['wer_mean']:.2f}" if v["wer_mean"] is not None else "—"
            outcomes = ", ".join(
                f"{o} {summary.outcomes.count(o)}" for o in sorted(set(summary.outcomes))
            )
            write(f"{name:<14}{summary.calls:>6}  {_ms(v['ttfa_p50_ms']):>9} {_ms(v['ttfa_p95_ms']):>8} "
                  f"{_ms(v['ttfa_p99_ms']):>8}  {wer:>5}  {summary.tools_ok:>4}/{summary.calls:<4}  "
                  f"{summary.failed:>6}  {outcomes}")
    for breach in aggregate.slo_breaches:
        terminalreporter.write_line(f"SLO breach: {breach}", red=True, bold=True)
    for line in aggregate.baseline_lines:
        bad = line.startswith(("REGRESSION", "baseline: ", "livekit: "))
        terminalreporter.write_line(line, red=bad, bold=bad)
    if config.get_verbosity() < 0:
        return
    write("")
    for nodeid, outcome, data in sorted(aggregate.rows, key=lambda row: row[:2]):  # rows of one test keep their order
        turns = data["metrics"].get("turns") or []
        ttfa = " ".join(f"{t['ttfa'] * 1000:.0f}ms" if t.get("ttfa") is not None else "—" for t in turns)
        wer = " ".join(f"{t['wer']:.2f}" if t.get("wer") is not None else "—" for t in turns)
        tools = ", ".join(data["tools"]) or "no tools"
        breached = sorted({str(b).split(":", 1)[0] for b in data.get("breaches") or []})
        limits = f" · breached {', '.join(breached)}" if breached else ""
        write(f"{nodeid} [{data['call_type'] or '-'}] {outcome}: ttfa {ttfa or '—'} · wer {wer or '—'} · {tools}{limits}")
    write(f"artifacts: {Path(aggregate.rows[0][2]['artifacts'] or '.').parent}")
    for line in aggregate.written:
        write(line)


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Ctrl-C: stop every worker and server we started before pytest exits."""
    import sys

    worker_mod = sys.modules.get("pytest_livekit.worker")
    if worker_mod is not None:
        worker_mod.stop_all_workers()
    caller_mod = sys.modules.get("pytest_livekit.caller")
    if caller_mod is not None:
        caller_mod.stop_caller_host()
    from .server import stop_all_servers

    stop_all_servers()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Safety net: nothing we started outlives the session."""
    import sys

    for name, stop in (
        ("pytest_livekit.worker", "stop_all_workers"),
        ("pytest_livekit.caller", "stop_caller_host"),
        ("pytest_livekit.server", "stop_all_servers"),
    ):
        mod = sys.modules.get(name)
        if mod is not None:
            getattr(mod, stop)()

