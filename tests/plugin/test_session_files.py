"""Session files and baselines, through the plugin's hooks (also across xdist workers).

The traces here are attached to the teardown reports by a conftest hook, exactly where the
plugin attaches a real call's trace (``report.livekit_traces``); a real call's trace is checked
by tests/integration/test_artifacts.py. This isolates the session-level wiring: collection on
the xdist controller, calls.jsonl, baseline save/compare, tolerances, warnings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = """
import json
import pytest
from pytest_livekit.call.record import CallRecord
from pytest_livekit.outputs.trace import build_trace

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "teardown":
        ttfa = item.callspec.params["ttfa"]
        rec = CallRecord(call_id=item.name, call_type="refund", started_at_epoch=1.8e9)
        metrics = {"turns": [{"index": 0, "ttfa": ttfa, "wer": 0.1}], "wer": 0.1,
                   "ttfa_p50": ttfa, "outcome": "resolved"}
        trace = build_trace(rec, metrics=metrics, test={"nodeid": item.nodeid, "outcome": "passed"})
        trace["versions"]["livekit_server"] = "{server_version}"
        report.livekit_traces = [trace]
        report.livekit_rows = [{"call_type": "refund",
            "metrics": metrics, "tools": [], "artifacts": None}]
    return report
"""

TESTS = """
import pytest

@pytest.mark.parametrize("ttfa", [{ttfas}])
def test_call(ttfa):
    pass
"""


def _suite(pytester: pytest.Pytester, ttfas: str = "0.8, 0.9, 1.0, 1.1", server_version: str = "1.13.5") -> None:
    pytester.makeconftest(CONFTEST.replace("{server_version}", server_version))
    pytester.makepyfile(TESTS.format(ttfas=ttfas))


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_calls_jsonl_has_every_call(pytester: pytest.Pytester, xdist: list[str]) -> None:
    _suite(pytester)
    result = pytester.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.OK
    lines = (pytester.path / ".livekit" / "calls.jsonl").read_text().splitlines()
    nodeids = sorted(json.loads(line)["test"]["nodeid"] for line in lines)
    assert nodeids == [f"test_calls_jsonl_has_every_call.py::test_call[{t}]" for t in ("0.8", "0.9", "1.0", "1.1")]
    assert all(json.loads(line)["schema"] == "pytest-livekit/call-trace" for line in lines)
    result.stdout.fnmatch_lines(["calls: *calls.jsonl"])


def test_baseline_save_then_compare_within_tolerance_passes(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    saved = pytester.runpytest_subprocess("--livekit-baseline-save=main")
    assert saved.ret == pytest.ExitCode.OK
    path = pytester.path / ".livekit" / "baselines" / "main.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "pytest-livekit/baseline"
    assert data["call_types"]["refund"]["ttfa_p50_ms"] == pytest.approx(950.0)
    saved.stdout.fnmatch_lines([f"baseline: {path}"])
    # 5 % slower: inside the default allowance (20 % or 100 ms)
    _suite(pytester, ttfas="0.84, 0.945, 1.05, 1.155")
    again = pytester.runpytest_subprocess("--livekit-baseline-compare=main")
    assert again.ret == pytest.ExitCode.OK, again.stdout.str()
    assert "REGRESSION" not in again.stdout.str()
    again.stdout.fnmatch_lines(["*ttfa_p50_ms*ok*"])


def test_regression_beyond_tolerance_fails_the_run(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    _suite(pytester, ttfas="1.2, 1.3, 1.4, 1.5")  # +400 ms
    result = pytester.runpytest_subprocess("--livekit-baseline-compare=main", "--livekit-tolerance=ttfa_p50_ms=10%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["REGRESSION call type refund: ttfa_p50_ms 950 -> 1350*"])
    result.stdout.fnmatch_lines(["*4 passed*"])  # the tests passed; the run failed on the baseline


def test_a_generous_tolerance_from_pyproject_accepts_the_same_change(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    pytester.makepyprojecttoml(
        "[tool.pytest_livekit.baseline.tolerances]\nttfa_p50_ms = \"50%\"\nttfa_p95_ms = \"50%\"\n"
    )
    _suite(pytester, ttfas="1.2, 1.3, 1.4, 1.5")
    result = pytester.runpytest_subprocess("--livekit-baseline-compare=main")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_version_difference_is_a_warning(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    _suite(pytester, server_version="1.14.0")
    result = pytester.runpytest_subprocess("--livekit-baseline-compare=main")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baseline main: livekit_server 1.13.5 -> 1.14.0: figures may not be comparable"])


def test_missing_baseline_is_a_usage_error_listing_the_saved_ones(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    result = pytester.runpytest_subprocess("--livekit-baseline-compare=mian")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # before any test runs
    result.stderr.fnmatch_lines(["*--livekit-baseline-compare*mian*main*"])


def test_comparison_is_kept_with_both_sides_versions(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    _suite(pytester, server_version="1.14.0")
    assert pytester.runpytest_subprocess("--livekit-baseline-compare=main").ret == pytest.ExitCode.OK
    kept = json.loads((pytester.path / ".livekit" / "baseline-comparison.json").read_text())
    assert kept["baseline"]["versions"]["livekit_server"] == "1.13.5"
    assert kept["current"]["versions"]["livekit_server"] == "1.14.0"
    assert kept["baseline"]["machine"]["cpus"] == kept["current"]["machine"]["cpus"]
    assert kept["ok"] is True and kept["checks"]


def test_a_broken_output_is_reported_without_losing_the_others(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    # the report's folder is a file: writing the report fails; calls.jsonl and the baseline still land
    (pytester.path / "out").write_text("not a folder")
    result = pytester.runpytest_subprocess("--livekit-report=out/report.html", "--livekit-baseline-save=main")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["livekit: could not write the report: *"])
    assert (pytester.path / ".livekit" / "calls.jsonl").exists()
    assert (pytester.path / ".livekit" / "baselines" / "main.json").exists()


def test_compare_without_any_call_says_so(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    assert pytester.runpytest_subprocess("--livekit-baseline-save=main").ret == pytest.ExitCode.OK
    result = pytester.runpytest_subprocess("--livekit-baseline-compare=main", "-k", "nothing_matches")
    result.stdout.fnmatch_lines(["baseline: no LiveKit call ran in this session*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--livekit-baseline-save=../x"], "*--livekit-baseline-save*not allowed*letters, digits*"),
        (["--livekit-baseline-save=x", "--livekit-tolerance=ttfa_p50_ms"], "*METRIC=ALLOWANCE*"),
        (["--livekit-baseline-save=x", "--livekit-tolerance=ttfa_p50_ms=fast"], "*ttfa_p50_ms*fast*"),
        (["--livekit-baseline-save=x", "--livekit-tolerance=latency=5%"], "*latency*ttfa_p50_ms*"),
        (["--livekit-report=."], "*--livekit-report*is a folder*"),
    ],
    ids=["bad-name", "no-equals", "bad-allowance", "unknown-metric", "report-is-a-folder"],
)
def test_bad_baseline_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    _suite(pytester)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_keep_and_progress_values_are_checked(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_keep = some\n")
    _suite(pytester)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*livekit_keep = 'some' is not valid. Valid values: all, failed.*"])


def test_no_session_files_without_calls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK
    assert not Path(pytester.path / ".livekit" / "calls.jsonl").exists()
