"""Shared fixtures for the plugin's own tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_AGENT = "example_suite.support_agent:server"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need a livekit-server binary, Docker tests a Docker engine with the
    image: skip them locally when missing, but never in CI, where that is a failure (.ci/run
    installs and starts both)."""
    from pytest_livekit.errors import ServerBinaryNotFoundError
    from pytest_livekit.server.binary import find_server_binary
    from pytest_livekit.server.docker import DEFAULT_IMAGE, docker_image_available

    missing: dict[str, str] = {}
    try:
        find_server_binary(config.getoption("livekit_server_binary"), root=ROOT)
    except ServerBinaryNotFoundError:
        missing["integration"] = "no livekit-server binary (python -m pytest_livekit install-server)"
    if any(item.get_closest_marker("docker") for item in items) and not docker_image_available(DEFAULT_IMAGE):
        missing["docker"] = f"no Docker engine with {DEFAULT_IMAGE} (run under scripts/with-dockerd)"
    if missing and os.environ.get("CI"):
        raise pytest.UsageError("CI must run every test: " + "; ".join(missing.values()))
    for item in items:
        for marker, reason in missing.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


#: Where the tests that place real calls live (marker ``integration``).
REAL_CALL_TESTS = ("tests/integration/", "tests/test_example_suite.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n 2 --dist loadgroup`` (scripts/test): the tests that place real calls form one group,
    so they run one at a time and in order on one worker, as their timings and leak checks were
    written for, while the other worker runs the unit and plugin tests beside them.

    The group is chosen by path here, on the controller: pytest 9.2 keeps a node's id in
    ``Node._id``, so xdist 3.8's ``xdist_group`` marks (it appends the group to ``Node._nodeid``)
    group nothing (pytest-xdist issue #1386).
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class RealCallsTogether(LoadGroupScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return "real-calls" if nodeid.startswith(REAL_CALL_TESTS) else super()._split_scope(nodeid)

    return RealCallsTogether(config, log)


@pytest.fixture
def server_binary() -> Path:
    """Path of the livekit-server binary used by the tests."""
    from pytest_livekit.server.binary import find_server_binary

    return find_server_binary(root=ROOT)


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocesses)."""
    return sys.executable
