"""The example suite runs green against a real server and prints its per-call table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "example_suite"


def test_example_suite_passes_and_reports(tmp_path: Path) -> None:
    artifacts = tmp_path / "calls"
    proc = subprocess.run(
        # as scripts/example runs it: two calls at a time (the scenario table alone has 20 calls)
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", f"--livekit-artifacts={artifacts}",
         f"--livekit-report={tmp_path / 'report.html'}"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    assert "livekit calls" in out
    assert "test_refund_happy_path [refund] passed: ttfa " in out
    assert "lookup_order(order_id='1234'), issue_refund(order_id='1234')" in out
    folders = sorted(p.name for p in artifacts.iterdir())
    folder = artifacts / "test_support_calls.test_refund_happy_path"
    assert folder.name in folders
    record = json.loads((folder / "call.json").read_text())
    assert [t["text"] for t in record["caller_turns"]] == [
        "I want a refund for order one two three four",
        "Yes please refund it",
    ]
    assert (folder / "call.wav").stat().st_size > 100_000
    assert json.loads((folder / "trace.json").read_text())["test"]["outcome"] == "passed"
    report = (tmp_path / "report.html").read_text()
    assert report.count('class="call ') == len(folders)  # every call of the run is in the report
    # the scenario table: one test per row, every task completed, a table per cohort
    assert out.count("test_refund_variations[refund-row") == 20
    assert any(line.startswith("clean ") and "10/10" in line for line in out.splitlines()), out[-3000:]
    assert any(line.startswith("noisy ") and "10/10" in line for line in out.splitlines()), out[-3000:]
