"""The plugin's ``pytest.StashKey`` objects, in one module every other module may import.

They live apart from ``plugin.py`` so that the fixtures and the glue modules can reach the run's
state without importing the hook module (which imports them: that was an import cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_livekit.config import LivekitSettings
    from pytest_livekit.pytest_run.collector import RunCollector
    from pytest_livekit.session import LivekitSession

__all__ = [
    "AGGREGATE_KEY",
    "CALL_KEY",
    "CHECKED_KEY",
    "CLEARED_KEY",
    "IN_BODY_KEY",
    "LOOP_KEY",
    "OUTCOME_KEY",
    "PROGRESS_KEY",
    "SERVER_KEY",
    "SESSION_KEY",
    "SETTINGS_KEY",
    "WORKER_KEY",
]

# --- on config.stash: the run ---

SETTINGS_KEY: pytest.StashKey[LivekitSettings] = pytest.StashKey()
"""The run's resolved settings (set in ``pytest_configure``; absent under ``--help``)."""
SESSION_KEY: pytest.StashKey[LivekitSession] = pytest.StashKey()
"""The run's :class:`~pytest_livekit.session.LivekitSession` (server, worker pool, calls)."""
SERVER_KEY = pytest.StashKey[Any]()
"""The managed server object (binary or docker mode), for its log tail in failure reports."""
CLEARED_KEY = pytest.StashKey[bool]()
"""True once the earlier runs' call folders were removed (or must not be: a failed collection)."""
PRESTARTED_KEY = pytest.StashKey[bool]()
"""True once the first test that places a call was collected (the session prestarted then)."""
AGGREGATE_KEY: pytest.StashKey[RunCollector] = pytest.StashKey()
"""Collects every call's row and trace of the run (on the xdist controller too)."""

# --- on item.stash: one test (reset for each attempt) ---

CALL_KEY = pytest.StashKey[list[Any]]()
"""The test's calls, in the order they were placed."""
LOOP_KEY = pytest.StashKey[Any]()
"""The event loop the test's calls run on (to hang up a call still open when the body returns)."""
CHECKED_KEY = pytest.StashKey[dict[int, dict[str, Any]]]()
"""``id(call)`` -> its metrics, for the calls whose limits were checked when they ended."""
IN_BODY_KEY = pytest.StashKey[bool]()
"""True while the test function runs (a call whose block ends then is checked then)."""
WORKER_KEY = pytest.StashKey[Any]()
"""The agent worker the test's call ran in (worker mode), for its log tail on failure."""
OUTCOME_KEY = pytest.StashKey[dict[str, Any]]()
"""The test's worst phase outcome so far (what its calls' traces record)."""
PROGRESS_KEY = pytest.StashKey[list[Any]]()
"""The progress lines of the test's calls (erased before pytest writes the result)."""
