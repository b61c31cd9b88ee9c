"""Benchmark the HTML report: build time, file size and Chromium render time for 50 real calls.

Takes the traces of real call folders (``<artifacts>/<test>/trace.json``, or the session's
``calls.jsonl`` next to the artifacts folder), repeats them under new node ids until there are 50
calls (each copy reads and encodes its recording again, as a real run would), writes the report,
and opens it in headless Chromium with no network. Run inside the test network namespace:

    scripts/netns-run python benchmarks/report_render.py [example_suite/.livekit/calls] [--calls 50]

Prints one table. All numbers are measured in this one run on this machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _table import print_table  # noqa: E402  (benchmarks/ is sys.path[0])

from pytest_livekit.outputs.artifacts import read_session_jsonl  # noqa: E402
from pytest_livekit.outputs.report import write_report  # noqa: E402
from pytest_livekit.outputs.trace import TRACE_FILE, load_trace  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-features=MediaRouter,OptimizationHints", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-color-profile=srgb", "--window-size=1400,2400",
]


def real_traces(artifacts: Path) -> list[dict[str, Any]]:
    """Traces of the call folders under ``artifacts`` (their folder set to where they are now)."""
    out = []
    for folder in sorted(p for p in artifacts.iterdir() if (p / TRACE_FILE).is_file()):
        trace = load_trace(folder)
        trace["artifacts"]["folder"] = str(folder)
        out.append(trace)
    session = artifacts.parent / "calls.jsonl"
    if not out and session.is_file():
        for trace in read_session_jsonl(session):
            folder = artifacts / Path(str(trace["artifacts"].get("folder") or "")).name
            trace["artifacts"]["folder"] = str(folder)
            out.append(trace)
    return out


def replicate(traces: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` traces: the real ones, then copies renamed ``<nodeid>#<k>`` (same recordings)."""
    out = []
    for i in range(n):
        trace = copy.deepcopy(traces[i % len(traces)])
        k = i // len(traces)
        if k:
            trace["test"]["nodeid"] = f"{trace['test']['nodeid']}#{k + 1}"
            trace["call"]["call_id"] = f"{trace['call']['call_id']}-{k + 1}"
        out.append(trace)
    return out


def folder_mb(folder: Path) -> float:
    """Size of the files in a call folder, MB."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def chromium_dump(binary: str, url: str, profile: Path) -> tuple[float, str]:
    """Wall seconds of one headless ``--dump-dom`` run (start, load, layout, script, exit) and the DOM."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=300, check=True, env={**os.environ, "HOME": str(profile)},
    )
    return time.perf_counter() - t0, proc.stdout


def main() -> None:
    """Build the report, open it in Chromium, print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("artifacts", nargs="?", type=Path, default=ROOT / "example_suite" / ".livekit" / "calls")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="report file (default: a new temp folder)")
    args = parser.parse_args()

    traces = real_traces(args.artifacts)
    if not traces:
        sys.exit(f"no call traces under {args.artifacts} (run the example suite first: scripts/example)")
    calls = replicate(traces, args.calls)
    out = args.out or Path(tempfile.mkdtemp(prefix="report-bench-")) / "report.html"
    builds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        write_report(out, calls)
        builds.append(time.perf_counter() - t0)
    size = out.stat().st_size
    folders = [Path(t["artifacts"]["folder"]) for t in traces]
    rows: list[tuple[str, str]] = [
        ("calls in the report", f"{len(calls)} ({len(traces)} real traces repeated; "
                                f"{sum(t['test']['outcome'] != 'passed' for t in calls)} not passed)"),
        (f"report build time (write_report), median of {args.repeat}",
         f"{statistics.median(builds):.2f} s (min {min(builds):.2f}, max {max(builds):.2f}; {os.cpu_count()} CPUs)"),
        ("report file size", f"{size / 1e6:.2f} MB ({size / len(calls) / 1e3:.0f} kB per call)"),
        ("per-call artifact folder (median)", f"{statistics.median(map(folder_mb, folders)):.2f} MB"),
    ]
    binary = shutil.which("chromium")
    if binary is None:
        rows.append(("Chromium load + render", "skipped: no chromium (apt-get install chromium)"))
    else:
        for label, url in (("as opened: failed calls expanded", out.as_uri()),
                           ("every call expanded (#all)", out.as_uri() + "#all")):
            times = []
            for i in range(args.repeat):
                with tempfile.TemporaryDirectory() as profile:
                    took, dom = chromium_dump(binary, url, Path(profile))
                times.append(took)
                body = re.search(r"<body([^>]*)>", dom)
                attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1) if body else ""))
                if attrs.get("rendered") != "ok":
                    sys.exit(f"chromium run {i + 1}: the report did not finish rendering: {attrs}")
            rows.append((f"Chromium load + render, {label} (--dump-dom wall, median of {args.repeat})",
                         f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
                         f"calls={attrs['calls']} timelines={attrs['timelines']} "
                         f"visible={attrs['timelines-visible']} players={attrs['players']}"))
    rows.append(("report", str(out)))

    print_table(rows)


if __name__ == "__main__":
    main()
