"""An agent module that imports a package the environment lacks fails at collection with one
usage error naming the package, the line, and the pip command (not an INTERNALERROR traceback).
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from livekit.plugins import nonexistent_plugin\nserver = None\n",
            [
                "*importing 'agent_needs' needs 'livekit.plugins.nonexistent_plugin', which is not installed*agent_needs.py:1*",
                "Hint: pip install livekit-plugins-nonexistent-plugin*",
            ],
        ),
        (
            "import crm_client_not_installed\nserver = None\n",
            ["*needs 'crm_client_not_installed', which is not installed*", "Hint: pip install crm_client_not_installed*"],
        ),
    ],
    ids=["livekit-plugin", "other-package"],
)
def test_an_agent_that_imports_a_missing_package(pytester: pytest.Pytester, source: str, expected: list[str]) -> None:
    pytester.makepyfile(agent_needs=source)
    pytester.makeini("[pytest]\nlivekit_agent = agent_needs:server\n")
    pytester.makepyfile(test_uses_agent="async def test_x(livekit_call):\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(expected)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
