"""Integration: README's "Driving a call without pytest" snippet, run as written against a real
livekit-server, leaves the artifacts a test's call leaves.

The snippet is taken from README.md itself (the first ``python`` block of that section), so the
README cannot drift from what works. It runs in its own interpreter, in a copy of the example
suite (its artifacts never land in the repository), inside ``scripts/netns-run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Driving a call without pytest"


def readme_snippet() -> str:
    """The first ``python`` code block of README's section on driving a call without pytest."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ", len(SECTION))]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {SECTION!r}"
    return match.group(1)


def test_readme_snippet_is_short() -> None:
    assert len(readme_snippet().strip().splitlines()) < 15


def test_readme_snippet_places_a_call_and_leaves_its_artifacts(tmp_path: Path, server_binary: Path) -> None:
    shutil.copytree(ROOT / "example_suite", tmp_path / "example_suite",
                    ignore=shutil.ignore_patterns(".livekit", "__pycache__"))
    env = {**os.environ, "PYTEST_LIVEKIT_SERVER_BINARY": str(server_binary)}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "netns-run"), sys.executable, "-c", readme_snippet()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "example_suite" / ".livekit" / "calls" / "refund"
    for name in ("call.wav", "caller.wav", "agent.wav", "call.json", "metrics.json", "trace.json"):
        assert (folder / name).is_file(), name
    trace = json.loads((folder / "trace.json").read_text())
    assert trace["call"]["call_type"] == "refund"
    assert trace["test"] == {**trace["test"], "nodeid": "refund", "outcome": "passed"}
    assert trace["limits"]["ttfa_ms_max"] == 1500  # the call type came from example_suite's pyproject
    assert trace["metrics"]["turns"][0]["ttfa"] is not None  # the agent answered the caller
    assert [c["name"] for c in trace["tool_calls"]][:1] == ["lookup_order"]
    session_file = tmp_path / "example_suite" / ".livekit" / "calls.jsonl"
    assert [json.loads(line)["call"]["call_id"] for line in session_file.read_text().splitlines()] == [
        trace["call"]["call_id"]
    ]
