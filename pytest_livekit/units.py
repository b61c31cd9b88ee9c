"""Seconds to milliseconds, in one place.

Every timing the plugin measures is kept in seconds (the caller's monotonic clock); reports,
traces, baselines, limits and messages show milliseconds. They all convert here, so a figure
reads the same wherever it appears (a trace's 612.3 ms is the report's 612 ms and the failure
message's 612 ms, never 611 in one and 613 in another).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_ms", "ms_to_seconds", "seconds_to_ms", "to_ms"]


def to_ms(seconds: Any, digits: int | None = 1) -> float | None:
    """``seconds`` (s) as milliseconds rounded to ``digits`` decimals (None: not rounded).

    None, booleans, non-numbers, NaN and infinities give None: a missing figure stays missing.

        >>> to_ms(0.61234)
        612.3
        >>> to_ms(0.61234, digits=None)
        612.34
        >>> to_ms(None) is None
        True
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    if not math.isfinite(seconds):
        return None
    ms = float(seconds) * 1000.0
    return ms if digits is None else round(ms, digits)


def format_ms(seconds: Any, missing: str = "—") -> str:
    """``seconds`` (s) as whole milliseconds for people, e.g. ``"612 ms"``; ``missing`` if none.

    >>> format_ms(0.6125)
    '612 ms'
    >>> format_ms(None)
    '—'
    """
    ms = to_ms(seconds, digits=None)
    return missing if ms is None else f"{ms:.0f} ms"


def seconds_to_ms(seconds: float) -> float:
    """``seconds`` (s) as milliseconds, exactly (no rounding; for figures known to be numbers).

    >>> seconds_to_ms(0.25)
    250.0
    """
    return float(seconds) * 1000.0


def ms_to_seconds(ms: float) -> float:
    """``ms`` (milliseconds) as seconds, exactly.

    >>> ms_to_seconds(250)
    0.25
    """
    return float(ms) / 1000.0
