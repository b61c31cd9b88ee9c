"""Baselines: save a run's figures under a name, compare a later run with them.

A baseline is one versioned JSON document (``<folder>/<name>.json``) built from the call traces of a
run (:mod:`pytest_livekit.outputs.trace`). Schema ``pytest-livekit/baseline``, version
:data:`BASELINE_SCHEMA_VERSION`; readers refuse other schemas and newer versions. Top-level keys:

- ``schema``, ``schema_version``: what this document is.
- ``name``: the baseline's name (``[A-Za-z0-9_.-]+``); ``created_at``: ISO-8601 UTC time.
- ``versions``, ``machine``: copied from the first trace (plugin, livekit-server, livekit-agents,
  livekit rtc and Python versions; platform, CPU count, hashed host name).
- ``calls``: test node id -> the call's flat metrics (:data:`CALL_METRICS`) and ``call_type``.
  A test that placed several calls keeps the first under its node id and the next ones under
  ``<nodeid>#2``, ``<nodeid>#3``, ... (in trace order).
- ``call_types``: call type (``-`` for calls without one) -> aggregates over its calls
  (:data:`CALL_TYPE_METRICS`).

Every metric, its better direction and its unit is listed in :data:`METRICS`. Times are in
milliseconds (``*_ms``), error rates and ratios are fractions (0-1, WER can exceed 1), counts are
counts.

What :func:`compare` compares:

- **call-type aggregates**, for every aggregate with an entry in the tolerances mapping (by default
  :data:`DEFAULT_TOLERANCES`, which covers all of them except the informational ``calls``);
- **per-call metrics** only when the mapping has an entry keyed ``call.<metric>`` (for example
  ``"call.wer"``). One call is a single noisy sample, so these are off unless asked for;
  :data:`DEFAULT_CALL_TOLERANCES` holds suggested values for them.

A value that is ``None`` on either side (no reply, no reference text, ...) is skipped, never a
regression. A regression is a change in the worse direction beyond the allowance of the metric's
:class:`Tolerance`; an improvement is a change in the better direction beyond the same allowance.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_livekit._files import atomic_write_text
from pytest_livekit.metrics.thresholds import counts_as_failed, percentile
from pytest_livekit.outputs.trace import finite_number
from pytest_livekit.units import seconds_to_ms, to_ms

__all__ = [
    "BASELINE_SCHEMA",
    "BASELINE_SCHEMA_VERSION",
    "CALL_METRICS",
    "CALL_TYPE_METRICS",
    "DEFAULT_CALL_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "METRICS",
    "Baseline",
    "Comparison",
    "MetricCheck",
    "Regression",
    "Tolerance",
    "baseline_from_traces",
    "check_baseline_name",
    "compare",
    "load_baseline",
    "parse_tolerance",
    "save_baseline",
]

#: Name of the baseline document type.
BASELINE_SCHEMA = "pytest-livekit/baseline"
#: Version of the baseline layout; bump on any incompatible change (additions keep the version).
BASELINE_SCHEMA_VERSION = 1

#: Per-call metrics (keys of :attr:`Baseline.calls` entries): name -> (better direction, unit).
CALL_METRICS: dict[str, tuple[str, str]] = {
    "ttfa_ms": ("lower", "ms: time to first audio of the first caller turn (caller)"),
    "ttfa_p50_ms": ("lower", "ms: median time to first audio over the call's answered turns"),
    "wer": ("lower", "fraction: word error rate of the call (raw STT vs the caller's text)"),
    "cer": ("lower", "fraction: character error rate of the call"),
    "duplicated_turns": ("lower", "count: caller turns the agent answered twice"),
    "receive_gap_ms": ("lower", "ms: total length of stalls inside heard agent speech (caller)"),
}

#: Call-type aggregates (keys of :attr:`Baseline.call_types` entries): name -> (better direction,
#: unit). ``calls`` is informational and never compared.
CALL_TYPE_METRICS: dict[str, tuple[str, str]] = {
    "ttfa_p50_ms": ("lower", "ms: median time to first audio over every turn of every call"),
    "ttfa_p95_ms": ("lower", "ms: 95th percentile time to first audio over every turn"),
    "wer_mean": ("lower", "fraction: mean of the calls' word error rates"),
    "failed_ratio": ("lower", "fraction: calls whose test failed, errored or timed out, or that breached a limit"),
    "tools_ok_ratio": ("higher", "fraction: calls without an expected_tools/forbidden_tools breach"),
    "calls": ("higher", "count: calls of this type (informational, never compared)"),
}

#: Every metric a tolerance can be given for, plus ``calls``: name -> (better direction ``lower``
#: or ``higher``, unit and meaning). Call-type aggregates by their own name, per-call metrics as
#: ``call.<metric>``.
METRICS: dict[str, tuple[str, str]] = {
    **CALL_TYPE_METRICS,
    **{f"call.{name}": spec for name, spec in CALL_METRICS.items()},
}

_INFORMATIONAL = frozenset({"calls"})
_CALL_PREFIX = "call."
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_NAME_RULE = "letters, digits, '_', '.' and '-' only (for example 'main' or 'v1.2_ci')"
_TOOL_LIMITS = ("expected_tools", "forbidden_tools")
_VERSION_KEYS = ("plugin", "livekit_server", "livekit_agents", "livekit_rtc", "python")


# -- tolerances -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How much a metric may worsen before it counts as a regression.

    If both parts are given, the larger allowance applies; with neither, any worsening counts.
    """

    metric: str
    """Metric name (a key of :data:`METRICS`)."""
    relative: float | None = None
    """Allowed worsening as a fraction of the baseline value (0.2 = 20 %)."""
    absolute: float | None = None
    """Allowed worsening in the metric's unit (ms for ``*_ms``, fraction for ratios)."""

    def __post_init__(self) -> None:
        """Refuse negative or non-finite parts.

        Raises:
            ValueError: If a part is negative, NaN or infinite.
        """
        for part in (self.relative, self.absolute):
            if part is not None and (not math.isfinite(part) or part < 0):
                raise ValueError(
                    f"tolerance for {self.metric!r}: {part!r} must be a finite number >= 0."
                )

    def allowance(self, baseline: float) -> float:
        """The allowed worsening from ``baseline``, in the metric's unit (>= 0)."""
        parts = [0.0]
        if self.relative is not None:
            parts.append(self.relative * abs(baseline))
        if self.absolute is not None:
            parts.append(self.absolute)
        return max(parts)

    def describe(self) -> str:
        """Human-readable form, e.g. ``20 % or 150 ms`` (``0`` when nothing is allowed)."""
        parts = []
        if self.relative is not None:
            parts.append(f"{self.relative * 100:g} %")
        if self.absolute is not None:
            unit = " ms" if self.metric.endswith("_ms") else ""
            parts.append(f"{self.absolute:g}{unit}")
        return " or ".join(parts) if parts else "0"


#: Tolerances of the call-type aggregates, used when :func:`compare` gets none.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "ttfa_p50_ms": Tolerance("ttfa_p50_ms", relative=0.2, absolute=100.0),
    "ttfa_p95_ms": Tolerance("ttfa_p95_ms", relative=0.25, absolute=150.0),
    "wer_mean": Tolerance("wer_mean", relative=0.25, absolute=0.03),
    "failed_ratio": Tolerance("failed_ratio", absolute=0.1),
    "tools_ok_ratio": Tolerance("tools_ok_ratio", absolute=0.1),
}

#: Suggested tolerances of the per-call metrics; not used unless passed to :func:`compare`
#: (``compare(a, b, {**DEFAULT_TOLERANCES, **DEFAULT_CALL_TOLERANCES})`` compares every call).
DEFAULT_CALL_TOLERANCES: dict[str, Tolerance] = {
    "call.ttfa_ms": Tolerance("call.ttfa_ms", relative=0.3, absolute=150.0),
    "call.ttfa_p50_ms": Tolerance("call.ttfa_p50_ms", relative=0.3, absolute=150.0),
    "call.wer": Tolerance("call.wer", relative=0.25, absolute=0.05),
    "call.cer": Tolerance("call.cer", relative=0.25, absolute=0.05),
    "call.duplicated_turns": Tolerance("call.duplicated_turns", absolute=0.0),
    "call.receive_gap_ms": Tolerance("call.receive_gap_ms", relative=0.5, absolute=100.0),
}

_PART = re.compile(r"^(?P<number>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>%|ms|s)?$")


def _unknown_metric(metric: str) -> ValueError:
    hint = ""
    if f"{_CALL_PREFIX}{metric}" in METRICS:
        hint = f" Did you mean {_CALL_PREFIX}{metric!s}?"
    aggregates = ", ".join(m for m in CALL_TYPE_METRICS if m not in _INFORMATIONAL)
    per_call = ", ".join(f"{_CALL_PREFIX}{m}" for m in CALL_METRICS)
    return ValueError(
        f"{metric!r} is not a metric baselines compare.{hint} Valid metrics: {aggregates} "
        f"(call-type aggregates); {per_call} (per call, compared only when given)."
    )


def parse_tolerance(metric: str, text: str | float) -> Tolerance:
    """Parse a tolerance as written in configuration.

    Formats: ``"20%"`` (relative: 20 % of the baseline value), ``"0.05"`` or ``0.05`` (absolute,
    in the metric's unit), for ``*_ms`` metrics also ``"150ms"`` or ``"0.15s"`` (absolute, stored
    in ms), and one of each joined by ``,`` or ``or`` (``"20%, 150ms"``: the larger applies).

    Args:
        metric: a key of :data:`METRICS` other than ``calls`` (``call.<metric>`` for per-call).
        text: the tolerance.

    Returns:
        The tolerance.

    Raises:
        ValueError: For an unknown metric (the message lists the valid ones) or text in none of the
            formats above (the message shows them).
    """
    if metric not in METRICS or metric in _INFORMATIONAL:
        raise _unknown_metric(metric)
    is_ms = metric.endswith("_ms")
    unit_name = METRICS[metric][1].split(":", 1)[0]
    examples = "'20%' (of the baseline value), '0.05' (absolute, in " + unit_name + ")"
    if is_ms:
        examples += ", '150ms' or '0.15s'"
    examples += ", or one of each such as " + ("'20%, 150ms'" if is_ms else "'20%, 0.05'")
    bad = ValueError(f"tolerance for {metric!r}: {text!r} is not valid. Write {examples}.")
    if isinstance(text, bool):
        raise bad
    if isinstance(text, (int, float)):
        try:
            return Tolerance(metric, absolute=float(text))
        except ValueError:
            raise bad from None
    relative: float | None = None
    absolute: float | None = None
    parts = [p.strip() for p in re.split(r",|\bor\b", text.strip())]
    if not parts or len(parts) > 2:
        raise bad
    for part in parts:
        match = _PART.match(part)
        if match is None:
            raise bad
        number, unit = float(match["number"]), match["unit"]
        if unit == "%":
            if relative is not None:
                raise bad
            relative = number / 100.0
            continue
        if absolute is not None or (unit in ("ms", "s") and not is_ms):
            raise bad
        absolute = seconds_to_ms(number) if unit == "s" else number
    try:
        return Tolerance(metric, relative=relative, absolute=absolute)
    except ValueError:
        raise bad from None


# -- building a baseline ----------------------------------------------------------------------


def _call_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    turns = metrics.get("turns") or []
    return {
        "ttfa_ms": to_ms(turns[0].get("ttfa")) if turns else None,
        "ttfa_p50_ms": to_ms(metrics.get("ttfa_p50")),
        "wer": finite_number(metrics.get("wer")),
        "cer": finite_number(metrics.get("cer")),
        "duplicated_turns": finite_number(metrics.get("duplicated_turns")),
        "receive_gap_ms": to_ms(metrics.get("gap_seconds")),
    }


def _tools_ok(trace: Mapping[str, Any]) -> bool:
    return not any(
        limit in str(breach) for breach in trace.get("breaches") or [] for limit in _TOOL_LIMITS
    )


def _aggregate(traces: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    ttfa: list[float] = []
    wer: list[float] = []
    failed = tools_ok = 0
    for trace in traces:
        metrics = trace.get("metrics") or {}
        ttfa += [v for v in (finite_number(t.get("ttfa")) for t in metrics.get("turns") or []) if v is not None]
        call_wer = finite_number(metrics.get("wer"))
        if call_wer is not None:
            wer.append(call_wer)
        # the same count as the run table's "failed" (thresholds.CallTypeSummary): a breached
        # limit counts, a skipped or xfailed test is not a regression signal
        failed += counts_as_failed((trace.get("test") or {}).get("outcome"), trace.get("breaches"))
        tools_ok += _tools_ok(trace)
    n = len(traces)
    return {
        "ttfa_p50_ms": to_ms(percentile(ttfa, 50)),
        "ttfa_p95_ms": to_ms(percentile(ttfa, 95)),
        "wer_mean": statistics.fmean(wer) if wer else None,
        "failed_ratio": failed / n if n else None,
        "tools_ok_ratio": tools_ok / n if n else None,
        "calls": n,
    }


def _now() -> str:
    now = _dt.datetime.now(tz=_dt.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


@dataclass
class Baseline:
    """A run's figures under a name (see the module docstring for the JSON layout)."""

    name: str
    """The baseline's name; its file is ``<name>.json``."""
    created_at: str
    """When it was built, ISO-8601 UTC (``2025-01-31T12:00:00Z``)."""
    versions: dict[str, str] = field(default_factory=dict)
    """``plugin``, ``livekit_server``, ``livekit_agents``, ``livekit_rtc``, ``python`` versions."""
    machine: dict[str, Any] = field(default_factory=dict)
    """``platform``, ``cpus`` and ``hostname_hash`` of the machine that ran the calls."""
    calls: dict[str, dict[str, float | None | str]] = field(default_factory=dict)
    """Node id -> :data:`CALL_METRICS` values (ms, fractions, counts) and ``call_type``."""
    call_types: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Call type (``-`` when none) -> :data:`CALL_TYPE_METRICS` values."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (with ``schema`` and ``schema_version``); NaN/inf become None."""
        return {
            "schema": BASELINE_SCHEMA,
            "schema_version": BASELINE_SCHEMA_VERSION,
            "name": self.name,
            "created_at": self.created_at,
            "versions": dict(self.versions),
            "machine": dict(self.machine),
            "calls": {k: {m: _finite(v) for m, v in row.items()} for k, row in self.calls.items()},
            "call_types": {
                k: {m: _finite(v) for m, v in row.items()} for k, row in self.call_types.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read a document written by :meth:`to_dict`.

        Raises:
            ValueError: If it is not a baseline or was written by a newer pytest-livekit.
        """
        if not isinstance(data, Mapping) or data.get("schema") != BASELINE_SCHEMA:
            schema = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(
                f"not a pytest-livekit baseline (schema {schema!r}, expected {BASELINE_SCHEMA!r}). "
                "Point at a file written by save_baseline, or save a new baseline."
            )
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(
                f"baseline schema_version {version!r} is not a positive integer; "
                "the file is damaged: save a new baseline."
            )
        if version > BASELINE_SCHEMA_VERSION:
            raise ValueError(
                f"baseline schema version {version} is newer than this pytest-livekit reads "
                f"(up to {BASELINE_SCHEMA_VERSION}). Upgrade pytest-livekit, or save a new "
                "baseline with this version."
            )
        try:
            return cls._read(data)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"baseline is damaged ({exc}); save a new baseline.") from None

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> Baseline:
        return cls(
            name=str(data.get("name", "")),
            created_at=str(data.get("created_at", "")),
            versions={str(k): str(v) for k, v in (data.get("versions") or {}).items()},
            machine=dict(data.get("machine") or {}),
            calls={str(k): dict(v) for k, v in (data.get("calls") or {}).items()},
            call_types={str(k): dict(v) for k, v in (data.get("call_types") or {}).items()},
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def baseline_from_traces(name: str, traces: Sequence[Mapping[str, Any]]) -> Baseline:
    """Build a baseline from call traces (:func:`pytest_livekit.outputs.trace.build_trace` documents).

    Reads only ``test.nodeid``, ``test.outcome``, ``call.call_type``, ``metrics``, ``breaches``,
    ``versions`` and ``machine``. Versions and machine come from the first trace.

    Call-type ``ttfa_p50_ms``/``ttfa_p95_ms`` are **linearly interpolated** percentiles
    (:func:`pytest_livekit.metrics.thresholds.percentile`) over the time to first audio of every answered
    turn of every call of the type, like the session SLOs.

    Args:
        name: the baseline's name (checked when saved, see :func:`check_baseline_name`).
        traces: the run's traces, in run order.

    Returns:
        The baseline, ``created_at`` now.
    """
    calls: dict[str, dict[str, float | None | str]] = {}
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for i, trace in enumerate(traces):
        test = trace.get("test") or {}
        call = trace.get("call") or {}
        key = str(test.get("nodeid") or call.get("call_id") or f"call {i + 1}")
        if key in calls:
            n = 2
            while f"{key}#{n}" in calls:
                n += 1
            key = f"{key}#{n}"
        call_type = str(call.get("call_type") or "-")
        row: dict[str, float | None | str] = {**_call_metrics(trace.get("metrics") or {})}
        row["call_type"] = call_type
        calls[key] = row
        by_type.setdefault(call_type, []).append(trace)
    first = traces[0] if traces else {}
    return Baseline(
        name=name,
        created_at=_now(),
        versions={str(k): str(v) for k, v in (first.get("versions") or {}).items()},
        machine=dict(first.get("machine") or {}),
        calls=calls,
        call_types={t: _aggregate(group) for t, group in sorted(by_type.items())},
    )


# -- files ------------------------------------------------------------------------------------
def check_baseline_name(name: str) -> str:
    """Return ``name`` if it can name a baseline file (``[A-Za-z0-9_.-]+``, not ``.``/``..``).

    Raises:
        ValueError: Naming the allowed characters.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"baseline name {name!r} is not allowed: use {_NAME_RULE}.")
    return name


def save_baseline(baseline: Baseline, folder: Path) -> Path:
    """Write ``<folder>/<name>.json`` atomically (temp file, then rename); creates ``folder``.

    Returns:
        The file's path.

    Raises:
        ValueError: If the baseline's name is not allowed (see :func:`check_baseline_name`).
    """
    check_baseline_name(baseline.name)
    path = Path(folder) / f"{baseline.name}.json"
    return atomic_write_text(path, json.dumps(baseline.to_dict(), indent=1, allow_nan=False) + "\n")


def _saved_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _NAME.fullmatch(p.stem))


def load_baseline(name_or_path: str, folder: Path) -> Baseline:
    """Read a baseline by name (``<folder>/<name>.json``) or by path (text with ``/`` or ending in
    ``.json``, read as given).

    Raises:
        FileNotFoundError: If there is no such baseline (the message lists those in ``folder``).
        ValueError: For a bad name, a file that is not a baseline, or one from a newer
            pytest-livekit (the message says what to do).
    """
    folder = Path(folder)
    is_path = "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith(".json")
    if is_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no baseline file at {path}.")
    else:
        path = folder / f"{check_baseline_name(name_or_path)}.json"
        if not path.is_file():
            saved = _saved_names(folder)
            have = f"Saved baselines: {', '.join(saved)}." if saved else f"No baselines saved in {folder} yet."
            raise FileNotFoundError(f"no baseline named {name_or_path!r} in {folder}. {have}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); save a new baseline.") from None
    try:
        return Baseline.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- comparing --------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def _change(baseline: float, current: float) -> str:
    if baseline == 0:
        return f"{current - baseline:+.3g}"
    return f"{(current - baseline) / abs(baseline) * 100:+.1f} %"


def _direction(metric: str) -> str:
    spec = CALL_TYPE_METRICS.get(metric) or CALL_METRICS.get(metric) or METRICS.get(metric)
    return spec[0] if spec else "lower"


@dataclass(frozen=True)
class Regression:
    """One metric that moved beyond its allowance (worse for a regression, better for an
    improvement).
    """

    scope: str
    """``call type <name>`` or a test node id."""
    metric: str
    """Metric name without the ``call.`` prefix (unit: see :data:`METRICS`)."""
    baseline: float
    """The baseline's value (metric's unit)."""
    current: float
    """This run's value (metric's unit)."""
    allowed: float
    """The threshold value the current one crossed: baseline -/+ the allowance."""

    @property
    def worse(self) -> bool:
        """True for a change in the worse direction (a regression)."""
        higher_better = _direction(self.metric) == "higher"
        return self.current < self.baseline if higher_better else self.current > self.baseline

    def __str__(self) -> str:
        """``call type refund: ttfa_p95_ms 1180 -> 1650 (+39.8 %, allowed up to 1475)``."""
        if self.worse:
            bound = "up to" if _direction(self.metric) == "lower" else "down to"
            limit = f"allowed {bound} {_fmt(self.allowed)}"
        else:
            limit = f"beyond {_fmt(self.allowed)}"
        return (
            f"{self.scope}: {self.metric} {_fmt(self.baseline)} -> {_fmt(self.current)} "
            f"({_change(self.baseline, self.current)}, {limit})"
        )


@dataclass(frozen=True)
class MetricCheck:
    """One compared (scope, metric) pair, whatever the verdict."""

    scope: str
    """``call type <name>`` or a test node id."""
    metric: str
    """Metric name without the ``call.`` prefix."""
    baseline: float | None
    """The baseline's value (metric's unit); None when it had none."""
    current: float | None
    """This run's value; None when it has none."""
    tolerance: Tolerance
    """The tolerance applied."""
    limit: float | None
    """Worst acceptable value (baseline + allowance, or - for higher-is-better metrics)."""
    verdict: str
    """``ok``, ``regression``, ``improvement`` or ``skipped`` (a None value)."""

    def line(self) -> str:
        """``call type refund  ttfa_p95_ms  1180 -> 1650  +39.8 %  allowed up to 1475 (25 % or
        150 ms)  REGRESSION`` (columns unpadded).
        """
        return "  ".join(self._columns())

    def _columns(self) -> list[str]:
        if self.baseline is None or self.current is None:
            old = "—" if self.baseline is None else _fmt(self.baseline)
            new = "—" if self.current is None else _fmt(self.current)
            why = "no baseline value" if self.baseline is None else "no current value"
            return [self.scope, self.metric, f"{old} -> {new}", "", "", f"skipped ({why})"]
        bound = "up to" if _direction(self.metric) == "lower" else "down to"
        limit = "" if self.limit is None else _fmt(self.limit)
        return [
            self.scope,
            self.metric,
            f"{_fmt(self.baseline)} -> {_fmt(self.current)}",
            _change(self.baseline, self.current),
            f"allowed {bound} {limit} ({self.tolerance.describe()})",
            self.verdict.upper() if self.verdict != "ok" else "ok",
        ]


@dataclass
class Comparison:
    """The result of :func:`compare`."""

    baseline_name: str
    """Name of the baseline compared against."""
    regressions: list[Regression] = field(default_factory=list)
    """Metrics that got worse beyond their allowance."""
    improvements: list[Regression] = field(default_factory=list)
    """Metrics that got better beyond the same allowance."""
    missing: list[str] = field(default_factory=list)
    """Node ids in the baseline that this run has not."""
    new: list[str] = field(default_factory=list)
    """Node ids of this run that the baseline has not."""
    warnings: list[str] = field(default_factory=list)
    """Version and machine differences (old -> new): figures may not be comparable."""
    checks: list[MetricCheck] = field(default_factory=list)
    """Every compared (scope, metric), in report order."""

    @property
    def ok(self) -> bool:
        """True when there is no regression."""
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports (NaN/inf become None)."""
        return {
            "baseline_name": self.baseline_name,
            "ok": self.ok,
            "regressions": [asdict(r) | {"text": str(r)} for r in self.regressions],
            "improvements": [asdict(r) | {"text": str(r)} for r in self.improvements],
            "missing": list(self.missing),
            "new": list(self.new),
            "warnings": list(self.warnings),
            "checks": [
                {
                    "scope": c.scope, "metric": c.metric, "baseline": _finite(c.baseline),
                    "current": _finite(c.current), "limit": _finite(c.limit), "verdict": c.verdict,
                    "tolerance": {"relative": c.tolerance.relative, "absolute": c.tolerance.absolute},
                }
                for c in self.checks
            ],
        }

    def lines(self) -> list[str]:
        """One aligned line per compared (scope, metric): scope, metric, baseline -> current,
        change, allowance, verdict (``ok``, ``REGRESSION``, ``IMPROVEMENT``, ``skipped (...)``).
        Missing/new calls and warnings are not included (see those fields).
        """
        rows = [c._columns() for c in self.checks]
        if not rows:
            return []
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out = []
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)]
            out.append("  ".join(cells + [row[-1]]).rstrip())
        return out


def _check(
    scope: str, metric: str, old: Any, new: Any, tolerance: Tolerance
) -> tuple[MetricCheck, Regression | None]:
    b, c = finite_number(old), finite_number(new)
    if b is None or c is None:
        return MetricCheck(scope, metric, b, c, tolerance, None, "skipped"), None
    allowance = tolerance.allowance(b)
    eps = 1e-9 * max(1.0, abs(b))
    sign = 1.0 if _direction(metric) == "lower" else -1.0
    worst, best = b + sign * allowance, b - sign * allowance
    found: Regression | None = None
    verdict = "ok"
    if sign * (c - worst) > eps:
        verdict, found = "regression", Regression(scope, metric, b, c, worst)
    elif sign * (best - c) > eps:
        verdict, found = "improvement", Regression(scope, metric, b, c, best)
    return MetricCheck(scope, metric, b, c, tolerance, worst, verdict), found


def _differences(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    known = [k for k in _VERSION_KEYS if k in old or k in new]
    keys = known + sorted((set(old) | set(new)) - set(known))
    out = []
    for key in keys:
        a, b = old.get(key, "unknown"), new.get(key, "unknown")
        if str(a) != str(b):
            out.append(f"{prefix}{key} {a} -> {b}: figures may not be comparable")
    return out


def compare(
    current: Baseline, baseline: Baseline, tolerances: Mapping[str, Tolerance] | None = None
) -> Comparison:
    """Compare this run's figures with a baseline.

    Args:
        current: this run, e.g. ``baseline_from_traces("current", traces)``.
        baseline: the saved baseline.
        tolerances: metric name -> tolerance, **used as given** (``None``: :data:`DEFAULT_TOLERANCES`).
            Call-type aggregates are compared for each aggregate name present; per-call metrics
            only for ``call.<metric>`` keys present. To change one default, pass
            ``{**DEFAULT_TOLERANCES, "wer_mean": parse_tolerance("wer_mean", "10%")}``.

    Returns:
        The comparison: regressions, improvements, missing/new calls, version and machine
        warnings and every check made. Call types present on one side only are not compared
        (their calls show up in ``missing``/``new``).

    Raises:
        ValueError: For a tolerance keyed by an unknown metric (the message lists the valid ones).
    """
    tolerances = DEFAULT_TOLERANCES if tolerances is None else tolerances
    for key in tolerances:
        if key not in METRICS or key in _INFORMATIONAL:
            raise _unknown_metric(key)
    result = Comparison(baseline_name=baseline.name)
    result.warnings = _differences("", baseline.versions, current.versions)
    result.warnings += _differences("machine.", baseline.machine, current.machine)
    found: list[tuple[MetricCheck, Regression | None]] = []
    for call_type in sorted(set(baseline.call_types) & set(current.call_types)):
        old, new = baseline.call_types[call_type], current.call_types[call_type]
        for metric in CALL_TYPE_METRICS:
            if metric in tolerances:
                scope = f"call type {call_type}"
                found.append(_check(scope, metric, old.get(metric), new.get(metric), tolerances[metric]))
    per_call = [m for m in CALL_METRICS if f"{_CALL_PREFIX}{m}" in tolerances]
    for nodeid in sorted(set(baseline.calls) & set(current.calls)) if per_call else []:
        old_row, new_row = baseline.calls[nodeid], current.calls[nodeid]
        for metric in per_call:
            tol = tolerances[f"{_CALL_PREFIX}{metric}"]
            found.append(_check(nodeid, metric, old_row.get(metric), new_row.get(metric), tol))
    for check, moved in found:
        result.checks.append(check)
        if moved is not None:
            (result.regressions if check.verdict == "regression" else result.improvements).append(moved)
    result.missing = sorted(set(baseline.calls) - set(current.calls))
    result.new = sorted(set(current.calls) - set(baseline.calls))
    return result
