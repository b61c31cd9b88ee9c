"""Argument checks shared by the condition and network specs (and their hypothesis strategies).

One place, so a bad argument gets the same message wherever it is given: ``loss=1.5`` to a
signal condition and ``rate=1.5`` to a network spec both say what the valid range is.
"""

from __future__ import annotations

import math
from collections.abc import Collection

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "format_number"]


def check_number(name: str, value: object, lo: float, hi: float) -> float:
    """Check that ``value`` is a real number (not a bool) within ``[lo, hi]``.

    Args:
        name: Argument name, repeated in the message.
        value: The value to check.
        lo: Smallest valid value.
        hi: Largest valid value.

    Returns:
        The value as a float.

    Raises:
        ValueError: If it is not a finite number in range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number in [{lo:g}, {hi:g}]")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is outside the valid range [{lo:g}, {hi:g}]")
    return float(value)


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """Check that ``value`` is an int (not a bool) within ``[lo, hi]``.

    Args:
        name: Argument name, repeated in the message.
        value: The value to check.
        lo: Smallest valid value.
        hi: Largest valid value.

    Returns:
        The value.

    Raises:
        ValueError: If it is not an int in range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an int in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is outside the valid range [{lo}, {hi}]")
    return value


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """Check that ``value`` is one of ``choices``.

    Args:
        name: Argument name, repeated in the message.
        value: The value to check.
        choices: The valid values.

    Raises:
        ValueError: If it is not one of them.
    """
    if isinstance(value, bool) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not valid; valid values: {valid}")


def check_bool(name: str, value: object) -> None:
    """Check that ``value`` is a bool.

    Args:
        name: Argument name, repeated in the message.
        value: The value to check.

    Raises:
        ValueError: If it is not True or False.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")


def format_number(value: float) -> str:
    """A number for a spec's ``describe()``: no trailing zeros (``0.05``, ``150``)."""
    return f"{value:g}"
