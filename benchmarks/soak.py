"""Flakiness, measured: run a suite N times in a row and count failures per test.

    scripts/netns-run python3 benchmarks/soak.py --suite example --runs 10 [--busy]
    scripts/netns-run python3 benchmarks/soak.py --suite integration --runs 20

Suites:

    example      the example suite (``example_suite/``, as ``./scripts/example`` runs it)
    integration  the plugin's integration tests (``tests/integration``)
    plugin       the plugin's own tests without the example suite (``tests``, minus
                 ``tests/test_example_suite.py``)

``--busy`` keeps one core busy for the whole soak with a separate process (a tight loop in
``python3 -c``), as a shared CI runner would, and stops it at the end (or on Ctrl-C).

Each run writes a JUnit XML file; the table lists every test that failed or errored at least
once with its count, then the runs' wall times. Exit status 1 if any run had a failure.
Nothing but loopback is used: run it inside ``scripts/netns-run`` like the tests.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUITES: dict[str, tuple[Path, list[str]]] = {
    "example": (ROOT / "example_suite", ["-p", "no:cacheprovider"]),
    "integration": (ROOT, ["tests/integration"]),
    "plugin": (ROOT, ["tests", "--deselect", "tests/test_example_suite.py"]),
}

#: The busy process: one core, bounded (it ends with the soak, or after 4 hours at most).
BURN = "import time\nend = time.monotonic() + 4 * 3600\nwhile time.monotonic() < end:\n    pass\n"


def failures(junit: Path) -> list[str]:
    """Test ids that failed or errored in one JUnit XML file."""
    if not junit.is_file():
        return ["(no junit file: pytest did not finish)"]
    bad: list[str] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            bad.append(f"{case.get('classname')}::{case.get('name')}")
    return bad


def main() -> int:
    """Run the soak and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="example")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    cwd, selection = SUITES[args.suite]
    burner = subprocess.Popen([sys.executable, "-c", BURN]) if args.busy else None
    counts: collections.Counter[str] = collections.Counter()
    walls: list[float] = []
    red_runs = 0
    try:
        with tempfile.TemporaryDirectory(prefix="pytest-livekit-soak-") as tmp:
            for n in range(1, args.runs + 1):
                junit = Path(tmp) / f"run-{n}.xml"
                started = time.monotonic()
                proc = subprocess.run(
                    # junit_family=xunit1: tests that record_property (the calibration's figures)
                    # warn under the default xunit2, and our strict warnings make that an error
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", f"--junitxml={junit}",
                     "-o", "junit_family=xunit1", *selection],
                    cwd=cwd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    check=False,
                )
                walls.append(time.monotonic() - started)
                bad = failures(junit)
                counts.update(bad)
                red_runs += bool(bad) or proc.returncode != 0
                # pytest's final line ("13 passed in ..."); native libraries may log after it
                summary = [ln for ln in proc.stdout.splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
                last = summary[-1].strip("= ") if summary else "(no pytest summary)"
                print(f"run {n}/{args.runs}: {walls[-1]:.0f} s, {last}", flush=True)
    finally:
        if burner is not None:
            burner.terminate()
            burner.wait(timeout=10)
    load = "one core kept busy" if args.busy else "quiet"
    print(f"\nsoak: {args.suite} suite, {args.runs} runs in a row, {load}")
    print(f"runs with a failure: {red_runs}/{args.runs}; wall per run: median "
          f"{statistics.median(walls):.0f} s, max {max(walls):.0f} s")
    if counts:
        print(f"{'failures':>8}  test")
        for test, count in counts.most_common():
            print(f"{count:>8}  {test}")
    else:
        print("no test failed")
    return 1 if red_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
