"""The run's calls, collected from pytest's reports into a
:class:`~pytest_livekit.outputs.run_summary.RunSummary` (on the xdist controller too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_livekit.outputs.run_summary import RunSummary
from pytest_livekit.pytest_run.outcomes import SEVERITY, phase_outcome

if TYPE_CHECKING:
    import pytest

__all__ = ["RunCollector"]


class RunCollector:
    """Collects every call's summary row and trace of the run from the teardown reports
    (registered as a pytest plugin; from xdist workers the rows and traces travel as the
    reports' ``livekit_rows`` and ``livekit_traces`` attributes).
    """

    def __init__(self) -> None:
        self.summary = RunSummary(rows=[])
        """The run's calls, SLO breaches, files written and notes."""
        self._worst: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each call's row and trace at its teardown report (on the xdist controller for
        worker reports: the row and the trace travel with the report).
        """
        outcome = phase_outcome(report, None)  # the exception stays on the worker: no "timeout"
        previous = self._worst.get(report.nodeid, "passed")
        if SEVERITY[outcome] > SEVERITY[previous]:
            self._worst[report.nodeid] = outcome
        if report.when == "teardown":
            self.add(report, self._worst.pop(report.nodeid, "passed"))

    def add(self, report: pytest.TestReport, outcome: str) -> None:
        """Take the livekit rows (and traces) of a teardown report, if it has them."""
        for row in getattr(report, "livekit_rows", None) or []:
            self.summary.add(report.nodeid, outcome, row, None)
        self.summary.traces += [dict(t) for t in getattr(report, "livekit_traces", None) or [] if t]
