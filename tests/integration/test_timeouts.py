"""Integration: pytest-timeout firing in the middle of a call, both methods, in an inner pytest
run against a real livekit-server.

Each ends in one clear failure (the timeout, the test, where it waited, what is kept), the call's
folder keeps the recording up to the timeout and a trace with outcome ``timeout``, and nothing
the session started keeps running. The ``thread`` method ends the whole run (``os._exit``); under
the ``signal`` method the session goes on and its next test passes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import group_gone, process_gone

pytestmark = pytest.mark.integration

EXAMPLE_AGENT = "example_suite.support_agent:server"
ROOT = Path(__file__).resolve().parents[2]

THREAD_TIMEOUT = '''
import asyncio

import pytest


@pytest.mark.timeout(20, method="thread", func_only=True)
async def test_times_out_mid_call(make_livekit_call, pytestconfig):
    from pytest_livekit.call.caller import caller_host
    from pytest_livekit.pytest_run.keys import SESSION_KEY

    async with make_livekit_call(agent_mode="worker") as call:
        await call.say("Hello")
        await call.wait_for_agent_reply()
        pids = [pytestconfig.stash[SESSION_KEY].server.pid, caller_host().pid, call.worker.pid]
        print("PIDS=" + ",".join(map(str, pids)), "AT=%.2f" % call.caller.now(), flush=True)
        await asyncio.sleep(60)  # stuck: the thread method ends the process here
'''

SIGNAL_TIMEOUT = '''
import pytest


def _print_pids(call, pytestconfig):
    from pytest_livekit.call.caller import caller_host
    from pytest_livekit.pytest_run.keys import SESSION_KEY

    pids = [pytestconfig.stash[SESSION_KEY].server.pid, caller_host().pid]
    if call.worker is not None:
        pids.append(call.worker.pid)
    print("PIDS=" + ",".join(map(str, pids)), "AT=%.2f" % call.caller.now(), flush=True)


@pytest.mark.timeout(20, method="signal", func_only=True)
async def test_stuck_in_process(livekit_call, pytestconfig):
    # the in-process agent shares the test's loop: the timeout lands among its callbacks
    await livekit_call.say("Hello")
    await livekit_call.wait_for_agent_reply()
    _print_pids(livekit_call, pytestconfig)
    await livekit_call.wait_for_agent_to_say("this is never said", timeout=120)


@pytest.mark.timeout(20, method="signal", func_only=True)
async def test_stuck_worker(make_livekit_call, pytestconfig):
    async with make_livekit_call(agent_mode="worker") as call:
        await call.say("Hello")
        await call.wait_for_agent_reply()
        _print_pids(call, pytestconfig)
        await call.wait_for_agent_to_say("this is never said", timeout=120)


async def test_the_next_test_passes(livekit_call):
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
'''


def _run_inner(tmp_path: Path, server_binary: Path, name: str, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "-rA", "--durations=0", "-vv",
         f"--livekit-server-binary={server_binary}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _printed(out: str) -> list[tuple[list[int], float]]:
    """Each ``PIDS=...,... AT=<s>`` line of the inner tests: the pids and the call time."""
    return [
        ([int(p) for p in pids.split(",")], float(at))
        for pids, at in re.findall(r"PIDS=([\d,]+) AT=([\d.]+)", out)
    ]


def _recording(folder: Path) -> tuple[float, float]:
    """``(seconds, peak of the agent channel)`` of a call's ``call.wav``."""
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(str(folder / "call.wav"), dtype="int16")
    return len(data) / rate, float(np.abs(data[:, 1].astype(np.int32)).max())






def test_pytest_timeout_thread_method_mid_call_keeps_the_call_and_leaves_nothing_running(
    tmp_path: Path, server_binary: Path
) -> None:
    """The thread method ends pytest with os._exit: the plugin writes the call's recording and
    trace first, and the parent-death signal takes the server, the caller process, the worker
    and its job processes with it."""
    proc = _run_inner(tmp_path, server_binary, "test_thread_timeout", THREAD_TIMEOUT)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    printed = _printed(out)
    assert len(printed) == 1, out[-4000:]
    pids, at = printed[0]
    # what broke, where, what is kept; then pytest-timeout's own stack dump
    assert ("Timeout (>20.0s) from pytest-timeout (thread method): "
            "test_thread_timeout.py::test_times_out_mid_call ran over 20 s, in its call.") in out, out[-4000:]
    assert re.search(r"test_thread_timeout\.py:\d+ in test_times_out_mid_call: await asyncio\.sleep\(60\)", out), out[-4000:]
    folder = tmp_path / ".livekit" / "calls" / "test_thread_timeout.test_times_out_mid_call"
    assert f"Kept in {folder}: call.wav" in out, out[-4000:]
    assert "Stack of MainThread" in out  # pytest-timeout's dump still follows
    # the recording up to the timeout: past the moment the test got stuck, with the agent's reply
    seconds, agent_peak = _recording(folder)
    assert seconds > at + 2.0, (seconds, at)
    assert agent_peak > 1000
    trace = json.loads((folder / "trace.json").read_text())
    assert trace["test"]["outcome"] == "timeout"
    assert trace["test"]["nodeid"] == "test_thread_timeout.py::test_times_out_mid_call"
    assert "Timeout (>20.0s) from pytest-timeout (thread method)" in trace["test"]["message"]
    assert trace["call"]["duration_s"] > at + 2.0
    assert any(t["who"] == "caller" and t["text"] == "Hello" for t in trace["turns"])
    assert (folder / "call.json").exists()
    for pid in pids:
        assert process_gone(pid, 15.0), f"pid {pid} survived pytest-timeout's thread method"
    # the worker leads its own process group (start_new_session), which its job processes share
    assert group_gone(pids[2], 15.0), "the worker's job processes survived pytest-timeout's thread method"


def test_pytest_timeout_signal_method_mid_call_fails_the_test_and_the_session_goes_on(
    tmp_path: Path, server_binary: Path
) -> None:
    """The signal method fails only the stuck test, soon after the timeout (in-process agent on
    the test's loop, and a worker), keeps its call with outcome ``timeout``, and the next test of
    the same session passes; the session then stops everything it started."""
    proc = _run_inner(tmp_path, server_binary, "test_signal_timeout", SIGNAL_TIMEOUT)
    out = proc.stdout + proc.stderr
    last = out.strip().splitlines()[-1]
    assert "2 failed, 1 passed" in last, out[-6000:]
    printed = _printed(out)
    assert len(printed) == 2, out[-6000:]
    calls = tmp_path / ".livekit" / "calls"
    for name, (_pids, at) in zip(["test_stuck_in_process", "test_stuck_worker"], printed, strict=True):
        nodeid = f"test_signal_timeout.py::{name}"
        assert (f"Timeout (>20.0s) from pytest-timeout (signal method): {nodeid} ran over 20 s, "
                "in its call.") in out, out[-6000:]
        # where it waited: the test's own line, then down to the call's wait
        assert re.search(rf"test_signal_timeout\.py:\d+ in {name}: await \w+\.wait_for_agent_to_say", out), out[-6000:]
        # ended by the timeout, not by the 120 s wait: the call phase took the timeout and the hang-up
        took = re.search(rf"([\d.]+)s call\s+{re.escape(nodeid)}", out)
        assert took is not None and 20.0 <= float(took.group(1)) < 20.0 + 10.0, out[-6000:]
        folder = calls / f"test_signal_timeout.{name}"
        assert f"Kept in {folder}: call.wav" in out, out[-6000:]
        seconds, agent_peak = _recording(folder)
        assert seconds > at + 2.0 and agent_peak > 1000, (name, seconds, at, agent_peak)
        trace = json.loads((folder / "trace.json").read_text())
        assert trace["test"]["outcome"] == "timeout", trace["test"]
        assert trace["test"]["phase"] == "call"
        assert "Timeout (>20.0s) from pytest-timeout (signal method)" in trace["test"]["message"]
        assert "wait_for_agent_to_say" in trace["test"]["message"]
        assert trace["metrics"], "the call was finished normally: its metrics are in the trace"
    assert "PASSED test_signal_timeout.py::test_the_next_test_passes" in out, out[-6000:]
    following = json.loads((calls / "test_signal_timeout.test_the_next_test_passes" / "trace.json").read_text())
    assert following["test"]["outcome"] == "passed"
    for pid in sorted({pid for pids, _ in printed for pid in pids}):
        assert process_gone(pid, 15.0), f"pid {pid} still runs after the session ended"
    worker = printed[1][0][2]
    assert group_gone(worker, 15.0), "the worker's job processes still run after the session ended"
