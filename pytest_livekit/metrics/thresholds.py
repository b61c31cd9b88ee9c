"""Per-call-type thresholds and session SLOs, read from ``pyproject.toml``.

.. code-block:: toml

    [tool.pytest_livekit.call_types.refund]
    script = ["I want a refund for order one two three four"]   # optional caller lines
    ttfa_ms_max = 1500          # every caller turn (caller's vantage point)
    wer_max = 0.2               # whole call, raw STT
    expected_tools = ["lookup_order"]
    outcome = "completed"

    [tool.pytest_livekit.call_types.refund.slo]                 # over all refund calls of a run
    ttfa_p95_ms_max = 1200
    wer_mean_max = 0.1

Pure code (``tomllib`` only): it is loaded when the plugin configures, so unknown names and bad
values are usage errors before any test runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_livekit.errors import ConfigError, did_you_mean
from pytest_livekit.units import to_ms

#: Per-call limits: name -> (kind, description). ``_max`` limits fail above, ``_min`` below.
CALL_LIMITS: dict[str, tuple[str, str]] = {
    "ttfa_ms_max": ("number", "time-to-first-audio of every caller turn, ms (caller)"),
    "e2e_latency_ms_max": ("number", "agent's self-reported end-to-end latency per reply, ms (agent)"),
    "wer_max": ("number", "word error rate of the raw STT over the call (0-1+)"),
    "cer_max": ("number", "character error rate of the raw STT over the call"),
    "duplicated_turns_max": ("number", "agent replies duplicated for one caller turn (count)"),
    "audio_gaps_max": ("number", "stalls inside heard agent speech (count, caller)"),
    "packet_loss_max": ("number", "caller-side packet loss ratio of agent audio (0-1)"),
    "agent_clipping_max": ("number", "fraction of clipped samples in the agent channel"),
    "agent_snr_db_min": ("number", "estimated SNR of the agent channel, dB"),
    "expected_tools": ("strings", "tools that must be called, in this order"),
    "forbidden_tools": ("strings", "tools that must not be called"),
    "outcome": ("string", "expected outcome: completed, transferred, hung_up, incomplete"),
}

#: Session SLOs per call type, evaluated over all calls of the type at session end.
SLO_LIMITS: dict[str, tuple[str, str]] = {
    "ttfa_p50_ms_max": ("number", "median time-to-first-audio over all turns, ms"),
    "ttfa_p95_ms_max": ("number", "95th percentile time-to-first-audio, ms"),
    "ttfa_p99_ms_max": ("number", "99th percentile time-to-first-audio, ms"),
    "wer_mean_max": ("number", "mean word error rate over calls"),
    "failure_rate_max": ("number", "calls whose test failed or that breached a limit / calls (0-1), also per cohort"),
    "task_completion_min": ("number", "calls with outcome completed / calls (0-1)"),
    "human_transfer_max": ("number", "calls with outcome transferred / calls (0-1)"),
    "human_transfer_min": ("number", "calls with outcome transferred / calls (0-1), for escalation types"),
    "packet_loss_max": ("number", "mean caller-side packet loss ratio (0-1)"),
    "interruption_recovery_min": ("number", "interrupted turns the agent answered / interrupted turns"),
    "reconnect_success_min": ("number", "reconnects after which the call went on / reconnects"),
}

OUTCOMES = ("completed", "transferred", "hung_up", "incomplete")
#: Test outcomes that count as a failed call (a skipped or xfailed test does not).
FAILED_OUTCOMES = ("failed", "error", "timeout")
_TYPE_KEYS = {"script", "slo", "description", "llm"}


def _check_value(where: str, name: str, kind: str, value: Any) -> Any:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise ConfigError(f"{where}: {name} = {value!r} is not a number.")
        if name.endswith("_max") and value < 0:
            raise ConfigError(f"{where}: {name} = {value!r} must be >= 0.")
        return float(value)
    if kind == "strings":
        # a tuple: already validated (a marker's override is checked again by with_overrides)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {name} must be a list of names, got {value!r}.")
        return tuple(value)
    if name == "outcome" and value not in OUTCOMES:
        raise ConfigError(
            f"{where}: outcome = {value!r} is not valid. Valid outcomes: {', '.join(OUTCOMES)}."
            + did_you_mean(value, OUTCOMES)
        )
    return value


def validate_limits(where: str, values: Mapping[str, Any], vocabulary: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Check names and values against ``vocabulary``; unknown names list the valid ones."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in vocabulary:
            raise ConfigError(
                f"{where}: {name!r} is not a known limit. Valid names: {', '.join(sorted(vocabulary))}."
                + did_you_mean(name, vocabulary)
            )
        out[name] = _check_value(where, name, vocabulary[name][0], value)
    return out


@dataclass(frozen=True)
class CallType:
    """One call type's configuration."""

    name: str
    """Call type name (``refund``, ``booking``, ...)."""
    limits: Mapping[str, Any] = field(default_factory=dict)
    """Per-call limits (see :data:`CALL_LIMITS`)."""
    slo: Mapping[str, Any] = field(default_factory=dict)
    """Session SLOs (see :data:`SLO_LIMITS`)."""
    script: tuple[str, ...] = ()
    """Caller lines for tests parametrized over call types."""
    description: str = ""
    """Free text."""
    llm: Mapping[str, Any] = field(default_factory=dict)
    """``[...call_types.<name>.llm]``: what the offline LLM does in calls of this type (rules,
    ``default_reply``), in the declarative form of :mod:`pytest_livekit.agent.llm_rules`."""

    def with_overrides(self, overrides: Mapping[str, Any]) -> CallType:
        """A copy whose per-call limits are updated by ``overrides`` (validated)."""
        extra = validate_limits(f"call type {self.name!r} override", overrides, CALL_LIMITS)
        return CallType(
            self.name, {**self.limits, **extra}, self.slo, self.script, self.description, self.llm
        )


def parse_call_types(table: Mapping[str, Any], where: str = "[tool.pytest_livekit.call_types]") -> dict[str, CallType]:
    """Parse and validate the ``call_types`` table."""
    out: dict[str, CallType] = {}
    for name, body in table.items():
        here = f"{where[:-1]}.{name}]"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{here} must be a table of limits.")
        limits = {k: v for k, v in body.items() if k not in _TYPE_KEYS}
        script = body.get("script", [])
        if not isinstance(script, list) or not all(isinstance(s, str) and s.strip() for s in script):
            raise ConfigError(f"{here}: script must be a list of non-empty caller lines, got {script!r}.")
        slo = body.get("slo", {})
        if not isinstance(slo, Mapping):
            raise ConfigError(f"{here}: slo must be a table.")
        llm = body.get("llm", {})
        if not isinstance(llm, Mapping):
            raise ConfigError(f"{here}: llm must be a table (rules, default_reply).")
        out[name] = CallType(
            name=name,
            limits=validate_limits(here, limits, CALL_LIMITS),
            slo=validate_limits(f"{here[:-1]}.slo]", slo, SLO_LIMITS),
            script=tuple(script),
            description=str(body.get("description", "")),
            llm=dict(llm),
        )
    return out


def plugin_table(pyproject: Path | None) -> dict[str, Any]:
    """The ``[tool.pytest_livekit]`` table of a pyproject file (empty if absent).

    Raises:
        ConfigError: the file is not valid TOML.
    """
    if pyproject is None or not pyproject.is_file():
        return {}
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: invalid TOML: {exc}") from None
    return dict(data.get("tool", {}).get("pytest_livekit", {}))


def load_call_types(pyproject: Path | None) -> dict[str, CallType]:
    """Read ``[tool.pytest_livekit.call_types]`` from a pyproject file (empty if absent)."""
    return parse_call_types(plugin_table(pyproject).get("call_types", {}))


# -- evaluation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Breach:
    """One limit a call or a session missed."""

    name: str
    """Limit name."""
    measured: Any
    """What was measured (unit as in the limit's name)."""
    allowed: Any
    """The limit."""
    detail: str = ""
    """Where (turn, tool, cohort)."""

    def __str__(self) -> str:
        op = ">" if self.name.endswith("_max") else "<" if self.name.endswith("_min") else "!="
        where = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {_fmt(self.measured)} {op} {_fmt(self.allowed)} allowed{where}"

    def describe(self) -> str:
        """In words, with units, the limit's name and where: ``time-to-first-audio 1840 ms >
        1500 ms allowed (ttfa_ms_max, turn 1)`` (failure messages; :meth:`__str__` is the terse
        form the trace keeps).
        """
        label = _LABELS.get(self.name, self.name)
        unit = " ms" if "_ms_" in self.name else " dB" if "_db_" in self.name else ""
        where = ", ".join(part for part in (self.name, self.detail) if part)
        if self.name == "expected_tools":
            return f"tools called {_fmt(self.measured)}, expected {_fmt(self.allowed)} in this order ({self.name})"
        if self.name == "forbidden_tools":
            return f"forbidden tools called: {_fmt(self.measured)} ({where})"
        if self.name == "outcome":
            return f"call outcome {_fmt(self.measured)}, expected {_fmt(self.allowed)} ({where})"
        if isinstance(self.measured, str):  # "no reply"
            return f"{label}: {self.measured} ({_fmt(self.allowed)}{unit} allowed; {where})"
        op = ">" if self.name.endswith("_max") else "<" if self.name.endswith("_min") else "!="
        return f"{label} {_fmt(self.measured)}{unit} {op} {_fmt(self.allowed)}{unit} allowed ({where})"


#: Words for the per-call limits in failure messages.
_LABELS = {
    "ttfa_ms_max": "time-to-first-audio",
    "e2e_latency_ms_max": "agent end-to-end latency",
    "wer_max": "word error rate",
    "cer_max": "character error rate",
    "duplicated_turns_max": "duplicated turns",
    "audio_gaps_max": "audio gaps",
    "packet_loss_max": "packet loss",
    "agent_clipping_max": "agent clipping",
    "agent_snr_db_min": "agent SNR",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
    return repr(value) if isinstance(value, (tuple, list, str)) else str(value)


def check_call(metrics: Mapping[str, Any], limits: Mapping[str, Any]) -> list[Breach]:
    """Compare a call's metrics dict (:meth:`CallMetrics.to_dict` plus ``tools_called``) with its
    limits; returns every breach.
    """
    out: list[Breach] = []

    def over(name: str, value: float | None, limit: float, detail: str = "") -> None:
        if value is not None and value > limit:
            out.append(Breach(name, value, limit, detail))

    def under(name: str, value: float | None, limit: float, detail: str = "") -> None:
        if value is not None and value < limit:
            out.append(Breach(name, value, limit, detail))

    turns: Sequence[Mapping[str, Any]] = metrics.get("turns") or []
    for lim in ("ttfa_ms_max", "e2e_latency_ms_max"):
        if lim in limits:
            key = "ttfa" if lim.startswith("ttfa") else "e2e_latency"
            for i, turn in enumerate(turns):
                value = turn.get(key)
                if value is None and key == "ttfa":
                    out.append(Breach(lim, "no reply", limits[lim], f"turn {i + 1}"))
                elif (ms := to_ms(value, digits=None)) is not None:
                    over(lim, ms, limits[lim], f"turn {i + 1}")
    simple = {
        "wer_max": "wer", "cer_max": "cer", "duplicated_turns_max": "duplicated_turns",
        "audio_gaps_max": "gaps",
    }
    for lim, key in simple.items():
        if lim in limits:
            over(lim, metrics.get(key), limits[lim])
    if "packet_loss_max" in limits:
        over("packet_loss_max", (metrics.get("rtc") or {}).get("packet_loss_ratio"), limits["packet_loss_max"])
    agent_q = metrics.get("agent_quality") or {}
    if "agent_clipping_max" in limits:
        over("agent_clipping_max", agent_q.get("clipping_ratio"), limits["agent_clipping_max"])
    if "agent_snr_db_min" in limits:
        under("agent_snr_db_min", agent_q.get("snr_db"), limits["agent_snr_db_min"])
    called = list(metrics.get("tools_called") or [])
    if "expected_tools" in limits:
        it = iter(called)
        if not all(name in it for name in limits["expected_tools"]):
            out.append(Breach("expected_tools", tuple(called), tuple(limits["expected_tools"]), "in order"))
    if "forbidden_tools" in limits:
        bad = tuple(n for n in called if n in limits["forbidden_tools"])
        if bad:
            out.append(Breach("forbidden_tools", bad, tuple(limits["forbidden_tools"])))
    if "outcome" in limits and metrics.get("outcome") != limits["outcome"]:
        out.append(Breach("outcome", metrics.get("outcome"), limits["outcome"]))
    return out


def counts_as_failed(test_outcome: Any, breaches: Sequence[Any] | None) -> bool:
    """Whether a call counts as failed in the run table, the ``failure_rate_max`` SLO and the
    baseline: its test failed, errored or timed out, or the call breached a per-call limit of its
    call type, whatever ``--livekit-limits`` made of the breach.
    """
    return test_outcome in FAILED_OUTCOMES or bool(breaches)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0-100) or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class CallTypeSummary:
    """Aggregates of all calls of one call type in a run."""

    call_type: str
    """The call type (``-`` for calls without one)."""
    calls: int = 0
    """Calls placed."""
    failed: int = 0
    """Calls whose test failed, errored or timed out, or that breached a per-call limit (whether
    the breach failed the test or only warned): see :func:`counts_as_failed`."""
    ttfa: list[float] = field(default_factory=list)
    """Every turn's TTFA, s."""
    wer: list[float] = field(default_factory=list)
    """Per-call WER."""
    outcomes: list[str] = field(default_factory=list)
    """Per-call outcome."""
    packet_loss: list[float] = field(default_factory=list)
    """Per-call caller-side packet loss ratio."""
    cohorts: dict[str, list[bool]] = field(default_factory=dict)
    """Condition kind -> per-call failed flags."""
    tools_ok: int = 0
    """Calls that met their tool expectations."""
    barge_ins: int = 0
    """Caller turns that started while the agent was audible."""
    recovered: int = 0
    """Barge-ins after which the agent was heard again."""
    reconnects: int = 0
    """Caller reconnects."""
    reconnects_ok: int = 0
    """Reconnects after which the call went on."""

    def add(self, row: Mapping[str, Any]) -> None:
        """Add one call's summary row (see :func:`pytest_livekit.outputs.artifacts.call_summary`)."""
        self.calls += 1
        failed = counts_as_failed(row.get("outcome_test"), row.get("breaches"))
        self.failed += int(failed)
        m = row.get("metrics") or {}
        self.ttfa += [t["ttfa"] for t in m.get("turns", []) if t.get("ttfa") is not None]
        if m.get("wer") is not None:
            self.wer.append(m["wer"])
        if m.get("outcome"):
            self.outcomes.append(m["outcome"])
        loss = (m.get("rtc") or {}).get("packet_loss_ratio")
        if loss is not None:
            self.packet_loss.append(loss)
        for kind in row.get("conditions") or ["clean"]:
            self.cohorts.setdefault(kind, []).append(failed)
        if not row.get("tool_breaches"):
            self.tools_ok += 1
        barge, recovered = row.get("interruptions") or (0, 0)
        self.barge_ins += barge
        self.recovered += recovered
        made, survived = row.get("reconnects") or (0, 0)
        self.reconnects += made
        self.reconnects_ok += survived

    def values(self) -> dict[str, float | None]:
        """The SLO quantities of this call type."""
        n = max(self.calls, 1)
        return {
            "ttfa_p50_ms": to_ms(percentile(self.ttfa, 50), digits=None),
            "ttfa_p95_ms": to_ms(percentile(self.ttfa, 95), digits=None),
            "ttfa_p99_ms": to_ms(percentile(self.ttfa, 99), digits=None),
            "wer_mean": statistics.fmean(self.wer) if self.wer else None,
            "failure_rate": self.failed / n,
            "task_completion": self.outcomes.count("completed") / n if self.outcomes else None,
            "human_transfer": self.outcomes.count("transferred") / n if self.outcomes else None,
            "packet_loss": statistics.fmean(self.packet_loss) if self.packet_loss else None,
            "interruption_recovery": self.recovered / self.barge_ins if self.barge_ins else None,
            "reconnect_success": self.reconnects_ok / self.reconnects if self.reconnects else None,
        }

    def check(self, slo: Mapping[str, Any]) -> list[Breach]:
        """Every SLO breach of this call type (failure rate also per cohort)."""
        vals = self.values()
        out: list[Breach] = []
        for name, limit in slo.items():
            key = name.rsplit("_", 1)[0]
            value = vals.get(key)
            if value is None:
                continue
            if name.endswith("_max") and value > limit or name.endswith("_min") and value < limit:
                out.append(Breach(name, value, limit, self.call_type))
        if "failure_rate_max" in slo:
            for kind, flags in self.cohorts.items():
                rate = sum(flags) / len(flags)
                if len(self.cohorts) > 1 and rate > slo["failure_rate_max"]:
                    out.append(Breach("failure_rate_max", rate, slo["failure_rate_max"], f"{self.call_type} × {kind}"))
        return out


