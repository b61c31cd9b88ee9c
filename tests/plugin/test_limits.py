"""A call that breaches a per-call limit of its call type fails its test (``--livekit-limits=fail``,
the default) or warns (``warn``); breached calls count as failed in the failure-rate SLO.

The inner suites place no real call: their conftest registers a stand-in call exactly where the
``livekit_call`` / ``make_livekit_call`` fixtures register a real one (the item's call list and
event loop, ``call_limits.call_ended`` at the end of a factory block), so every check below runs
through the plugin's own hooks. The stand-in's agent audio is recorded only when it hangs up (a
real call completes its heard segments and RTC stats at hang-up): a limit checked before the
hang-up would see no reply at all.
Real calls against these limits: tests/integration/test_limits_real_calls.py.
"""

from __future__ import annotations

import json

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
asyncio_default_test_loop_scope = "function"

[tool.pytest_livekit.call_types.refund]
ttfa_ms_max = 1500
wer_max = 0.2

[tool.pytest_livekit.call_types.refund.slo]
failure_rate_max = 0.0
"""

CONFTEST = """
import asyncio
import contextlib

import pytest
import pytest_asyncio

from pytest_livekit.pytest_run.limits import call_ended
from pytest_livekit.pytest_run.keys import CALL_KEY, LOOP_KEY
from pytest_livekit.call.record import CallerTurn, CallRecord, HeardSegment, Transcript


class StandInCall:
    def __init__(self, call_type, ttfa_s):
        self.record = CallRecord(call_id="room", call_type=call_type.name if call_type else None,
                                 started_at_epoch=1.8e9)
        self.record.caller_turns.append(CallerTurn(0, "tts", "I want a refund", 0.5, 2.0))
        self.record.transcripts.append(Transcript(2.1, "I want a refund", is_final=True))
        self.limits = dict(call_type.limits) if call_type else {}
        self.caller = None
        self.timings = {}
        self.closed = False
        self._ttfa_s = ttfa_s

    async def aclose(self):
        if not self.closed:
            self.closed = True
            self.record.heard.append(HeardSegment(2.0 + self._ttfa_s, 4.0))


def _register(request, call):
    request.node.stash.setdefault(CALL_KEY, []).append(call)
    request.node.stash[LOOP_KEY] = asyncio.get_running_loop()


@pytest_asyncio.fixture
async def stand_in_call(request, livekit_call_type):
    # like livekit_call: open for the whole test, hung up at teardown
    call = StandInCall(livekit_call_type, request.node.callspec.params.get("ttfa", 0.4)
                       if hasattr(request.node, "callspec") else 0.4)
    _register(request, call)
    yield call
    await call.aclose()


@pytest.fixture
def stand_in_factory(request, livekit_call_type):
    # like make_livekit_call: the block hangs up, then the plugin checks the call
    @contextlib.asynccontextmanager
    async def factory(ttfa_s):
        call = StandInCall(livekit_call_type, ttfa_s)
        _register(request, call)
        try:
            yield call
        finally:
            await call.aclose()
        call_ended(request.node, call)
    return factory


@pytest_asyncio.fixture
async def call_in_setup(stand_in_factory):
    # a call that ends outside the test body
    async with stand_in_factory(1.84) as call:
        pass
    return call


@pytest.fixture
def call_without_loop(request, livekit_call_type):
    # a call the plugin has no event loop for (it cannot hang up when the body returns)
    call = StandInCall(livekit_call_type, 1.84)
    asyncio.run(call.aclose())
    request.node.stash.setdefault(CALL_KEY, []).append(call)
    return call
"""

TESTS = """
import pytest

@pytest.mark.livekit(call_type="refund")
@pytest.mark.parametrize("ttfa", [0.4, 1.84], ids=["fast", "slow"])
async def test_call(stand_in_call, ttfa):
    pass
"""


def _suite(pytester: pytest.Pytester, tests: str = TESTS, pyproject: str = PYPROJECT) -> None:
    pytester.makepyprojecttoml(pyproject)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_limited_calls=tests)


def _traces(pytester: pytest.Pytester) -> dict[str, dict[str, object]]:
    lines = (pytester.path / ".livekit" / "calls.jsonl").read_text().splitlines()
    return {json.loads(line)["test"]["nodeid"].split("::")[-1]: json.loads(line)["test"] for line in lines}


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_a_breach_fails_the_test_with_measured_and_allowed(
    pytester: pytest.Pytester, xdist: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the short summary line whole
    _suite(pytester)
    result = pytester.runpytest_subprocess("-rf", *xdist)
    result.assert_outcomes(passed=1, failed=1)  # a failure, not an error at teardown
    result.stdout.fnmatch_lines([
        "LimitBreachError: time-to-first-audio 1840 ms > 1500 ms allowed (ttfa_ms_max, turn 1)",
        '(call type "refund", turn 1)',
        "*recording: *",
        "Hint: *--livekit-limits=warn*",
    ])
    result.stdout.fnmatch_lines([
        "FAILED test_limited_calls.py::test_call[[]slow[]] - LimitBreachError: time-to-first-audio 1840 ms > 1500 ms "
        "allowed (ttfa_ms_max, turn 1)",
    ])
    traces = _traces(pytester)
    assert traces["test_call[fast]"]["outcome"] == "passed"
    slow = traces["test_call[slow]"]
    assert (slow["outcome"], slow["phase"]) == ("failed", "call")
    assert "time-to-first-audio 1840 ms > 1500 ms allowed" in str(slow["message"])


def test_warn_mode_passes_with_a_warning_and_the_failure_rate_slo_still_counts_it(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    result = pytester.runpytest_subprocess("--livekit-limits=warn")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([
        "*warnings summary*",
        "test_limited_calls.py::test_call[[]slow[]]",
        "*LimitBreachWarning: time-to-first-audio 1840 ms > 1500 ms*",
    ])
    # the tests passed, the run did not: a breached call is a failed call for the SLO and the table
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "refund * 2 *  1  *",
        "SLO breach: failure_rate_max: 0.5 > 0 allowed (refund)",
        "*test_call?slow? ?refund? passed: ttfa 1840ms * · breached ttfa_ms_max",
    ])
    assert _traces(pytester)["test_call[slow]"]["outcome"] == "passed"


def test_mode_from_ini_is_in_the_header_and_errors_list_valid_values(pytester: pytest.Pytester) -> None:
    _suite(pytester, pyproject=PYPROJECT.replace('asyncio_mode = "auto"', 'asyncio_mode = "auto"\nlivekit_limits = "warn"'))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["livekit: server=* · limits=warn (ini) · artifacts=*"])
    result = pytester.runpytest_subprocess("--livekit-limits=fail")  # the CLI wins
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["livekit: server=* · limits=fail (cli) · artifacts=*"])
    _suite(pytester, pyproject=PYPROJECT.replace('asyncio_mode = "auto"', 'asyncio_mode = "auto"\nlivekit_limits = "loose"'))
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*livekit_limits = 'loose' is not valid. Valid values: fail, warn.*"])


def test_a_warning_made_an_error_fails_the_test(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    result = pytester.runpytest_subprocess(
        "--livekit-limits=warn", "-W", "error::pytest_livekit.errors.LimitBreachWarning"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LimitBreachWarning: time-to-first-audio 1840 ms > 1500 ms allowed*"])


def test_a_failing_test_keeps_its_own_failure_and_xfail_stays_xfail(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund")
@pytest.mark.parametrize("ttfa", [1.84])
async def test_own_failure(stand_in_call, ttfa):
    assert 1 + 1 == 3, "the test's own failure"

@pytest.mark.xfail(reason="known slow agent", strict=True)
@pytest.mark.livekit(call_type="refund")
@pytest.mark.parametrize("ttfa", [1.84])
async def test_xfail_by_its_limit(stand_in_call, ttfa):
    pass

@pytest.mark.xfail(reason="known bug")
@pytest.mark.livekit(call_type="refund")
@pytest.mark.parametrize("ttfa", [1.84])
async def test_xfail_by_its_own_failure(stand_in_call, ttfa):
    assert False
""")
    result = pytester.runpytest_subprocess("-rfxE")
    result.assert_outcomes(failed=1, xfailed=2)
    result.stdout.fnmatch_lines(["*AssertionError: the test's own failure*"])
    result.stdout.no_fnmatch_line("*LimitBreach*")
    result.stdout.no_fnmatch_line("*ERROR*")
    traces = _traces(pytester)
    assert traces["test_own_failure[1.84]"]["outcome"] == "failed"
    assert "the test's own failure" in str(traces["test_own_failure[1.84]"]["message"])
    assert traces["test_xfail_by_its_limit[1.84]"]["outcome"] == "xfailed"


def test_marker_chooses_the_mode_and_overrides_the_limit(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund", limits="warn")
@pytest.mark.parametrize("ttfa", [1.84])
async def test_warned(stand_in_call, ttfa):
    pass

@pytest.mark.livekit(call_type="refund", ttfa_ms_max=2000)
@pytest.mark.parametrize("ttfa", [1.84])
async def test_allowed_more(stand_in_call, ttfa):
    pass
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["test_limited_calls.py::test_warned[[]1.84[]]", "*LimitBreachWarning*1840 ms > 1500 ms*"])


def test_bad_marker_mode_and_unknown_keys_are_usage_errors(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund", limits={"ttfa_ms_max": 2000})
async def test_bad_mode(stand_in_call):
    pass

@pytest.mark.livekit(call_type="refund", limit="warn")
async def test_unknown_key(stand_in_call):
    pass
""")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_bad_mode: limits={'ttfa_ms_max': 2000} is not valid. Valid values: 'fail', 'warn'.",
        "Hint: override one limit with its own key, e.g. @pytest.mark.livekit(ttfa_ms_max=2000).",
        "*test_unknown_key: 'limit' is not a valid @pytest.mark.livekit argument. Valid keys: *limits*",
    ])


def test_a_factory_call_is_checked_where_its_block_ends(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund")
async def test_two_calls(stand_in_factory):
    async with stand_in_factory(0.4):
        pass
    async with stand_in_factory(1.84):
        pass
    raise RuntimeError("not reached: the second call's breach fails the test at its block")

@pytest.mark.livekit(call_type="refund")
async def test_breach_handled_by_the_test(stand_in_factory):
    with pytest.raises(AssertionError, match="1840 ms > 1500 ms"):
        async with stand_in_factory(1.84):
            pass
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_two_calls*", "LimitBreachError: *1840 ms > 1500 ms allowed*"])
    result.stdout.no_fnmatch_line("*not reached*")
    # the breach the test expected (and passed on) is still a failed call for the SLO
    result.stdout.fnmatch_lines([
        "refund * 3 *  3  *",
        "test_limited_calls.py::test_breach_handled_by_the_test ?refund? passed: * · breached ttfa_ms_max",
    ])


def test_only_calls_with_limits_are_hung_up_when_the_body_returns(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

async def test_no_call_type(stand_in_call, request):
    def still_open():  # runs before the call fixture's teardown
        assert not stand_in_call.closed, "hung up early"
    request.addfinalizer(still_open)

@pytest.mark.livekit(call_type="refund")
async def test_with_limits(stand_in_call, request):
    def hung_up():
        assert stand_in_call.closed, "not hung up"
    request.addfinalizer(hung_up)
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)


def test_a_call_ended_outside_the_body_is_checked_when_the_body_returns(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund")
async def test_setup_call(call_in_setup):
    pass
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["LimitBreachError: time-to-first-audio 1840 ms*"])


def test_without_an_event_loop_the_check_falls_back_to_teardown(pytester: pytest.Pytester) -> None:
    _suite(pytester, tests="""
import pytest

@pytest.mark.livekit(call_type="refund")
def test_no_loop(call_without_loop):
    pass
""")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)  # a breach never passes silently
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_no_loop*", "LimitBreachError: time-to-first-audio 1840 ms*"])
    assert _traces(pytester)["test_no_loop"]["outcome"] == "error"
    result = pytester.runpytest_subprocess("--livekit-limits=warn")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*LimitBreachWarning: time-to-first-audio 1840 ms*"])
    result = pytester.runpytest_subprocess("--livekit-limits=warn", "-W", "error::pytest_livekit.errors.LimitBreachWarning")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["LimitBreachWarning: time-to-first-audio 1840 ms*"])


# -- limits of the wrong sign or type: usage errors before anything runs ---------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [("-5", "ttfa_ms_max = -5 must be >= 0."), ('"fast"', "ttfa_ms_max = 'fast' is not a number.")],
    ids=["negative", "string"],
)
def test_a_bad_limit_in_pyproject_stops_the_session_naming_the_limit(
    pytester: pytest.Pytester, value: str, expected: str
) -> None:
    pytester.makepyprojecttoml(PYPROJECT.replace("ttfa_ms_max = 1500", f"ttfa_ms_max = {value}"))
    pytester.makepyfile(test_limited_calls="def test_plain():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: [[]tool.pytest_livekit.call_types.refund[]]: {expected}"])
    assert "passed" not in result.stdout.str()


def test_a_bad_limit_in_a_marker_is_a_usage_error_at_collection_naming_test_and_limit(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(test_limited_calls="""
import pytest

@pytest.mark.livekit(call_type="refund", ttfa_ms_max=-1)
def test_negative(make_livekit_call):
    pass

@pytest.mark.livekit(call_type="refund", wer_max="0.2")
def test_string(make_livekit_call):
    pass

@pytest.mark.livekit(call_type="refund", ttfa_ms_max=True)
def test_bool(make_livekit_call):
    pass

@pytest.mark.livekit(call_type="refund", ttfa_ms_max=2000)
def test_fine(make_livekit_call):
    pass
""")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-livekit:",
        "test_limited_calls.py::test_negative: @pytest.mark.livekit: ttfa_ms_max = -1 must be >= 0.",
        "test_limited_calls.py::test_string: @pytest.mark.livekit: wer_max = '0.2' is not a number.",
        "test_limited_calls.py::test_bool: @pytest.mark.livekit: ttfa_ms_max = True is not a number.",
    ])
    assert "test_fine" not in result.stderr.str()
