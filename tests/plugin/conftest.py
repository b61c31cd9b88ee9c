"""Fixtures for pytester-based tests."""

from __future__ import annotations

import numpy  # noqa: F401 - see below
import pytest
import scipy.signal  # noqa: F401 - see below (the session's warm-up thread imports it, and numpy.fft with it)

# Inner pytester runs happen in this process and pytester unloads the modules they imported
# afterwards; numpy (a C extension) cannot be imported a second time in one process. Loading it
# here keeps it out of the unload list, whatever order the tests run in; the same for scipy.signal,
# which the plugin imports in a background thread at session start (numpy.fft's C module too).


@pytest.fixture(autouse=True)
def _quiet_inner_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Inner pytester runs have no ini of ours; pin pytest-asyncio's loop scope so it does not
    # warn about its changing default in every inner run. Set after pytester's own setup, which
    # clears PYTEST_ADDOPTS.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-o asyncio_default_fixture_loop_scope=function")
