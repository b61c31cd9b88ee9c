"""The two-column table every benchmark prints (measurement, value)."""

from __future__ import annotations


def print_table(rows: list[tuple[str, str]]) -> None:
    """Print ``(measurement, value)`` rows under a header, the first column aligned."""
    width = max(len(label) for label, _ in rows)
    print(f"{'measurement':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def print_grid(headers: list[str], rows: list[list[str]], *, title: str | None = None) -> None:
    """Print a table with one column per header: the first column left-aligned, the rest
    right-aligned (numbers), each as wide as its widest cell.
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    if title:
        print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
