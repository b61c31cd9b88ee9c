"""A test's outcome as its calls' traces record it, from pytest's phase reports.

pytest reports a test in up to three phases; the trace keeps the worst of them (a failed call
phase outranks a passed teardown, an error in setup outranks both) with the failure's own words.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

__all__ = ["SEVERITY", "failure_text", "no_outcome", "phase_outcome"]

#: How bad a phase outcome is: the trace keeps a test's worst.
SEVERITY = {"passed": 0, "skipped": 1, "xfailed": 1, "failed": 2, "timeout": 3, "error": 4}


def no_outcome() -> dict[str, Any]:
    """A test's outcome before any phase reported (what the trace says if nothing went wrong)."""
    return {"outcome": "passed", "phase": "", "message": ""}


def phase_outcome(report: pytest.TestReport, exc: BaseException | None) -> str:
    """``passed``/``failed``/``error``/``timeout``/``skipped``/``xfailed`` for one phase's report."""
    from pytest_livekit.errors import CallTimeoutError

    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if not report.failed:
        return "passed"
    if isinstance(exc, CallTimeoutError) or "Timeout" in type(exc).__name__ or (
        # pytest-timeout's message ("Timeout (>Ns) from pytest-timeout..."): its own, or the
        # plugin's for tests that place calls (pytest_livekit.pytest_run.timeout_guard)
        exc is not None and str(exc).startswith("Timeout")
    ):
        return "timeout"
    return "failed" if report.when == "call" else "error"


def failure_text(report: pytest.TestReport, max_lines: int = 24) -> str:
    """The failure's own words: pytest's ``E`` lines and the location, not the source listing."""
    text = str(report.longrepr) if report.longrepr is not None else ""
    lines = text.splitlines()
    errors = [line[1:] for line in lines if line.startswith("E ")]
    if not errors:
        if len(lines) <= max_lines:
            return "\n".join(lines)
        # our own errors have no "E" lines: keep their head (what broke) and their end (where)
        head = max_lines // 2
        return "\n".join([*lines[:head], "[...]", *lines[-(max_lines - head - 1):]])
    where = lines[-1] if not lines[-1].startswith("E ") else ""
    return (textwrap.dedent("\n".join(errors[:max_lines])) + "\n" + where).strip()
