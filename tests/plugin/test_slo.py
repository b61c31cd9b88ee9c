"""Session SLOs: rows from every test (also from xdist workers) are aggregated per call type."""

from __future__ import annotations

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"

[tool.pytest_livekit.call_types.refund.slo]
ttfa_p95_ms_max = 1000
wer_mean_max = 0.2
"""

# Each test publishes a call row the way the plugin does for a real call (the teardown report's
# livekit_rows attribute, which xdist carries to the controller), so the aggregation and SLO
# evaluation run without a server.
CONFTEST = """
import json
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "teardown":
        report.livekit_rows = [json.loads(v) for k, v in item.user_properties if k == "test_row"]
    return report
"""

TESTS = """
import json
import pytest

@pytest.mark.parametrize("ttfa", [0.4, 0.5, 0.6, 0.7, {slow}])
def test_call(record_property, ttfa):
    row = {{"call_type": "refund", "metrics": {{"turns": [{{"ttfa": ttfa}}], "wer": 0.1,
           "outcome": "completed"}}, "tools": [], "artifacts": None}}
    record_property("test_row", json.dumps(row))
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_slo_breach_fails_the_run_with_a_table(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(TESTS.format(slow=2.5))
    result = pytester.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*livekit calls*",
            "call type*calls*ttfa p50*p95*p99*wer*",
            "refund*5*600 ms*2.14 s*2.43 s*0.10*",
            "SLO breach: ttfa_p95_ms_max: 2140 > 1000 allowed (refund)",
        ]
    )
    result.stdout.fnmatch_lines(["*5 passed*"])


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_slo_met_passes(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(TESTS.format(slow=0.8))
    result = pytester.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.OK
    assert "SLO breach" not in result.stdout.str()


def test_two_calls_in_one_test_get_two_rows(pytester: pytest.Pytester) -> None:
    """make_livekit_call twice in one test: two rows with the same node id (no crash sorting)."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import json

        def test_two_calls(record_property):
            for ttfa in (0.4, 0.5):
                row = {"call_type": "refund", "metrics": {"turns": [{"ttfa": ttfa}], "wer": 0.1,
                       "outcome": "completed"}, "tools": [], "artifacts": None}
                record_property("test_row", json.dumps(row))
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["refund*2*450 ms*", "*test_two_calls ?refund? passed: ttfa 400ms*",
                                 "*test_two_calls ?refund? passed: ttfa 500ms*"])


def test_a_users_own_livekit_property_is_theirs(pytester: pytest.Pytester) -> None:
    """The plugin's rows do not travel as user properties: a test's own record_property("livekit",
    ...) with any value is safe, and junit.xml carries no internal row."""
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        def test_mine(record_property):
            record_property("livekit", "my own value, not JSON")
        """
    )
    result = pytester.runpytest_subprocess("--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="livekit" value="my own value, not JSON"' in junit
    assert "call_type" not in junit
