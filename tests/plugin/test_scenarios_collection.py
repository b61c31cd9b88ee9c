"""Scenario files at collection: one test id per scenario and table row, bad files refused there."""

from __future__ import annotations

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
asyncio_mode = "auto"

[tool.pytest_livekit.call_types.refund]
ttfa_ms_max = 1500

[tool.pytest_livekit.call_types.booking]
ttfa_ms_max = 2500
"""

SCENARIOS = """
[defaults]
call_type = "refund"
hang_up_when = "on its way"
[defaults.responses]
"name" = "My name is {name}"

[scenario.alice]
facts = { name = "Alice Martin" }

[scenario.booked]
call_type = "booking"
facts = { name = "Bob Jones" }

[scenario.table]
variations = "rows.csv"
"""


def test_each_scenario_and_row_is_a_test_with_its_call_type(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makefile(".toml", scenarios=SCENARIOS)
    pytester.makefile(".csv", rows="id,name,cohort\nr1,Carol Smith,a\nr2,David Brown,b\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(scenarios="scenarios.toml")
        def test_each(livekit_scenario, livekit_call_type):
            limit = {"refund": 1500, "booking": 2500}[livekit_scenario.call_type]
            assert livekit_call_type.name == livekit_scenario.call_type
            assert livekit_call_type.limits["ttfa_ms_max"] == limit
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*test_each[[]alice] PASSED*", "*test_each[[]booked] PASSED*",
        "*test_each[[]table-r1] PASSED*", "*test_each[[]table-r2] PASSED*",
    ])


@pytest.mark.parametrize(
    ("scenarios", "marker", "message"),
    [
        (SCENARIOS.replace('"booking"', '"bookin"'), 'scenarios="scenarios.toml"',
         "*scenario.booked: call_type 'bookin' is not configured; valid: refund, booking. Did you mean 'booking'?*"),
        (SCENARIOS.replace("{name}", "{nam}"), 'scenarios="scenarios.toml"',
         "*{nam} is not a fact of this scenario; facts: name. Did you mean 'name'?*"),
        (SCENARIOS, 'scenarios="missing.toml"', "*scenario file *missing.toml does not exist.*"),
        (SCENARIOS, 'scenarios=3', "*scenarios must be a scenario file name or a list of them, got 3.*"),
        (SCENARIOS, 'scenarios="scenarios.toml", call_types="all"', "*give either scenarios or call_types, not both*"),
    ],
)
def test_bad_scenarios_are_usage_errors_at_collection(
    pytester: pytest.Pytester, scenarios: str, marker: str, message: str
) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makefile(".toml", scenarios=scenarios)
    pytester.makefile(".csv", rows="id,name\nr1,Carol Smith\n")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.livekit({marker})
        def test_each(livekit_scenario):
            pass
        """
    )
    result = pytester.runpytest()
    # a collection error: nothing runs, the file and key are named
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([message, "*1 error during collection*"])


def test_the_scenario_fixture_without_scenarios_says_what_to_add(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile("def test_x(livekit_scenario): pass")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(['*livekit_scenario needs @pytest.mark.livekit(scenarios="file.toml")*'])
