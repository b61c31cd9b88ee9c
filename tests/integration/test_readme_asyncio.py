"""The README's first test passes, with a real call, in a project that has no pytest-asyncio
setting at all (the collection-only checks of the asyncio modes are in
``tests/plugin/test_asyncio_modes.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.plugin.test_asyncio_modes import EXAMPLE_AGENT, README_TEST, ROOT

pytestmark = pytest.mark.integration


def test_readme_first_test_passes_without_any_asyncio_setting(
    pytester: pytest.Pytester, server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The project has no pytest-asyncio setting at all (tests/plugin/conftest.py sets one in
    # PYTEST_ADDOPTS for the pytester runs there; none may reach this run).
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyprojecttoml(
        f"""
        [tool.pytest.ini_options]
        livekit_agent = "{EXAMPLE_AGENT}"

        [tool.pytest_livekit.call_types.refund]
        ttfa_ms_max = 3000
        expected_tools = ["lookup_order"]
        """
    )
    pytester.makepyfile(test_refund=README_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--livekit-server-binary={server_binary}", timeout=600
    )
    result.assert_outcomes(passed=1)
    # pytest-asyncio's header (its mode enum prints as Mode.STRICT on Python 3.11+)
    result.stdout.re_match_lines([r"asyncio: mode=(Mode\.STRICT|strict), "])
    result.stdout.fnmatch_lines(["refund * 1 * 1/1 * completed 1"])
