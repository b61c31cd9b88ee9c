"""One seconds-to-milliseconds conversion for every figure the plugin shows."""

from __future__ import annotations

import math

import pytest

from pytest_livekit.units import format_ms, to_ms


@pytest.mark.parametrize(
    ("seconds", "digits", "expected"),
    [(0.61234, 1, 612.3), (0.61234, None, 612.34), (1, 0, 1000.0), (0.0, 1, 0.0), (-0.0125, 1, -12.5)],
)
def test_to_ms(seconds: float, digits: int | None, expected: float) -> None:
    assert to_ms(seconds, digits) == pytest.approx(expected)


@pytest.mark.parametrize("missing", [None, True, "0.5", math.nan, math.inf, [0.5]])
def test_a_missing_figure_stays_missing(missing: object) -> None:
    assert to_ms(missing) is None
    assert format_ms(missing) == "—"


def test_format_ms_is_whole_milliseconds() -> None:
    assert format_ms(0.6126) == "613 ms"
    assert format_ms(0.6124, missing="n/a") == "612 ms"
