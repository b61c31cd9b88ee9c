"""One verdict over many shards: ``python -m pytest_livekit merge DIR...``.

Each shard of a suite (an xdist worker's machine, a CI matrix job) leaves its ``.livekit/``
folder with ``calls.jsonl``: every call's full trace. Merging reads those traces and runs them
through the same :class:`~pytest_livekit.outputs.run_summary.RunSummary` a single run ends with: one
``calls.jsonl``, one HTML report, the same run table, the call types' SLOs evaluated over every
call of every shard (a p99 over all calls, not a p99 of shards), and the baseline compared or
saved. The figures are exact because nothing is aggregated twice: the merge recomputes from the
calls. Shards that ran different plugin, livekit-server, livekit-agents or rtc versions are
flagged; the same call found in two shards (a folder passed twice) counts once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_livekit.errors import ConfigError
from pytest_livekit.outputs.run_summary import OutputOptions, RunSummary, render_lines

__all__ = ["MergeResult", "load_shard", "merge_shards", "version_differences"]

#: Trace fields whose values must agree across shards for the merged figures to mean one thing.
COMPARED_VERSIONS = ("plugin", "livekit_server", "livekit_agents", "livekit_rtc")


def load_shard(path: str | Path) -> list[dict[str, Any]]:
    """The traces of one shard: a ``.livekit`` folder (its ``calls.jsonl``), a folder holding a
    ``.livekit`` folder, or a ``calls.jsonl`` file.

    Raises:
        ConfigError: nothing to read there, or a line that is not a trace.
    """
    p = Path(path)
    candidates = [p] if p.is_file() else [p / "calls.jsonl", p / ".livekit" / "calls.jsonl"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(
            f"{p}: no calls.jsonl there (looked for {', '.join(str(c) for c in candidates)}).\n"
            "Hint: pass each shard's .livekit folder (upload it from every CI job)."
        )
    traces = []
    for number, line in enumerate(found.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            trace = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{found}:{number}: not a JSON line ({exc.msg}); is the file complete?") from None
        if not isinstance(trace, dict) or "call" not in trace or "test" not in trace:
            raise ConfigError(f"{found}:{number}: not a pytest-livekit call trace")
        traces.append(trace)
    return traces


def _call_key(trace: Mapping[str, Any]) -> tuple[str, str]:
    return str(trace["test"].get("nodeid", "")), str(trace["call"].get("call_id", ""))


def version_differences(shards: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """One line per version field whose value differs between shards, e.g.
    ``livekit_server differs between shards: 1.13.5 (a: 12 calls), 1.12.0 (b: 3 calls)``.
    """
    lines = []
    # (not the agent spec: a suite's shards legitimately run different agents, one per test)
    for name in COMPARED_VERSIONS:
        seen: dict[str, Counter[str]] = {}
        for shard, traces in shards.items():
            for trace in traces:
                version = (trace.get("versions") or {}).get(name)
                seen.setdefault(str(version), Counter())[shard] += 1
        if len(seen) > 1:
            parts = [
                f"{value} ({', '.join(f'{s}: {n} calls' for s, n in sorted(counts.items()))})"
                for value, counts in sorted(seen.items())
            ]
            lines.append(f"{name} differs between shards: {'; '.join(parts)}")
    return lines


@dataclass
class MergeResult:
    """What a merge found and wrote."""

    summary: RunSummary
    """The merged run (its table, SLO breaches, baseline lines and files)."""
    shards: dict[str, int] = field(default_factory=dict)
    """Shard -> calls read from it."""
    duplicates: int = 0
    """Calls found in more than one shard (counted once)."""
    warnings: list[str] = field(default_factory=list)
    """Version differences between shards and duplicate calls."""

    @property
    def failed(self) -> bool:
        """An SLO breach, a baseline regression or a file that could not be written."""
        return self.summary.failed

    def lines(self, verbosity: int = 0) -> list[str]:
        """The text a merge prints: the shards, warnings, then the run table as a run prints it."""
        out = [f"merged {sum(self.shards.values())} calls from {len(self.shards)} shards: "
               + ", ".join(f"{name} ({n})" for name, n in self.shards.items())]
        out += [f"WARNING: {w}" for w in self.warnings]
        out.append(render_lines(self.summary.table_lines(verbosity)))
        return out


def merge_shards(
    paths: Sequence[str | Path],
    *,
    out_dir: str | Path,
    pyproject: str | Path | None = None,
    report_path: str | Path | None = None,
    baseline_save: str | None = None,
    baseline_compare: str | None = None,
    tolerances: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Merge shards' traces into one run in ``out_dir`` (``calls.jsonl``; the report if asked)
    and evaluate the call types' SLOs from ``pyproject`` over all of them.

    Args:
        paths: each shard's ``.livekit`` folder (or its ``calls.jsonl``).
        out_dir: where the merged ``calls.jsonl`` (and ``baselines/``) go.
        pyproject: the suite's ``pyproject.toml`` (call types, their SLOs, baseline tolerances).
        report_path: write the merged HTML report here.
        baseline_save: save the merged run as this baseline name (under ``out_dir/baselines``).
        baseline_compare: compare the merged run with this baseline (name or path).
        tolerances: baseline tolerances (default: the pyproject's, else the plugin's defaults).

    Raises:
        ConfigError: no shard given, or a shard that cannot be read.
    """
    from pytest_livekit.metrics.thresholds import load_call_types, plugin_table
    from pytest_livekit.outputs.baseline import DEFAULT_TOLERANCES, parse_tolerance

    if not paths:
        raise ConfigError("merge needs at least one shard folder (each CI job's .livekit folder).")
    project = Path(pyproject) if pyproject is not None else None
    if project is not None and not project.is_file():
        raise ConfigError(f"{project}: no such pyproject.toml (the suite's call types and SLOs are read from it)")
    read = [(str(path), load_shard(path)) for path in paths]
    names: dict[str, list[dict[str, Any]]] = {}
    for name, shard_traces in read:
        names.setdefault(name, []).extend(shard_traces)
    seen: set[tuple[str, str]] = set()
    traces: list[dict[str, Any]] = []
    duplicates = 0
    for _, shard_traces in read:
        for trace in shard_traces:
            key = _call_key(trace)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            traces.append(trace)
    if tolerances is None:
        table = dict(plugin_table(project).get("baseline", {}).get("tolerances", {})) if project else {}
        tolerances = {**DEFAULT_TOLERANCES, **{m: parse_tolerance(m, a) for m, a in table.items()}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = OutputOptions(
        session_dir=out,
        call_type_configs=load_call_types(project) if project else {},
        report_path=Path(report_path) if report_path is not None else None,
        baseline_save=baseline_save,
        baseline_compare=baseline_compare,
        tolerances=dict(tolerances),
    )
    summary = RunSummary(traces, options)
    summary.check_slos()
    summary.write_files()
    warnings = version_differences(names)
    if duplicates:
        warnings.append(f"{duplicates} call(s) appear in more than one shard and were counted once")
    shards = {name: len({_call_key(t) for t in shard}) for name, shard in names.items()}
    return MergeResult(summary=summary, shards=shards, duplicates=duplicates,
                       warnings=warnings)
