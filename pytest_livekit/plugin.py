"""pytest hooks: options, the ``livekit`` marker, header, report sections, summary, cleanup.

Thin by design: the work happens in library classes (:mod:`pytest_livekit.server`,
:mod:`pytest_livekit.call`, ...). Nothing heavy is imported at module level, because pytest loads
this plugin in every run of every project that has it installed.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import json
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
    livekit_server,
    livekit_settings,
    livekit_workers,
    make_livekit_call,
)

__all__ = [
    "livekit_agent",
    "livekit_call",
    "livekit_call_type",
    "livekit_server",
    "livekit_settings",
    "livekit_workers",
    "make_livekit_call",
]

SETTINGS_KEY = pytest.StashKey[LivekitSettings]()
CALL_KEY = pytest.StashKey[Any]()
SERVER_KEY = pytest.StashKey[Any]()
WORKER_KEY = pytest.StashKey[Any]()
_CALL_FIXTURES = {"livekit_call", "make_livekit_call"}
_PROPERTY = "livekit"


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
        config.stash[SETTINGS_KEY] = resolve_settings(config)
    except PytestLivekitError as exc:
        raise pytest.UsageError(str(exc)) from None


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


def _is_coroutine_test(item: pytest.Item) -> bool:
    import inspect

    return inspect.iscoroutinefunction(getattr(item, "obj", None))


def _uses_call(item: pytest.Item) -> bool:
    return bool(_CALL_FIXTURES & set(getattr(item, "fixturenames", ())))


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
        if _uses_call(item):
            if opts.agent is None:
                needs_default_agent = True
            # Work in pytest-asyncio strict mode too: a livekit test is always an asyncio test.
            if item.get_closest_marker("asyncio") is None and _is_coroutine_test(item):
                item.add_marker(pytest.mark.asyncio)
    # With no agent configured, the livekit_agent fixture (which users may override) says so.
    if needs_default_agent and settings.agent is not None:
        try:
            settings.agent_target()  # import now: a typo fails at collection, once
        except PytestLivekitError as exc:
            problems.append(str(exc))
    if problems:
        raise pytest.UsageError("pytest-livekit:\n" + "\n".join(problems))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Short errors for our own exceptions; call timeline and server log on failures."""
    report: pytest.TestReport = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, PytestLivekitError):
        # Our messages carry their evidence and a hint; the plugin's stack frames add nothing.
        report.longrepr = f"{type(exc).__name__}: {exc}"
    livekit_call_obj = item.stash.get(CALL_KEY, None)
    if report.failed and livekit_call_obj is not None:
        rec = livekit_call_obj.record
        report.sections.append(
            (
                "livekit call",
                f"room {rec.call_id}; artifacts {rec.artifacts_dir}\n{rec.timeline()}",
            )
        )
    server = item.config.stash.get(SERVER_KEY, None)
    uses_server = "livekit_server" in getattr(item, "fixturenames", ())
    if report.failed and uses_server and server is not None and hasattr(server, "log_tail"):
        report.sections.append((f"livekit-server log ({server.log_path})", server.log_tail(40)))
    worker = item.stash.get(WORKER_KEY, None)
    if report.failed and worker is not None:
        report.sections.append((f"livekit agent worker log ({worker.log_path})", worker.log_tail(40)))
    if report.when == "call" and livekit_call_obj is not None:
        try:
            summary = call_summary(livekit_call_obj)
        except Exception as exc:  # metrics must never turn a test result into an internal error
            summary = {"call_type": livekit_call_obj.record.call_type, "metrics": {}, "tools": [],
                       "artifacts": livekit_call_obj.record.artifacts_dir,
                       "error": f"metrics failed: {type(exc).__name__}: {exc}"}
            report.sections.append(("livekit metrics error", summary["error"]))
        report.user_properties.append((_PROPERTY, json.dumps(summary)))
    return report


def call_summary(call: Any) -> dict[str, Any]:
    """Per-call numbers for the summary, SLOs and JUnit properties (metrics in seconds).

    Also writes them to ``metrics.json`` next to the call's recording.
    """
    from .call_metrics import compute_metrics, interruption_recovery
    from .thresholds import check_call

    rec = call.record
    stereo = call.caller.recording.stereo() if call.caller is not None else None
    metrics = compute_metrics(rec, stereo).to_dict()
    breaches = check_call(metrics, call.limits)
    summary = {
        "call_type": rec.call_type,
        "metrics": metrics,
        "breaches": [str(b) for b in breaches],
        "tool_breaches": [str(b) for b in breaches if b.name in ("expected_tools", "forbidden_tools")],
        "conditions": list(getattr(call, "condition_kinds", ()) or ()),
        "interruptions": list(interruption_recovery(rec)),
        # reconnects the caller made and how many the call survived (caller reconnects: issue 4)
        "reconnects": list(getattr(call, "reconnects", (0, 0))),
        "tools": [
            f"{t.name}({', '.join(f'{k}={v!r}' for k, v in t.arguments.items())})" for t in rec.tool_calls
        ],
        "setup_s": call.timings.get("setup"),
        "teardown_s": call.timings.get("teardown"),
        "artifacts": rec.artifacts_dir,
    }
    if rec.artifacts_dir:
        folder = Path(rec.artifacts_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(folder / "metrics.json")
    return summary


class _RunAggregate:
    """Every call's summary row of this run, per call type (on the xdist controller too: the
    rows travel in the reports' ``user_properties``).
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, Any]]] = []
        self.slo_breaches: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each call's row (runs on the xdist controller for worker reports)."""
        if report.when == "call":
            self.add(report)

    def add(self, report: pytest.TestReport) -> None:
        """Take the livekit row of a call-phase report, if it has one."""
        for key, value in report.user_properties:
            if key == _PROPERTY:
                data = json.loads(str(value))
                data["outcome_test"] = report.outcome
                self.rows.append((report.nodeid, report.outcome, data))

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
    """Evaluate the session SLOs per call type; a breach fails the run."""
    if hasattr(session.config, "workerinput"):
        return  # xdist worker: the controller sees every report and decides
    settings = session.config.stash.get(SETTINGS_KEY, None)
    aggregate = _aggregate_for(session.config)
    if settings is None or not aggregate.rows:
        return
    for name, summary in aggregate.summaries().items():
        call_type = settings.call_type_configs.get(name)
        if call_type is not None and call_type.slo:
            aggregate.slo_breaches += [str(b) for b in summary.check(call_type.slo)]
    if aggregate.slo_breaches and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """A table per call type, SLO breaches, then one line per call (quiet under -q)."""
    aggregate = _aggregate_for(config)
    if not aggregate.rows:
        return
    write = terminalreporter.write_line
    if aggregate.slo_breaches or config.get_verbosity() >= 0:
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
    if config.get_verbosity() < 0:
        return
    write("")
    for nodeid, outcome, data in sorted(aggregate.rows):
        turns = data["metrics"].get("turns") or []
        ttfa = " ".join(f"{t['ttfa'] * 1000:.0f}ms" if t.get("ttfa") is not None else "—" for t in turns)
        wer = " ".join(f"{t['wer']:.2f}" if t.get("wer") is not None else "—" for t in turns)
        tools = ", ".join(data["tools"]) or "no tools"
        write(f"{nodeid} [{data['call_type'] or '-'}] {outcome}: ttfa {ttfa or '—'} · wer {wer or '—'} · {tools}")
    write(f"artifacts: {Path(aggregate.rows[0][2]['artifacts'] or '.').parent}")


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Ctrl-C: stop every worker and server we started before pytest exits."""
    import sys

    worker_mod = sys.modules.get("pytest_livekit.worker")
    if worker_mod is not None:
        worker_mod.stop_all_workers()
    from .server import stop_all_servers

    stop_all_servers()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Safety net: nothing we started outlives the session."""
    import sys

    for name, stop in (("pytest_livekit.worker", "stop_all_workers"), ("pytest_livekit.server", "stop_all_servers")):
        mod = sys.modules.get(name)
        if mod is not None:
            getattr(mod, stop)()

