"""Shared fixtures for the plugin's own tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_AGENT = "example_suite.support_agent:server"


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need a livekit-server binary, Docker tests a Docker engine with the
    image: skip them locally when missing, but never in CI, where that is a failure (.ci/run
    installs and starts both). Integration tests share one xdist group (see below)."""
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
        if item.get_closest_marker("integration"):
            # Under `-n 2 --dist loadgroup` (scripts/test) the real calls run one at a time on
            # one xdist worker, in order, as their timings and leak checks were written for; the
            # other worker runs the unit and plugin tests beside them.
            item.add_marker(pytest.mark.xdist_group("livekit-integration"))


@pytest.fixture
def server_binary() -> Path:
    """Path of the livekit-server binary used by the tests."""
    from pytest_livekit.server.binary import find_server_binary

    return find_server_binary(root=ROOT)


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocesses)."""
    return sys.executable
