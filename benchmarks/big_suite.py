"""A suite that outgrows one machine, simulated on this one: calls per hour, shards and merge.

The suite is the example suite's table of 20 varied verified-refund calls
(``example_suite/test_scenarios.py::test_refund_variations``: names, order numbers, openings that
change the order of the agent's questions, clean and noisy cohorts), each a real call through a
real livekit-server with the example agent in-process.

1. **One machine.** The 20 calls in one pytest run with ``-n CONCURRENCY`` (default 2, the
   concurrency a 2-core runner holds; see benchmarks/concurrency.py): wall time, calls per hour,
   and from it the machines needed for 1,000 such calls in 30 minutes.
2. **Shards.** The same calls split into 1 (the run above), 2 and 4 shards (rows dealt
   round-robin: shard k of n takes rows k, k+n, ...), run one after the other here (as CI machines would run them side by
   side), each into its own ``.livekit`` folder; then ``python -m pytest_livekit merge`` over the
   shards: merge time, and the merged run table next to the unsplit run's (same calls, different
   runs: completion and tool accuracy must be equal, TTFA differs by run-to-run noise). Merging is
   also checked exact: the merged table equals :class:`RunSummary` over the shards' traces taken as
   one run, line for line.

Run from the repository root inside the test network namespace:

    scripts/netns-run python3 benchmarks/big_suite.py [--concurrency 2] [--shards 1,2,4]

Figures are this machine's, measured in this run, with whatever else runs beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_grid

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "example_suite"
TEST = "test_scenarios.py::test_refund_variations"
ROWS = 20


def run_pytest(folder: Path, rows: list[int], concurrency: int) -> tuple[float, int, str]:
    """Run the given table rows into ``folder`` (its ``calls`` artifacts, ``calls.jsonl``); returns
    (wall seconds, exit code, the run table's text).
    """
    selection = " or ".join(f"row{r:02d}" for r in rows)
    args = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", TEST, "-k", selection,
        f"--livekit-artifacts={folder / 'calls'}", f"--livekit-report={folder / 'report.html'}",
    ]
    if concurrency > 1:
        args += ["-n", str(concurrency)]
    t0 = time.monotonic()
    proc = subprocess.run(args, cwd=SUITE, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.monotonic() - t0
    return wall, proc.returncode, proc.stdout


def table_of(stdout: str) -> list[str]:
    """The call-type and cohort tables of a run's summary."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if "livekit calls" in line) + 1
    except StopIteration:
        return []
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line.rstrip())
    return out


def main() -> int:
    """Run the benchmark and print its tables; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--shards", default="1,2,4")
    args = parser.parse_args()
    shard_counts = [int(n) for n in args.shards.split(",")]
    sys.path.insert(0, str(ROOT))
    from pytest_livekit.outputs.run_summary import RunSummary

    with tempfile.TemporaryDirectory(prefix="big-suite-") as tmp:
        base = Path(tmp)
        # 1. one machine, all calls
        wall, code, out = run_pytest(base / "one", list(range(1, ROWS + 1)), args.concurrency)
        unsplit = table_of(out)
        per_hour = ROWS / wall * 3600
        machines = math.ceil(1000 / (per_hour / 2))
        rows = [[
            f"{ROWS} calls, -n {args.concurrency}", f"{wall:.0f}", f"{wall / ROWS:.1f}", f"{per_hour:.0f}",
            str(machines), "ok" if code == 0 else f"exit {code}",
        ]]
        print_grid(["run", "wall s", "s/call", "calls/hour", "machines for 1000 in 30 min", "result"], rows,
                   title="One 2-core machine")
        print()
        print("unsplit run table:")
        print("\n".join(unsplit))
        print()

        # 2. shards, one after the other, then merge
        grid = []
        for n in shard_counts:
            folders = []
            walls = []
            codes = []
            for k in range(n):
                if n == 1:  # one shard is the unsplit run above
                    walls.append(wall)
                    codes.append(code)
                    folders.append(base / "one")
                    continue
                folder = base / f"s{n}" / f"shard{k + 1}"
                w, c, _ = run_pytest(folder, [r for r in range(1, ROWS + 1) if (r - 1) % n == k], args.concurrency)
                walls.append(w)
                codes.append(c)
                folders.append(folder)
            merged_dir = base / f"s{n}" / "merged"
            t0 = time.monotonic()
            merge = subprocess.run(
                [sys.executable, "-m", "pytest_livekit", "merge", *map(str, folders), "--out", str(merged_dir),
                 "--pyproject", str(SUITE / "pyproject.toml")],
                cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
            )
            merge_s = time.monotonic() - t0
            merged = table_of(merge.stdout)
            traces = [json.loads(line) for f in folders for line in (f / "calls.jsonl").read_text().splitlines()]
            one = [line.text.rstrip() for line in RunSummary(traces).table_lines()][1:1 + len(merged)]
            exact = merged == one
            grid.append([
                str(n), f"{max(walls):.0f}", f"{sum(walls):.0f}", f"{merge_s:.2f}", str(len(traces)),
                "yes" if exact else "NO", "ok" if not any(codes) and merge.returncode == 0 else f"exit {codes} / {merge.returncode}",
            ])
            print(f"merged table, {n} shard(s):")
            print("\n".join(merged))
            print()
        print_grid(
            ["shards", "slowest shard s", "all shards s", "merge s", "calls merged", "merge == one summary", "result"],
            grid, title="Shards run one after the other here, then merged",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
