"""The two-column table every benchmark prints (measurement, value)."""

from __future__ import annotations


def print_table(rows: list[tuple[str, str]]) -> None:
    """Print ``(measurement, value)`` rows under a header, the first column aligned."""
    width = max(len(label) for label, _ in rows)
    print(f"{'measurement':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
