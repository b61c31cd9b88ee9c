"""Merging shards: one run from many .livekit folders, equal to the same calls run as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_livekit.__main__ import main
from pytest_livekit.errors import ConfigError
from pytest_livekit.metrics.thresholds import parse_call_types
from pytest_livekit.outputs.artifacts import write_session_jsonl
from pytest_livekit.outputs.merge import load_shard, merge_shards
from pytest_livekit.outputs.run_summary import OutputOptions, RunSummary, render_lines
from tests.unit.test_run_summary import _trace

PYPROJECT = """
[tool.pytest_livekit.call_types.refund]
ttfa_ms_max = 1500
[tool.pytest_livekit.call_types.refund.slo]
ttfa_p95_ms_max = 1000
"""
TTFAS = [0.55, 0.6, 0.62, 0.7, 0.75, 0.8, 0.9, 1.1, 1.2, 1.84]


def _shards(tmp_path: Path, n: int) -> list[Path]:
    traces = [_trace(f"test_{i}", t, "failed" if t > 1.5 else "passed") for i, t in enumerate(TTFAS)]
    folders = []
    for k in range(n):
        folder = tmp_path / f"shard-{k}" / ".livekit"
        folder.mkdir(parents=True)
        write_session_jsonl(folder / "calls.jsonl", traces[k::n])
        folders.append(folder)
    return folders


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_merged_figures_equal_one_run_of_the_same_calls(tmp_path: Path, shards: int) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    types = parse_call_types({"refund": {"ttfa_ms_max": 1500, "slo": {"ttfa_p95_ms_max": 1000}}})
    whole = RunSummary([_trace(f"test_{i}", t, "failed" if t > 1.5 else "passed") for i, t in enumerate(TTFAS)],
                       OutputOptions(session_dir=tmp_path / "whole", call_type_configs=types))
    whole.check_slos()
    merged = merge_shards(_shards(tmp_path, shards), out_dir=tmp_path / "merged", pyproject=tmp_path / "pyproject.toml")
    # the same SLO verdict and the same table, line for line (a p95 over all calls, not of shards)
    assert merged.summary.slo_breaches == whole.slo_breaches == ["ttfa_p95_ms_max: 1552 > 1000 allowed (refund)"]
    assert render_lines(merged.summary.table_lines()) == render_lines(whole.table_lines()) + (
        f"\ncalls: {tmp_path / 'merged' / 'calls.jsonl'}"
    )
    lines = (tmp_path / "merged" / "calls.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["test"]["nodeid"] for line in lines) == sorted(f"t.py::test_{i}" for i in range(10))
    assert merged.failed and not merged.warnings


def test_the_cli_writes_one_report_and_fails_on_a_breach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    a, b = _shards(tmp_path, 2)
    code = main(["merge", str(a), str(b.parent), "--out", str(tmp_path / "m"), "--pyproject",
                 str(tmp_path / "pyproject.toml"), "--report", str(tmp_path / "m" / "report.html"),
                 "--baseline-save", "nightly"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"merged 10 calls from 2 shards: {a} (5), {b.parent} (5)" in out
    assert "SLO breach: ttfa_p95_ms_max: 1552 > 1000 allowed (refund)" in out
    assert (tmp_path / "m" / "report.html").read_text().count("t.py::test_") >= 10
    assert (tmp_path / "m" / "baselines" / "nightly.json").is_file()


def test_versions_that_differ_are_flagged_and_duplicates_count_once(tmp_path: Path) -> None:
    a, b = _shards(tmp_path, 2)
    traces = load_shard(b)
    for t in traces:
        t["versions"]["livekit_server"] = "1.12.0"
    write_session_jsonl(b / "calls.jsonl", traces)
    merged = merge_shards([a, b, a], out_dir=tmp_path / "m")
    assert merged.duplicates == 5 and merged.shards[str(a)] == 5
    assert any(w.startswith("livekit_server differs between shards: 1.12.0") for w in merged.warnings), merged.warnings
    assert "5 call(s) appear in more than one shard" in merged.warnings[-1]
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m2"), "--strict-versions"]) == 1


def test_bad_shards_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no calls.jsonl there"):
        load_shard(tmp_path)
    (tmp_path / "calls.jsonl").write_text('{"call": {}, "test": {}}\n{"trunc')
    with pytest.raises(ConfigError, match=r"calls.jsonl:2: not a JSON line"):
        load_shard(tmp_path)
    with pytest.raises(ConfigError, match="at least one shard"):
        merge_shards([], out_dir=tmp_path / "m")
