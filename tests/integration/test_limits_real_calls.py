"""Integration: per-call limits enforced on real calls (real livekit-server, the example agent).

The plugin tests (tests/plugin/test_limits.py) cover the modes, messages and SLO counting with
stand-in calls; this proves the real hang-up: ``livekit_call``'s call is ended on the test's own
event loop when the body returns (before the fixture's teardown), its whole recording and
hang-up stats are in the metrics the limits are checked on, and the test fails in its call phase.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"

PYPROJECT = f"""
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
asyncio_default_test_loop_scope = "function"
livekit_agent = "{EXAMPLE_AGENT}"

# 1 ms cannot be met by any real reply
[tool.pytest_livekit.call_types.escalation]
ttfa_ms_max = 1
expected_tools = ["transfer_to_human"]
"""

CALLS = """
import pytest

HUMAN = "Can I speak to a human please"

@pytest.mark.livekit(call_type="escalation")
async def test_fixture_call(livekit_call, request):
    # runs before the fixture's teardown; the call notes its teardown time once it has hung up
    request.addfinalizer(lambda: hung_up.append("teardown" in livekit_call.timings))
    await livekit_call.say(HUMAN)
    await livekit_call.wait_for_agent_reply()

hung_up = []

def test_the_fixture_call_was_hung_up_before_its_teardown():
    assert hung_up == [True]

@pytest.mark.livekit(call_type="escalation")
async def test_factory_call(make_livekit_call):
    async with make_livekit_call() as call:
        await call.say(HUMAN)
        await call.wait_for_agent_reply()
    raise RuntimeError("not reached: the breach fails the test where the call ended")

@pytest.mark.livekit(call_type="escalation", limits="warn")
async def test_warned(livekit_call):
    await livekit_call.say(HUMAN)
    await livekit_call.wait_for_agent_reply()
"""


def test_real_calls_fail_on_their_limits_in_the_call_phase(
    pytester: pytest.Pytester, server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(test_limit_calls=CALLS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--livekit-server-binary={server_binary}", timeout=600
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=2, warnings=1)  # and no error: nothing fails at teardown
    result.stdout.fnmatch_lines([
        "*_ test_fixture_call _*",
        "LimitBreachError: time-to-first-audio * ms > 1 ms allowed (ttfa_ms_max, turn 1)",
    ])
    result.stdout.fnmatch_lines(["*_ test_factory_call _*", "LimitBreachError: time-to-first-audio *> 1 ms*"])
    assert "not reached" not in out
    result.stdout.fnmatch_lines([
        "*test_warned*",
        "*LimitBreachWarning: time-to-first-audio * ms > 1 ms allowed (ttfa_ms_max, turn 1)",
        '*(call type "escalation") recording: *test_warned/call.wav',
    ])
    traces = {
        json.loads(line)["test"]["nodeid"].split("::")[-1]: json.loads(line)
        for line in (pytester.path / ".livekit" / "calls.jsonl").read_text().splitlines()
    }
    fixture_call = traces["test_fixture_call"]
    assert (fixture_call["test"]["outcome"], fixture_call["test"]["phase"]) == ("failed", "call")
    assert fixture_call["breaches"] and fixture_call["breaches"][0].startswith("ttfa_ms_max: ")
    assert fixture_call["rtc"]["packets_received"] > 0  # hang-up stats: measured on the ended call
    assert traces["test_warned"]["test"]["outcome"] == "passed" and traces["test_warned"]["breaches"]
    result.stdout.fnmatch_lines(["escalation * 3 *  3  *"])  # the warned call counts as failed
