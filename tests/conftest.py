"""Shared fixtures for the plugin's own tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_AGENT = "example_suite.support_agent:server"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need a livekit-server binary: skip them locally when there is none,
    but never in CI, where a missing server is a failure (.ci/run installs one)."""
    from pytest_livekit.errors import ServerBinaryNotFoundError
    from pytest_livekit.server import find_server_binary

    try:
        find_server_binary(config.getoption("livekit_server_binary"), root=ROOT)
        return
    except ServerBinaryNotFoundError as exc:
        if os.environ.get("CI"):
            raise pytest.UsageError(f"CI needs a livekit-server binary: {exc}") from None
        reason = "no livekit-server binary (python -m pytest_livekit install-server)"
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def server_binary() -> Path:
    """Path of the livekit-server binary used by the tests."""
    from pytest_livekit.server import find_server_binary

    return find_server_binary(root=ROOT)


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocesses)."""
    return sys.executable
