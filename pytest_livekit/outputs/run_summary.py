"""A run's calls, summed up: the session files and the terminal table.

The files are ``calls.jsonl``, the report, the OTel file and the baseline; both come from the
calls' traces and summary rows, without pytest::

    summary = RunSummary(traces, OutputOptions(session_dir=Path(".livekit")))
    summary.check_slos()
    summary.write_files()
    print(render_lines(summary.table_lines()))

The plugin fills one during the run (a row and a trace per call, at each test's teardown report,
on the xdist controller too) and writes and prints it at the session's end; a command that merges
earlier runs can build the same files and the same table from their traces.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_livekit.call.scenarios import scenario_row
from pytest_livekit.units import ms_to_seconds, to_ms

if TYPE_CHECKING:
    from pytest_livekit.config import LivekitSettings
    from pytest_livekit.metrics.thresholds import CallTypeSummary

__all__ = ["OutputOptions", "RunSummary", "SummaryLine", "render_lines", "row_from_trace"]


@dataclass
class OutputOptions:
    """Which session files a :class:`RunSummary` writes, and where (the settings they need)."""

    session_dir: Path
    """Folder of ``calls.jsonl`` and ``baseline-comparison.json`` (the artifacts folder's parent)."""
    call_type_configs: Mapping[str, Any] = field(default_factory=dict)
    """Call type name -> :class:`~pytest_livekit.metrics.thresholds.CallType` (SLOs; the report's limits)."""
    report_path: Path | None = None
    """Where to write the HTML report, if at all."""
    otel_path: Path | None = None
    """Where to write the OTLP JSON spans, if at all."""
    baseline_save: str | None = None
    """Save the run's metrics as this baseline name."""
    baseline_compare: str | None = None
    """Compare the run with this baseline (name or path)."""
    tolerances: Mapping[str, Any] = field(default_factory=dict)
    """Baseline tolerances (:class:`~pytest_livekit.outputs.baseline.Tolerance` per metric)."""

    @property
    def baselines_dir(self) -> Path:
        """Folder of saved baselines (``<session dir>/baselines``)."""
        return self.session_dir / "baselines"

    @classmethod
    def from_settings(cls, settings: LivekitSettings) -> OutputOptions:
        """The options of a pytest run's resolved settings."""
        return cls(
            session_dir=settings.session_dir,
            call_type_configs=dict(settings.call_type_configs),
            report_path=settings.report_path,
            otel_path=settings.otel_path,
            baseline_save=settings.baseline_save,
            baseline_compare=settings.baseline_compare,
            tolerances=dict(settings.tolerances),
        )


@dataclass(frozen=True)
class SummaryLine:
    """One line of the run's summary, with how it is meant to look."""

    text: str
    """The text."""
    style: str = ""
    """``""`` (plain), ``section`` (a heading), ``warn`` (yellow) or ``bad`` (red, bold)."""


def render_lines(lines: Iterable[SummaryLine], width: int = 80) -> str:
    """The summary as plain text (a ``section`` line becomes a ``=== title ===`` rule)."""
    out = []
    for line in lines:
        if line.style == "section":
            title = f" {line.text} "
            pad = max(0, width - len(title))
            out.append("=" * (pad // 2) + title + "=" * (pad - pad // 2))
        else:
            out.append(line.text)
    return "\n".join(out)


def _tool_text(call: Mapping[str, Any]) -> str:
    """A tool call as the summary row writes it: ``name(key='value', ...)``."""
    args = call.get("arguments") or {}
    return f"{call.get('name')}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def row_from_trace(trace: Mapping[str, Any]) -> dict[str, Any]:
    """A call's summary row (as :func:`pytest_livekit.outputs.artifacts.call_summary` makes it) rebuilt
    from its trace, for a summary of calls whose rows are gone (e.g. merged runs).

    The trace keeps no barge-in count, so ``interruptions`` is ``(0, 0)``: the
    ``interruption_recovery`` SLO is not evaluated from traces alone.
    """
    call = trace.get("call") or {}
    breaches = [str(b) for b in trace.get("breaches") or []]
    conditions = trace.get("conditions") or {}
    kinds: list[str] = []
    if conditions.get("items"):
        from pytest_livekit.conditions.media import Conditions

        kinds = list(Conditions.from_dict(dict(conditions)).kinds())
    reconnects = list(trace.get("reconnects") or [])
    artifacts = trace.get("artifacts") or {}
    return {
        "call_type": call.get("call_type"),
        "metrics": dict(trace.get("metrics") or {}),
        "breaches": breaches,
        "tool_breaches": [b for b in breaches if b.split(":", 1)[0] in ("expected_tools", "forbidden_tools")],
        "conditions": kinds,
        "interruptions": [0, 0],
        "reconnects": [len(reconnects), sum(1 for r in reconnects if isinstance(r, Mapping) and r.get("ok"))],
        "tools": [_tool_text(c) for c in trace.get("tool_calls") or []],
        "artifacts": artifacts.get("folder"),
        "outcome_test": (trace.get("test") or {}).get("outcome"),
        "scenario": scenario_row(trace.get("scenario")),
    }


def _duration(ms: float | None) -> str:
    """A run-table figure, already in milliseconds (the call type sums convert from seconds):
    ``612 ms`` below a second, ``1.84 s`` from one.
    """
    if ms is None:
        return "—"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms_to_seconds(ms):.2f} s"


class RunSummary:
    """Every call of a run: per call type sums, SLO breaches, the session files, the table.

    Args:
        traces: the calls' traces (``trace.json`` documents).
        options: which files :meth:`write_files` writes and the call types' SLOs; may be set
            later (the plugin resolves its settings after it starts collecting).
        rows: the calls' summary rows as ``(nodeid, test outcome, row)``; default: rebuilt
            from ``traces`` (:func:`row_from_trace`).
    """

    def __init__(
        self,
        traces: Iterable[Mapping[str, Any]] = (),
        options: OutputOptions | None = None,
        *,
        rows: Iterable[tuple[str, str, dict[str, Any]]] | None = None,
    ) -> None:
        self.traces: list[dict[str, Any]] = [dict(t) for t in traces]
        self.options = options
        if rows is None:
            rows = [
                (str((t.get("test") or {}).get("nodeid", "")), str(row["outcome_test"] or "unknown"), row)
                for t in self.traces
                for row in [row_from_trace(t)]
            ]
        self.rows: list[tuple[str, str, dict[str, Any]]] = list(rows)
        self.slo_breaches: list[str] = []
        """Session SLO breaches, per call type (``check_slos``)."""
        self.baseline_lines: list[str] = []
        """Baseline comparison lines and problems writing the files."""
        self.baseline_failed = False
        """A regression against the baseline, or a file that could not be written."""
        self.written: list[str] = []
        """``what: path`` of every file written."""
        self.notes: list[str] = []
        """Lines for the summary (e.g. how many earlier call folders were removed)."""

    @property
    def failed(self) -> bool:
        """True when an SLO was breached, the baseline regressed or a file could not be written."""
        return bool(self.slo_breaches or self.baseline_failed)

    def add(self, nodeid: str, outcome: str, row: Mapping[str, Any], trace: Mapping[str, Any] | None) -> None:
        """Add one call: its summary row (``outcome_test`` filled from ``outcome`` if missing)
        and its trace (None when its metrics failed).
        """
        data = dict(row)
        data["outcome_test"] = data.get("outcome_test") or outcome
        self.rows.append((nodeid, data["outcome_test"], data))
        if trace:
            self.traces.append(dict(trace))

    def summaries(self) -> dict[str, CallTypeSummary]:
        """Call type name (``-`` for none) -> its :class:`~pytest_livekit.metrics.thresholds.CallTypeSummary`."""
        from pytest_livekit.metrics.thresholds import CallTypeSummary

        out: dict[str, CallTypeSummary] = {}
        for _, _, data in self.rows:
            name = data.get("call_type") or "-"
            out.setdefault(name, CallTypeSummary(name)).add(data)
        return out

    def check_slos(self) -> list[str]:
        """Evaluate each call type's session SLOs; the breaches are kept and returned."""
        configs = self.options.call_type_configs if self.options is not None else {}
        for name, summary in self.summaries().items():
            call_type = configs.get(name)
            if call_type is not None and call_type.slo:
                self.slo_breaches += [str(b) for b in summary.check(call_type.slo)]
        return self.slo_breaches

    def write_files(self) -> list[str]:
        """Write calls.jsonl, the report, the OTel file; compare and save baselines. A failure in
        one is kept in :attr:`baseline_lines` (and sets :attr:`baseline_failed`) without losing
        the others. Returns :attr:`written`.
        """
        options = self.options
        if options is None:
            raise ValueError("RunSummary.write_files() needs OutputOptions (summary.options).")
        traces = sorted(self.traces, key=lambda t: (t["test"]["nodeid"], t["call"]["started_at_epoch"]))
        if not traces:
            if options.baseline_compare or options.baseline_save:
                self.baseline_lines.append("baseline: no LiveKit call ran in this session; nothing compared or saved")
            return self.written
        steps: list[tuple[str, Callable[[], Path]]] = [("calls", lambda: self._write_jsonl(options, traces))]
        if options.report_path is not None:
            steps.append(("report", lambda: self._write_report(options, traces)))
        if options.otel_path is not None:
            steps.append(("otel", lambda: self._write_otel(options, traces)))
        if options.baseline_compare:
            steps.append(("baseline comparison", lambda: self._compare_baseline(options, traces)))
        if options.baseline_save:
            steps.append(("baseline", lambda: self._save_baseline(options, traces)))
        for what, step in steps:
            try:
                written = step()
            except Exception as exc:  # one broken output must not cost the others (or crash pytest)
                self.baseline_lines.append(f"livekit: could not write the {what}: {type(exc).__name__}: {exc}")
                self.baseline_failed = True
            else:
                self.written.append(f"{what}: {written}")
        return self.written

    @staticmethod
    def _write_jsonl(options: OutputOptions, traces: list[dict[str, Any]]) -> Path:
        from pytest_livekit.outputs.artifacts import write_session_jsonl

        return write_session_jsonl(options.session_dir / "calls.jsonl", traces)

    @staticmethod
    def _write_report(options: OutputOptions, traces: list[dict[str, Any]]) -> Path:
        from pytest_livekit.outputs.report import write_report

        assert options.report_path is not None
        # the report reads only the call types (their limits and SLOs) from its settings
        return write_report(options.report_path, traces, settings=options)

    @staticmethod
    def _write_otel(options: OutputOptions, traces: list[dict[str, Any]]) -> Path:
        from pytest_livekit.outputs.otel import write_otlp_json

        assert options.otel_path is not None
        return write_otlp_json(options.otel_path, traces)

    def _compare_baseline(self, options: OutputOptions, traces: list[dict[str, Any]]) -> Path:
        """Compare with the saved baseline; the comparison (both sides' versions and machines,
        every check) is kept as ``baseline-comparison.json`` next to calls.jsonl.
        """
        from pytest_livekit._files import atomic_write_text
        from pytest_livekit.outputs.baseline import baseline_from_traces, compare, load_baseline

        assert options.baseline_compare is not None
        saved = load_baseline(options.baseline_compare, options.baselines_dir)
        current = baseline_from_traces("current", traces)
        result = compare(current, saved, dict(options.tolerances))
        self.baseline_lines += [f"baseline {saved.name}: {w}" for w in result.warnings]
        self.baseline_lines += result.lines()
        self.baseline_lines += [f"REGRESSION {r}" for r in result.regressions]
        self.baseline_failed = self.baseline_failed or not result.ok
        record = {
            **result.to_dict(),
            "baseline": {"versions": saved.versions, "machine": saved.machine, "created_at": saved.created_at},
            "current": {"versions": current.versions, "machine": current.machine, "created_at": current.created_at},
        }
        return atomic_write_text(options.session_dir / "baseline-comparison.json", json.dumps(record, indent=1))

    @staticmethod
    def _save_baseline(options: OutputOptions, traces: list[dict[str, Any]]) -> Path:
        from pytest_livekit.outputs.baseline import baseline_from_traces, save_baseline

        assert options.baseline_save is not None
        return save_baseline(baseline_from_traces(options.baseline_save, traces), options.baselines_dir)

    def cohorts(self) -> dict[str, dict[str, Any]]:
        """Scenario calls per cohort (``-`` for none): ``calls``, ``completed`` (count),
        ``tool_accuracy`` (mean over calls that expect tools, 0-1, or None), ``ttfa_p50_ms`` and
        ``ttfa_p95_ms`` (over every caller turn of the cohort's calls).
        """
        from pytest_livekit.metrics.thresholds import percentile

        groups: dict[str, list[dict[str, Any]]] = {}
        for _, _, data in self.rows:
            scenario = data.get("scenario")
            if scenario:
                groups.setdefault(scenario.get("cohort") or "-", []).append(data)
        out: dict[str, dict[str, Any]] = {}
        for cohort, rows in sorted(groups.items()):
            accuracies = [r["scenario"]["tool_accuracy"] for r in rows if r["scenario"].get("tool_accuracy") is not None]
            ttfa = [t["ttfa"] for r in rows for t in (r["metrics"].get("turns") or []) if t.get("ttfa") is not None]
            out[cohort] = {
                "calls": len(rows),
                "completed": sum(1 for r in rows if r["scenario"].get("completed")),
                "tool_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
                "ttfa_p50_ms": to_ms(percentile(ttfa, 50), digits=None),
                "ttfa_p95_ms": to_ms(percentile(ttfa, 95), digits=None),
            }
        return out

    def cohort_lines(self) -> list[SummaryLine]:
        """The scenario table: task completion, tool accuracy and TTFA per cohort (none when no
        call played a scenario).
        """
        cohorts = self.cohorts()
        if not cohorts:
            return []
        out = [SummaryLine(
            f"{'scenario cohort':<16}{'calls':>6}  {'completed':>10}  {'tool accuracy':>13}  {'ttfa p50':>9} {'p95':>8}"
        )]
        for cohort, v in cohorts.items():
            accuracy = f"{v['tool_accuracy']:.0%}" if v["tool_accuracy"] is not None else "—"
            done = f"{v['completed']}/{v['calls']}"
            out.append(SummaryLine(
                f"{cohort:<16}{v['calls']:>6}  {done:>10}  {accuracy:>13}  "
                f"{_duration(v['ttfa_p50_ms']):>9} {_duration(v['ttfa_p95_ms']):>8}",
                "" if v["completed"] == v["calls"] else "bad",
            ))
        return out

    def table_lines(self, verbosity: int = 0) -> list[SummaryLine]:
        """The terminal summary: notes, a table per call type, SLO breaches, baseline lines, then
        one line per call and the files written (the per-type table and the call lines are left
        out under ``verbosity < 0``, i.e. ``-q``).
        """
        out = [SummaryLine(line) for line in self.notes]
        if not self.rows:
            # e.g. "no LiveKit call ran": still say it
            return out + [SummaryLine(line, "warn") for line in self.baseline_lines]
        if self.failed or verbosity >= 0:
            out.append(SummaryLine("livekit calls", "section"))
        if verbosity >= 0:
            out.append(SummaryLine(
                f"{'call type':<16}{'calls':>6}  {'ttfa p50':>9} {'p95':>8} {'p99':>8}  {'wer':>5}  "
                f"{'tools ok':>9}  {'failed':>6}  outcomes"
            ))
            for name, summary in sorted(self.summaries().items()):
                v = summary.values()
                wer = f"{v['wer_mean']:.2f}" if v["wer_mean"] is not None else "—"
                outcomes = ", ".join(f"{o} {summary.outcomes.count(o)}" for o in sorted(set(summary.outcomes)))
                out.append(SummaryLine(
                    f"{name:<16}{summary.calls:>6}  {_duration(v['ttfa_p50_ms']):>9} "
                    f"{_duration(v['ttfa_p95_ms']):>8} {_duration(v['ttfa_p99_ms']):>8}  {wer:>5}  "
                    f"{summary.tools_ok:>4}/{summary.calls:<4}  {summary.failed:>6}  {outcomes}"
                ))
            out += self.cohort_lines()
        out += [SummaryLine(f"SLO breach: {breach}", "bad") for breach in self.slo_breaches]
        unwritten = [data for _, _, data in self.rows if data.get("artifacts_error")]
        if unwritten:  # said once for the run, not once per call
            folder = Path(str(unwritten[0].get("artifacts") or ".")).parent
            out.append(SummaryLine(
                f"livekit: {len(unwritten)} of {len(self.rows)} calls could not write their artifacts "
                f"under {folder}: {unwritten[0]['artifacts_error']} (test results are not affected; "
                "free space or make the folder writable, or choose another with --livekit-artifacts)",
                "warn",
            ))
        for line in self.baseline_lines:
            bad = line.startswith(("REGRESSION", "baseline: ", "livekit: "))
            out.append(SummaryLine(line, "bad" if bad else ""))
        if verbosity < 0:
            return out
        out.append(SummaryLine(""))
        for nodeid, outcome, data in sorted(self.rows, key=lambda row: row[:2]):  # a test's rows keep their order
            turns = data["metrics"].get("turns") or []
            ttfa = " ".join(
                f"{to_ms(t['ttfa'], digits=None):.0f}ms" if t.get("ttfa") is not None else "—" for t in turns
            )
            wer = " ".join(f"{t['wer']:.2f}" if t.get("wer") is not None else "—" for t in turns)
            tools = ", ".join(data["tools"]) or "no tools"
            breached = sorted({str(b).split(":", 1)[0] for b in data.get("breaches") or []})
            limits = f" · breached {', '.join(breached)}" if breached else ""
            out.append(SummaryLine(
                f"{nodeid} [{data['call_type'] or '-'}] {outcome}: ttfa {ttfa or '—'} · wer {wer or '—'} · {tools}{limits}"
            ))
        out.append(SummaryLine(f"artifacts: {Path(self.rows[0][2]['artifacts'] or '.').parent}"))
        out += [SummaryLine(line) for line in self.written]
        return out
