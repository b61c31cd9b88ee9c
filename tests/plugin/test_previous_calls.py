"""Earlier runs' call folders are removed only when a run is about to place its calls, said in the
summary, and kept with --livekit-keep-previous, --collect-only, or a run that stops at collection."""

from __future__ import annotations

from pathlib import Path

import pytest

# The call fixture is overridden: the tests "use a call" without starting a server.
CONFTEST = """
import pytest

@pytest.fixture
def make_livekit_call():
    return None
"""

TESTS = """
def test_uses_a_call(make_livekit_call):
    pass
"""


def _earlier_run(pytester: pytest.Pytester) -> tuple[Path, Path]:
    calls = pytester.path / ".livekit" / "calls"
    old = calls / "test_old.test_call"
    old.mkdir(parents=True)
    (old / "trace.json").write_text("{}")
    mine = calls / "my-notes"  # not ours: never removed
    mine.mkdir()
    (mine / "README.txt").write_text("keep me")
    pytester.makeconftest(CONFTEST)
    return old, mine


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_removed_when_the_run_places_calls_and_said(pytester: pytest.Pytester, xdist: list[str]) -> None:
    old, mine = _earlier_run(pytester)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert not old.exists() and mine.exists()
    result.stdout.fnmatch_lines(["livekit: removed 1 call folder of an earlier run from *calls (keep them with --livekit-keep-previous)"])


@pytest.mark.parametrize(
    "args", [["--livekit-keep-previous"], ["--collect-only"]], ids=["keep-previous", "collect-only"]
)
def test_kept(pytester: pytest.Pytester, args: list[str]) -> None:
    old, _ = _earlier_run(pytester)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert old.exists()
    assert "removed" not in result.stdout.str()


def test_kept_when_the_run_stops_at_collection(pytester: pytest.Pytester) -> None:
    old, _ = _earlier_run(pytester)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(no_such_key=1)
        def test_uses_a_call(make_livekit_call):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert old.exists()


def test_kept_when_no_test_places_a_call(pytester: pytest.Pytester) -> None:
    old, _ = _earlier_run(pytester)
    pytester.makepyfile("def test_plain():\n    pass\n")
    assert pytester.runpytest_subprocess().ret == pytest.ExitCode.OK
    assert old.exists()
