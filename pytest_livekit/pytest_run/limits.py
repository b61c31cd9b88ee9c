"""Per-call limits in a pytest run: when a test's calls are checked against their call type's
limits, and what a breach does to the test (``fail`` or ``warn``).

A call is checked once, as soon as it has hung up: at the end of its ``async with
make_livekit_call()`` block if that ends in the test body (the breach fails the test at that
line), else when the body returns (the plugin hangs up ``livekit_call``'s call first), else at
teardown. Its metrics are computed once and kept for its trace.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_livekit.config import marker_options
from pytest_livekit.errors import PytestLivekitError
from pytest_livekit.pytest_run.keys import (
    CALL_KEY,
    CHECKED_KEY,
    IN_BODY_KEY,
    LOOP_KEY,
    OUTCOME_KEY,
    SETTINGS_KEY,
)
from pytest_livekit.pytest_run.outcomes import no_outcome

__all__ = [
    "LIMITS_HINT",
    "call_ended",
    "check_limits",
    "check_open_calls",
    "limit_breaches",
    "limits_at_teardown",
    "limits_mode",
]

LIMITS_HINT = (
    "Hint: the limits are [tool.pytest_livekit.call_types.<type>] in pyproject.toml; override one "
    "for this test with @pytest.mark.livekit(<limit>=...), or report breaches as warnings with "
    "--livekit-limits=warn (or @pytest.mark.livekit(limits=\"warn\"))."
)
"""The last paragraph of a limits failure: where the limits come from and how to relax them."""


def limits_mode(item: pytest.Item) -> str:
    """``fail`` or ``warn``: the marker's ``limits=``, else ``--livekit-limits`` / ``livekit_limits``."""
    settings = item.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return "fail"
    try:
        mode = marker_options(item, settings).limits_mode
    except PytestLivekitError:  # reported at collection
        mode = None
    return str(mode or settings.limits_mode.value)


def limit_breaches(item: pytest.Item, call: Any) -> list[Any]:
    """The call's breaches of its limits; its metrics are computed once (the call has ended) and
    kept for its trace. A call whose metrics cannot be computed has none here: the teardown
    reports that error, as for every call.
    """
    from pytest_livekit.metrics.thresholds import check_call

    checked = item.stash.setdefault(CHECKED_KEY, {})
    if id(call) not in checked:
        from pytest_livekit.outputs.artifacts import ended_call_metrics

        try:
            checked[id(call)] = ended_call_metrics(call)
        except Exception:
            return []
    return check_call(checked[id(call)], call.limits)


def check_limits(item: pytest.Item, calls: list[Any]) -> None:
    """Check ended calls against their limits: a warning per breached call under ``warn``, one
    :class:`~pytest_livekit.errors.LimitBreachError` for all of them under ``fail``.
    """
    from pytest_livekit.assertions import limits_breached_message
    from pytest_livekit.errors import LimitBreachError, LimitBreachWarning

    mode = limits_mode(item)
    failures = []
    for call in calls:
        breaches = limit_breaches(item, call)
        if not breaches:
            continue
        if mode == "warn":  # at the test's own line; -W error::...LimitBreachWarning fails it
            item.warn(LimitBreachWarning(limits_breached_message(call, breaches, timeline=False)))
        else:
            failures.append(limits_breached_message(call, breaches))
    if failures:
        raise LimitBreachError("\n\n".join([*failures, LIMITS_HINT]))


def call_ended(item: pytest.Item, call: Any) -> None:
    """A call's ``async with make_livekit_call()`` block ended without an exception: if that was in
    the test body, check the call's limits now (a breach fails the test at that line).
    """
    if getattr(call, "limits", None) and item.stash.get(IN_BODY_KEY, False):
        check_limits(item, [call])


def check_open_calls(item: pytest.Item) -> None:
    """The test body returned (and passed): hang up its calls with limits that are still open
    (``livekit_call``'s), and check every call with limits not checked yet, so a breach fails the
    test's call phase, not its teardown. Without a usable event loop, teardown checks them.
    """
    checked = item.stash.get(CHECKED_KEY, {})
    calls = [c for c in item.stash.get(CALL_KEY, []) if getattr(c, "limits", None) and id(c) not in checked]
    loop = item.stash.get(LOOP_KEY, None)
    if calls and loop is not None and not loop.is_closed() and not loop.is_running():
        for call in calls:
            loop.run_until_complete(call.aclose())  # the limits need the whole call; idempotent
        check_limits(item, calls)


def limits_at_teardown(item: pytest.Item, report: pytest.TestReport, calls: list[Any]) -> BaseException | None:
    """Calls not checked when the body returned (no event loop to hang them up on, e.g. a sync
    test whose calls ran elsewhere) are checked at teardown, if the test passed so far: a breach
    makes the teardown fail (``fail``, or a warning turned into an error) or warns. A breach
    never passes silently under ``fail``.

    Returns:
        The breach's exception when the teardown report was turned into a failure, else None.
    """
    checked = item.stash.get(CHECKED_KEY, {})
    unchecked = [c for c in calls if getattr(c, "limits", None) and id(c) not in checked]
    if not unchecked or report.failed or item.stash.get(OUTCOME_KEY, no_outcome())["outcome"] != "passed":
        return None
    try:
        check_limits(item, unchecked)
    except (AssertionError, Warning) as exc:
        report.outcome = "failed"
        report.longrepr = f"{type(exc).__name__}: {exc}"
        return exc
    return None
