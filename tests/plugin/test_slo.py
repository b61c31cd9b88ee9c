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

# Each test publishes a call row the way the plugin does for a real call (user property
# "livekit"), so the aggregation and SLO evaluation run without a server.
TESTS = """
import json
import pytest

@pytest.mark.parametrize("ttfa", [0.4, 0.5, 0.6, 0.7, {slow}])
def test_call(record_property, ttfa):
    row = {{"call_type": "refund", "metrics": {{"turns": [{{"ttfa": ttfa}}], "wer": 0.1,
           "outcome": "completed"}}, "tools": [], "artifacts": None}}
    record_property("livekit", json.dumps(row))
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_slo_breach_fails_the_run_with_a_table(pytester: pytest.Pytester, xdist: list[str]) -> None:
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
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(TESTS.format(slow=0.8))
    result = pytester.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.OK
    assert "SLO breach" not in result.stdout.str()


def test_two_calls_in_one_test_get_two_rows(pytester: pytest.Pytester) -> None:
    """make_livekit_call twice in one test: two rows with the same node id (no crash sorting)."""
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import json

        def test_two_calls(record_property):
            for ttfa in (0.4, 0.5):
                row = {"call_type": "refund", "metrics": {"turns": [{"ttfa": ttfa}], "wer": 0.1,
                       "outcome": "completed"}, "tools": [], "artifacts": None}
                record_property("livekit", json.dumps(row))
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["refund*2*450 ms*", "*test_two_calls ?refund? passed: ttfa 400ms*",
                                 "*test_two_calls ?refund? passed: ttfa 500ms*"])
