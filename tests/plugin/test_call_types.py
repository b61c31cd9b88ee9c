"""Call types in pyproject: validation at startup, parametrization, per-test overrides."""

from __future__ import annotations

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
asyncio_mode = "auto"

[tool.pytest_livekit.call_types.refund]
script = ["I want a refund"]
ttfa_ms_max = 1500
wer_max = 0.2
expected_tools = ["lookup_order"]

[tool.pytest_livekit.call_types.refund.slo]
ttfa_p95_ms_max = 1200

[tool.pytest_livekit.call_types.booking]
ttfa_ms_max = 2500
"""


def test_unknown_limit_name_lists_valid_names(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest_livekit.call_types.refund]\nttfa_max = 1500\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*[[]tool.pytest_livekit.call_types.refund]: 'ttfa_max' is not a known limit. Valid names: *ttfa_ms_max*"]
    )


def test_bad_limit_value_and_bad_slo_name(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest_livekit.call_types.refund]\nwer_max = 'low'\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*wer_max = 'low' is not a number.*"])
    pytester.makepyprojecttoml("[tool.pytest_livekit.call_types.refund.slo]\nttfa_p90_ms_max = 1\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*.slo]: 'ttfa_p90_ms_max' is not a known limit. Valid names: *ttfa_p95_ms_max*"])


def test_call_types_all_parametrizes_with_own_thresholds(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_types="all")
        def test_each(livekit_call_type):
            limits = {"refund": 1500, "booking": 2500}
            assert livekit_call_type.limits["ttfa_ms_max"] == limits[livekit_call_type.name]
            if livekit_call_type.name == "refund":
                assert livekit_call_type.script == ("I want a refund",)
                assert livekit_call_type.slo == {"ttfa_p95_ms_max": 1200.0}
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_each[[]refund[]] PASSED*", "*test_each[[]booking[]] PASSED*"])


def test_marker_overrides_a_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_type="refund", ttfa_ms_max=3000)
        def test_slow_path(livekit_call_type):
            assert livekit_call_type.limits["ttfa_ms_max"] == 3000
            assert livekit_call_type.limits["wer_max"] == 0.2

        @pytest.mark.livekit(call_type="refund", expected_tools=["lookup_order", "issue_refund"])
        def test_more_tools(livekit_call_type):
            assert livekit_call_type.limits["expected_tools"] == ("lookup_order", "issue_refund")
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_configured_call_types_are_the_valid_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_type="refnud")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'refnud' is not a valid call_type. Valid call types: refund, booking.*"])


def test_bad_marker_limit_value(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_type="refund", wer_max="x")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*@pytest.mark.livekit: wer_max = 'x' is not a number.*"])
