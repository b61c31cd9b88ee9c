"""Baselines: building, saving/loading, tolerances and comparison (pure, no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.outputs.baseline import (
    BASELINE_SCHEMA,
    BASELINE_SCHEMA_VERSION,
    DEFAULT_CALL_TOLERANCES,
    DEFAULT_TOLERANCES,
    METRICS,
    Baseline,
    Regression,
    Tolerance,
    baseline_from_traces,
    compare,
    load_baseline,
    parse_tolerance,
    save_baseline,
)

VERSIONS = {
    "plugin": "0.3.0", "livekit_server": "1.13.5", "livekit_agents": "1.2.0",
    "livekit_rtc": "1.0.12", "python": "3.11.9",
}
MACHINE = {"platform": "Linux x86_64", "cpus": 8, "hostname_hash": "abc123abc123"}


def trace(
    nodeid: str,
    *,
    call_type: str | None = "refund",
    ttfa: list[float | None] | None = None,
    wer: float | None = 0.1,
    cer: float | None = 0.05,
    ttfa_p50: float | None = None,
    duplicated: int = 0,
    gap_seconds: float = 0.0,
    outcome: str = "passed",
    breaches: list[str] | None = None,
    versions: dict[str, str] | None = None,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A synthetic call trace holding only the keys baselines read (times in seconds)."""
    ttfa = [1.0] if ttfa is None else ttfa
    answered = sorted(t for t in ttfa if t is not None)
    return {
        "test": {"nodeid": nodeid, "outcome": outcome},
        "call": {"call_type": call_type},
        "metrics": {
            "turns": [{"index": i, "ttfa": t} for i, t in enumerate(ttfa)],
            "wer": wer,
            "cer": cer,
            "ttfa_p50": ttfa_p50 if ttfa_p50 is not None else (answered[len(answered) // 2] if answered else None),
            "duplicated_turns": duplicated,
            "gaps": 0,
            "gap_seconds": gap_seconds,
        },
        "breaches": list(breaches or []),
        "versions": dict(VERSIONS if versions is None else versions),
        "machine": dict(MACHINE if machine is None else machine),
    }


def refund_run(ttfa: float = 1.0, wer: float | None = 0.1, **extra: Any) -> Baseline:
    """Two refund calls whose turns all take ``ttfa`` seconds (so p50 = p95 = ttfa)."""
    return baseline_from_traces(
        "run",
        [trace("t.py::a", ttfa=[ttfa, ttfa], wer=wer, **extra), trace("t.py::b", ttfa=[ttfa], wer=wer, **extra)],
    )


# -- building ---------------------------------------------------------------------------------
def test_per_call_metrics_are_flattened_into_ms() -> None:
    b = baseline_from_traces(
        "x", [trace("t.py::a", ttfa=[1.2, 0.4, 0.8], ttfa_p50=0.8, wer=0.25, cer=0.125,
                    duplicated=1, gap_seconds=0.11, call_type=None)]
    )
    assert b.calls == {
        "t.py::a": {
            "ttfa_ms": 1200.0, "ttfa_p50_ms": 800.0, "wer": 0.25, "cer": 0.125,
            "duplicated_turns": 1.0, "receive_gap_ms": 110.0, "call_type": "-",
        }
    }
    assert b.versions == VERSIONS and b.machine == MACHINE
    assert b.created_at.endswith("Z") and "T" in b.created_at


def test_call_type_aggregates() -> None:
    traces = [
        # ttfa over all turns of all refund calls: 0.1 .. 1.0 s (10 values); linear p95 = 0.955 s
        trace("t.py::a", ttfa=[0.1, 0.2, 0.3, 0.4, 0.5], wer=0.2),
        trace("t.py::b", ttfa=[0.6, 0.7, 0.8, 0.9, 1.0, None], wer=None, outcome="failed",
              breaches=["expected_tools: ('a',) != ('b',) allowed (in order)"]),
        trace("t.py::c", ttfa=[], wer=0.4, breaches=["wer_max: 0.4 > 0.2 allowed"]),
        trace("t.py::d", ttfa=[], wer=0.0, outcome="error", breaches=["forbidden_tools: ('x',) ..."]),
        trace("t.py::e", call_type="booking", ttfa=[2.0]),
    ]
    b = baseline_from_traces("x", traces)
    refund = b.call_types["refund"]
    assert refund["calls"] == 4
    assert refund["ttfa_p50_ms"] == pytest.approx(550.0)
    assert refund["ttfa_p95_ms"] == pytest.approx(955.0)
    assert refund["wer_mean"] == pytest.approx(0.2)  # (0.2 + 0.4 + 0.0) / 3: the None is left out
    assert refund["failed_ratio"] == pytest.approx(0.75)  # b, d failed; c passed but breached wer_max
    assert refund["tools_ok_ratio"] == pytest.approx(0.5)  # the wer_max breach is not a tool breach
    assert b.call_types["booking"]["ttfa_p95_ms"] == pytest.approx(2000.0)
    assert b.calls["t.py::e"]["call_type"] == "booking"


def test_repeated_nodeid_keeps_every_call() -> None:
    b = baseline_from_traces("x", [trace("t.py::a", ttfa=[1.0]), trace("t.py::a", ttfa=[2.0])])
    assert b.calls["t.py::a"]["ttfa_ms"] == 1000.0
    assert b.calls["t.py::a#2"]["ttfa_ms"] == 2000.0


# -- files ------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path: Path) -> None:
    b = baseline_from_traces("main-1.2_ci", [trace("t.py::a", ttfa=[0.5, None], wer=None)])
    path = save_baseline(b, tmp_path / "baselines")
    assert path == tmp_path / "baselines" / "main-1.2_ci.json"
    assert [p.name for p in path.parent.iterdir()] == ["main-1.2_ci.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["schema"] == BASELINE_SCHEMA and data["schema_version"] == BASELINE_SCHEMA_VERSION
    by_name = load_baseline("main-1.2_ci", tmp_path / "baselines")
    by_path = load_baseline(str(path), tmp_path / "elsewhere")
    assert by_name == b == by_path
    assert by_name.calls["t.py::a"]["wer"] is None


@pytest.mark.parametrize("name", ["", "a b", "../x", "x/y", "é", ".."])
def test_bad_baseline_name_is_refused(tmp_path: Path, name: str) -> None:
    b = baseline_from_traces(name, [trace("t.py::a")])
    with pytest.raises(ValueError, match=r"letters, digits, '_', '\.' and '-'"):
        save_baseline(b, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_of_missing_name_lists_existing(tmp_path: Path) -> None:
    for name in ("main", "release"):
        save_baseline(baseline_from_traces(name, [trace("t.py::a")]), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no baseline named 'nightly'.*Saved baselines: main, release\."):
        load_baseline("nightly", tmp_path)
    with pytest.raises(FileNotFoundError, match="No baselines saved"):
        load_baseline("nightly", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no baseline file at"):
        load_baseline(str(tmp_path / "nightly.json"), tmp_path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    data = baseline_from_traces("future", [trace("t.py::a")]).to_dict()
    data["schema_version"] = BASELINE_SCHEMA_VERSION + 1
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"future\.json: .*newer.*Upgrade pytest-livekit"):
        load_baseline("future", tmp_path)
    data["schema_version"] = BASELINE_SCHEMA_VERSION
    (tmp_path / "future.json").write_text(json.dumps(data))
    assert load_baseline("future", tmp_path).name == "future"


def test_other_documents_are_refused(tmp_path: Path) -> None:
    (tmp_path / "trace.json").write_text(json.dumps({"schema": "pytest-livekit/call-trace", "schema_version": 1}))
    with pytest.raises(ValueError, match="not a pytest-livekit baseline.*'pytest-livekit/call-trace'"):
        load_baseline(str(tmp_path / "trace.json"), tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_baseline("broken", tmp_path)


# -- tolerances -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metric", "text", "relative", "absolute"),
    [
        ("ttfa_p95_ms", "20%", 0.2, None),
        ("ttfa_p95_ms", " 12.5 % ", 0.125, None),
        ("wer_mean", "0.05", None, 0.05),
        ("wer_mean", 0.05, None, 0.05),
        ("failed_ratio", 0, None, 0.0),
        ("ttfa_p95_ms", "150ms", None, 150.0),
        ("ttfa_p50_ms", "0.15s", None, 150.0),
        ("ttfa_p50_ms", "150", None, 150.0),
        ("ttfa_p95_ms", "20%, 150ms", 0.2, 150.0),
        ("call.wer", "10% or 0.02", 0.1, 0.02),
        ("call.receive_gap_ms", "80 ms", None, 80.0),
    ],
)
def test_parse_tolerance(metric: str, text: str | float, relative: float | None, absolute: float | None) -> None:
    tol = parse_tolerance(metric, text)
    assert tol.metric == metric
    assert tol.relative == pytest.approx(relative)
    assert tol.absolute == pytest.approx(absolute)


@pytest.mark.parametrize(
    ("metric", "text"),
    [
        ("wer_mean", "150ms"),  # time units only for *_ms metrics
        ("ttfa_p95_ms", "fast"),
        ("ttfa_p95_ms", "-5%"),
        ("ttfa_p95_ms", -5.0),
        ("ttfa_p95_ms", "20%, 30%"),
        ("ttfa_p95_ms", "1, 2"),
        ("ttfa_p95_ms", ""),
        ("wer_mean", True),
        ("wer_mean", float("nan")),
    ],
)
def test_parse_tolerance_refuses_bad_text_and_shows_formats(metric: str, text: Any) -> None:
    with pytest.raises(ValueError, match=rf"tolerance for '{metric}'.*is not valid\. Write '20%'") as info:
        parse_tolerance(metric, text)
    formats = str(info.value).split("Write", 1)[1]
    assert ("'150ms'" in formats) == metric.endswith("_ms")


def test_parse_tolerance_refuses_unknown_metric_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="'ttfa_p90_ms' is not a metric") as info:
        parse_tolerance("ttfa_p90_ms", "20%")
    for name in ("ttfa_p95_ms", "wer_mean", "tools_ok_ratio", "call.wer", "call.receive_gap_ms"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="Did you mean call.wer"):
        parse_tolerance("wer", "20%")
    with pytest.raises(ValueError, match="not a metric"):
        parse_tolerance("calls", "1")  # informational, never compared


def test_defaults_cover_every_compared_metric() -> None:
    compared = {m for m in METRICS if m != "calls"}
    assert set(DEFAULT_TOLERANCES) | set(DEFAULT_CALL_TOLERANCES) == compared
    assert not any(k.startswith("call.") for k in DEFAULT_TOLERANCES)
    for key, tol in {**DEFAULT_TOLERANCES, **DEFAULT_CALL_TOLERANCES}.items():
        assert tol.metric == key
        assert METRICS[key][0] in ("lower", "higher")


def test_tolerance_refuses_negative_parts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Tolerance("wer_mean", relative=-0.1)


# -- comparing --------------------------------------------------------------------------------
def p95(tol: Tolerance) -> dict[str, Tolerance]:
    return {"ttfa_p95_ms": tol}


def test_regression_beyond_relative_tolerance_and_not_within() -> None:
    base = refund_run(ttfa=1.0)
    tol = p95(Tolerance("ttfa_p95_ms", relative=0.2))
    within = compare(refund_run(ttfa=1.19), base, tol)
    assert within.ok and within.regressions == [] and within.improvements == []
    beyond = compare(refund_run(ttfa=1.21), base, tol)
    assert not beyond.ok
    assert beyond.regressions == [Regression("call type refund", "ttfa_p95_ms", 1000.0, 1210.0, 1200.0)]
    assert str(beyond.regressions[0]) == "call type refund: ttfa_p95_ms 1000 -> 1210 (+21.0 %, allowed up to 1200)"


def test_regression_message_matches_the_documented_shape() -> None:
    r = Regression("call type refund", "ttfa_p95_ms", 1180.0, 1650.0, 1475.0)
    assert str(r) == "call type refund: ttfa_p95_ms 1180 -> 1650 (+39.8 %, allowed up to 1475)"


def test_absolute_tolerance() -> None:
    base = refund_run(wer=0.10)
    tol = {"wer_mean": Tolerance("wer_mean", absolute=0.05)}
    assert compare(refund_run(wer=0.14), base, tol).ok
    (reg,) = compare(refund_run(wer=0.16), base, tol).regressions
    assert reg.metric == "wer_mean" and reg.allowed == pytest.approx(0.15)


def test_both_given_uses_the_larger_allowance() -> None:
    base = refund_run(ttfa=1.0)
    larger_absolute = p95(Tolerance("ttfa_p95_ms", relative=0.1, absolute=300.0))  # allows 300 ms
    assert compare(refund_run(ttfa=1.25), base, larger_absolute).ok
    assert not compare(refund_run(ttfa=1.35), base, larger_absolute).ok
    larger_relative = p95(Tolerance("ttfa_p95_ms", relative=0.5, absolute=100.0))  # allows 500 ms
    assert compare(refund_run(ttfa=1.45), base, larger_relative).ok
    (reg,) = compare(refund_run(ttfa=1.55), base, larger_relative).regressions
    assert reg.allowed == pytest.approx(1500.0)


def test_improvement_beyond_the_same_allowance() -> None:
    base = refund_run(ttfa=1.0)
    tol = p95(Tolerance("ttfa_p95_ms", relative=0.2))
    assert compare(refund_run(ttfa=0.81), base, tol).improvements == []
    result = compare(refund_run(ttfa=0.7), base, tol)
    assert result.ok and result.regressions == []
    (imp,) = result.improvements
    assert imp.current == 700.0 and imp.allowed == pytest.approx(800.0)
    assert str(imp) == "call type refund: ttfa_p95_ms 1000 -> 700 (-30.0 %, beyond 800)"


def test_higher_is_better_direction_for_tools_ok_ratio() -> None:
    good = trace("t.py::a")
    bad = trace("t.py::a", breaches=["forbidden_tools: ('issue_refund',) ('issue_refund',) allowed"])
    tol = {"tools_ok_ratio": Tolerance("tools_ok_ratio", absolute=0.1)}
    before = baseline_from_traces("b", [good, trace("t.py::b")])
    after = baseline_from_traces("c", [bad, trace("t.py::b")])
    dropped = compare(after, before, tol)
    (reg,) = dropped.regressions
    assert (reg.metric, reg.baseline, reg.current) == ("tools_ok_ratio", 1.0, 0.5)
    assert reg.allowed == pytest.approx(0.9)
    assert "allowed down to 0.9" in str(dropped.regressions[0])
    rose = compare(before, after, tol)
    assert rose.ok
    (imp,) = rose.improvements
    assert (imp.baseline, imp.current) == (0.5, 1.0) and imp.allowed == pytest.approx(0.6)


def test_failed_ratio_rising_is_a_regression_with_defaults() -> None:
    before = baseline_from_traces("b", [trace("t.py::a"), trace("t.py::b")])
    after = baseline_from_traces("c", [trace("t.py::a", outcome="failed"), trace("t.py::b")])
    assert [r.metric for r in compare(after, before).regressions] == ["failed_ratio"]
    assert [r.metric for r in compare(before, after).improvements] == ["failed_ratio"]


def test_none_values_are_skipped() -> None:
    base = refund_run(wer=None)
    result = compare(refund_run(wer=0.9), base, {"wer_mean": Tolerance("wer_mean", absolute=0.0)})
    assert result.ok and result.improvements == []
    (check,) = result.checks
    assert (check.verdict, check.baseline, check.current) == ("skipped", None, 0.9)
    assert "skipped (no baseline value)" in result.lines()[0]
    reverse = compare(refund_run(wer=None), refund_run(wer=0.1), {"wer_mean": Tolerance("wer_mean")})
    assert reverse.ok and reverse.checks[0].verdict == "skipped"


def test_per_call_metrics_are_compared_only_when_asked() -> None:
    base = baseline_from_traces("b", [trace("t.py::a", wer=0.1), trace("t.py::b", wer=0.1)])
    now = baseline_from_traces("c", [trace("t.py::a", wer=0.5), trace("t.py::b", wer=0.1)])
    only_types = compare(now, base, {"ttfa_p95_ms": DEFAULT_TOLERANCES["ttfa_p95_ms"]})
    assert only_types.ok and {c.scope for c in only_types.checks} == {"call type refund"}
    per_call = compare(now, base, {"call.wer": Tolerance("call.wer", absolute=0.05)})
    assert [(r.scope, r.metric) for r in per_call.regressions] == [("t.py::a", "wer")]
    assert {c.scope for c in per_call.checks} == {"t.py::a", "t.py::b"}
    assert {c.metric for c in per_call.checks} == {"wer"}


def test_defaults_compare_every_call_type_aggregate() -> None:
    result = compare(refund_run(), refund_run())
    assert [c.metric for c in result.checks] == [
        "ttfa_p50_ms", "ttfa_p95_ms", "wer_mean", "failed_ratio", "tools_ok_ratio"
    ]
    assert all(c.verdict == "ok" for c in result.checks)


def test_unknown_tolerance_key_is_refused() -> None:
    with pytest.raises(ValueError, match="'wer_p95' is not a metric"):
        compare(refund_run(), refund_run(), {"wer_p95": Tolerance("wer_p95")})


def test_missing_and_new_calls_are_listed() -> None:
    base = baseline_from_traces("b", [trace("t.py::a"), trace("t.py::gone"), trace("t.py::old")])
    now = baseline_from_traces("c", [trace("t.py::a"), trace("t.py::fresh")])
    result = compare(now, base)
    assert result.missing == ["t.py::gone", "t.py::old"]
    assert result.new == ["t.py::fresh"]
    assert result.baseline_name == "b"


def test_version_and_machine_differences_warn() -> None:
    base = baseline_from_traces("b", [trace("t.py::a")])
    same = compare(baseline_from_traces("c", [trace("t.py::a")]), base)
    assert same.warnings == []
    now = baseline_from_traces(
        "c", [trace("t.py::a", versions={**VERSIONS, "livekit_server": "1.14.0", "python": "3.12.1"},
                    machine={**MACHINE, "cpus": 4})]
    )
    assert compare(now, base).warnings == [
        "livekit_server 1.13.5 -> 1.14.0: figures may not be comparable",
        "python 3.11.9 -> 3.12.1: figures may not be comparable",
        "machine.cpus 8 -> 4: figures may not be comparable",
    ]


def test_lines_and_to_dict() -> None:
    result = compare(refund_run(ttfa=1.5), refund_run(ttfa=1.0))
    lines = result.lines()
    assert len(lines) == len(result.checks) == 5
    p95_line = next(line for line in lines if "ttfa_p95_ms" in line)
    for part in ("call type refund", "1000 -> 1500", "+50.0 %", "allowed up to 1250 (25 % or 150 ms)", "REGRESSION"):
        assert part in p95_line
    assert next(line for line in lines if "wer_mean" in line).endswith("ok")
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["ok"] is False
    assert [r["metric"] for r in data["regressions"]] == ["ttfa_p50_ms", "ttfa_p95_ms"]
    assert data["regressions"][1]["text"] == str(result.regressions[1])
