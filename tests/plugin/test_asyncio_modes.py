"""pytest-asyncio modes: livekit tests run in strict mode (pytest-asyncio's default) and in auto
mode, with no ``asyncio_mode`` setting needed; other async tests are left to pytest-asyncio.

pytest-asyncio 1.x turns a test into one of its items while collecting it (``PytestAsyncioFunction``)
if it has an ``asyncio`` mark by then; in strict mode an async test without one fails with "async
def functions are not natively supported". The collection checks below look at exactly that (the
item's class and its ``asyncio`` marks). One real call proves the README's first test passes in a
project without any pytest-asyncio setting: ``tests/integration/test_readme_asyncio.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pytest_asyncio import is_async_test

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"

CALL_TYPES = """
[tool.pytest_livekit.call_types.refund]
[tool.pytest_livekit.call_types.booking]
"""

# Every shape of test the plugin must (or must not) mark. None of them runs here: collection only.
TESTS = """
import pytest
from hypothesis import given, strategies as st


@pytest.mark.livekit(call_type="refund")
async def test_readme(livekit_call):
    pass


@pytest.mark.livekit(call_types=["refund", "booking"])
@pytest.mark.parametrize("order", ["1234", "5678"])
async def test_by_call_type(livekit_call, order):
    pass


class TestCalls:
    async def test_factory(self, make_livekit_call):
        pass

    @pytest.mark.usefixtures("livekit_call")
    async def test_usefixtures(self):
        pass


@pytest.fixture
def refund_call(make_livekit_call):
    return make_livekit_call(call_type="refund")


async def test_through_own_fixture(refund_call):
    pass


@pytest.mark.livekit(call_type="refund")
async def test_marker_only(livekit_call_type):
    pass


@given(n=st.integers())
async def test_hypothesis(make_livekit_call, n):
    pass


@pytest.mark.asyncio(loop_scope="function")
async def test_user_marked(livekit_call):
    pass


@pytest.mark.asyncio(loop_scope="module")
async def test_user_module_loop(livekit_call):
    pass


@pytest.mark.asyncio(loop_scope="class")
class TestUserMarkedClass:
    async def test_in_class(self, livekit_call):
        pass


async def test_plain():
    pass


def test_sync(livekit_call_type):
    pass
"""

OURS = [{"loop_scope": "function"}]
"""The ``asyncio`` marks of a test the plugin marked: exactly one, function loop scope."""

EXPECTED = {
    "test_readme": OURS,
    "test_by_call_type[refund-1234]": OURS,
    "test_by_call_type[refund-5678]": OURS,
    "test_by_call_type[booking-1234]": OURS,
    "test_by_call_type[booking-5678]": OURS,
    "test_factory": OURS,
    "test_usefixtures": OURS,
    "test_through_own_fixture": OURS,
    "test_marker_only": OURS,
    "test_hypothesis": OURS,
    # the user's mark stays the only one, with its loop scope
    "test_user_marked": [{"loop_scope": "function"}],
    "test_user_module_loop": [{"loop_scope": "module"}],
    "test_in_class": [{"loop_scope": "class"}],
}


def _collected(pytester: pytest.Pytester, *args: str) -> dict[str, tuple[bool, list[Mapping[str, Any]]]]:
    """Test name -> (is it a pytest-asyncio item, the kwargs of each of its ``asyncio`` marks)."""
    items, _ = pytester.inline_genitems(*args)
    return {
        item.name: (is_async_test(item), [m.kwargs for m in item.iter_markers("asyncio")]) for item in items
    }


@pytest.mark.parametrize(
    ("ini", "args"),
    [
        pytest.param("", (), id="no-setting"),
        pytest.param('asyncio_mode = "strict"', (), id="strict-ini"),
        pytest.param('asyncio_mode = "auto"', ("--asyncio-mode=strict",), id="strict-option"),
    ],
)
def test_strict_mode_makes_livekit_tests_asyncio_tests(
    pytester: pytest.Pytester, ini: str, args: tuple[str, ...]
) -> None:
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\n{ini}\n{CALL_TYPES}")
    pytester.makepyfile(test_shapes=TESTS)
    collected = _collected(pytester, *args)
    expected = {name: (True, marks) for name, marks in EXPECTED.items()}
    # pytest-asyncio's strict mode stays in force for every other async test: not ours to change
    expected |= {"test_plain": (False, []), "test_sync": (False, [])}
    assert collected == expected


def test_auto_mode_gets_the_same_livekit_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(f'[tool.pytest.ini_options]\nasyncio_mode = "auto"\n{CALL_TYPES}')
    pytester.makepyfile(test_shapes=TESTS)
    collected = _collected(pytester)
    expected = {name: (True, marks) for name, marks in EXPECTED.items()}
    # auto mode marks the plain async test itself (a bare mark: the configured loop scope)
    expected |= {"test_plain": (True, [{}]), "test_sync": (False, [])}
    assert collected == expected


def test_loop_factories_apply_to_livekit_tests_in_strict_mode(pytester: pytest.Pytester) -> None:
    # pytest-asyncio parametrizes a test over the hook's loop factories only if the test is
    # marked when its pytest_generate_tests runs, before the items exist.
    pytester.makeconftest(
        """
        import asyncio

        def pytest_asyncio_loop_factories(config, item):
            return {"one": asyncio.new_event_loop, "two": asyncio.new_event_loop}
        """
    )
    pytester.makepyfile(
        """
        async def test_call(livekit_call):
            pass

        async def test_plain():
            pass
        """
    )
    assert sorted(_collected(pytester)) == ["test_call[one]", "test_call[two]", "test_plain"]


def test_plain_async_test_in_strict_mode_is_still_not_run(pytester: pytest.Pytester) -> None:
    # What the issue saw for the README's test, now only for tests that are not livekit tests.
    pytester.makepyfile(
        """
        import pytest

        async def test_plain():
            pass

        @pytest.mark.livekit
        def test_sync():
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ test_plain _*", "async def functions are not natively supported.*"])


# Like the README's first test; the refund call type has limits, so the plugin also hangs up and
# checks the call when the body returns (on the test's own loop). The agent answers in ~1.3 s on a
# busy 2-core machine: 3 s keeps the latency out of what this test is about.
README_TEST = """
import pytest
from pytest_livekit import assert_asr_accuracy, assert_time_to_first_audio, assert_tool_called

@pytest.mark.livekit(call_type="refund")
async def test_refund(livekit_call):
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=3000)
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")
"""

