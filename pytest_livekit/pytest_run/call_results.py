"""What a test's calls leave behind: the test's outcome noted phase by phase, and each call
finished after its teardown (metrics, ``trace.json``, the keep policy, JUnit properties).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_livekit.pytest_run.keys import CHECKED_KEY, OUTCOME_KEY, SERVER_KEY, SETTINGS_KEY
from pytest_livekit.pytest_run.outcomes import SEVERITY, failure_text, no_outcome, phase_outcome

__all__ = ["finish_test_call", "note_outcome"]


def note_outcome(item: pytest.Item, report: pytest.TestReport, exc: BaseException | None) -> None:
    """Keep the test's worst phase outcome so far (what the trace records)."""
    outcome = phase_outcome(report, exc)
    seen = item.stash.setdefault(OUTCOME_KEY, no_outcome())
    if SEVERITY[outcome] > SEVERITY[seen["outcome"]]:
        seen.update(outcome=outcome, phase=report.when, message=failure_text(report))
    seen["duration_s"] = seen.get("duration_s", 0.0) + float(report.duration)


def finish_test_call(
    item: pytest.Item, report: pytest.TestReport, call: Any, n: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """After the call's teardown (it has hung up): metrics, the trace, JUnit properties, the
    keep policy. Runs for passed, failed, errored and timed-out tests alike.

    Args:
        item: the test.
        report: its teardown report (gets the ``livekit.*`` user properties).
        call: the test's ``n``-th call.
        n: 1 for the test's first call (its properties are ``livekit.*``, later ones
            ``livekit.call<n>.*``).

    Returns:
        ``(summary row, trace)``; the trace is None when the metrics could not be computed.
    """
    from pytest_livekit.outputs.artifacts import finish_call, junit_properties

    settings = item.config.stash.get(SETTINGS_KEY, None)
    recorded = item.stash.setdefault(OUTCOME_KEY, no_outcome())
    outcome = dict(recorded)
    outcome["rootdir"] = str(settings.rootdir if settings is not None else item.config.rootpath)
    server = item.config.stash.get(SERVER_KEY, None)
    secrets = [getattr(server, "api_secret", "")]
    if settings is not None:
        secrets.append(str(settings.api_secret.value or ""))
    try:
        summary, trace = finish_call(
            call,
            nodeid=item.nodeid,
            outcome=outcome,
            keep=settings.keep if settings is not None else "all",
            secrets=secrets,
            metrics=item.stash.get(CHECKED_KEY, {}).get(id(call)),
        )
    except Exception as exc:  # artifacts must never turn a test result into an internal error
        summary = {"call_type": call.record.call_type, "metrics": {}, "tools": [],
                   "artifacts": call.record.artifacts_dir,
                   "error": f"metrics failed: {type(exc).__name__}: {exc}"}
        trace = None
        report.sections.append(("livekit metrics error", summary["error"]))
    summary["outcome_test"] = outcome["outcome"]
    props = junit_properties(summary, trace)
    # a test's second call (make_livekit_call) gets livekit.call2.* names
    report.user_properties.extend((k.replace("livekit.", f"livekit.call{n}.", 1) if n > 1 else k, v) for k, v in props)
    return summary, trace
