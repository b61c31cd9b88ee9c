"""Integration: the fault matrix. Each fault ends the test with one clear failure (what broke,
where, what to look at) within 10 s of the fault, and the call's artifacts are kept.

Agent-side faults that livekit-agents catches and only logs (a tool that raises, a provider
stream that fails) would otherwise leave the caller in silence until a 30 s timeout, or pass
with an answer built on a failed tool.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.errors import AgentCrashedError

pytestmark = pytest.mark.integration

FAULTY = "tests.agents.faulty_agent"


@pytest.mark.parametrize(
    ("agent", "words"),
    [
        ("tool_fails", ["tool lookup_order() raised RuntimeError: CRM unreachable", "faulty_agent.py"]),
        ("tts_fails", ["TTS raised RuntimeError: TTS provider outage", "faulty_agent.py"]),
        ("llm_fails", ["LLM raised RuntimeError: LLM provider outage", "faulty_agent.py"]),
        ("stt_fails", ["STT raised RuntimeError: STT provider outage", "faulty_agent.py"]),
    ],
)
async def test_an_agent_fault_fails_the_call_at_once_naming_the_part(
    make_livekit_call: Any, agent: str, words: list[str]
) -> None:
    call = None
    started = time.monotonic()  # the STT fails when the session starts, the others mid-call
    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent=f"{FAULTY}:{agent}") as call:
            await call.say("I want a refund for order one two three four")
            await call.wait_for_agent_reply()
    assert time.monotonic() - started < 12.0, "the fault took the reply timeout"
    message = str(excinfo.value)
    for word in words:
        assert word in message
    if call is None:  # failed while starting: the factory's call is not bound; its folder is
        return
    assert any(e.source == "agent" for e in call.record.errors)
    saved = json.loads((Path(call.record.artifacts_dir) / "call.json").read_text())
    assert any(e["source"] == "agent" for e in saved["errors"])  # kept with the call
    assert (Path(call.record.artifacts_dir) / "call.wav").exists()


EXAMPLE_AGENT = "example_suite.support_agent:server"


async def test_the_room_deleted_mid_call_fails_the_wait_at_once(make_livekit_call: Any, livekit_server: Any) -> None:
    from livekit import api

    from pytest_livekit.errors import CallLostError

    async with make_livekit_call(agent=EXAMPLE_AGENT) as call:
        await call.say("Hello")
        async with api.LiveKitAPI(
            livekit_server.url.replace("ws://", "http://"), livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=call.room_name))
        deleted = time.monotonic()
        with pytest.raises(CallLostError, match="reason ROOM_DELETED") as excinfo:
            await call.say("Can I speak to a human please")
            await call.wait_for_agent_reply()
        assert time.monotonic() - deleted < 10.0
        assert "deleted the room mid-call" in str(excinfo.value)
    assert any(e.source == "connection" for e in call.record.errors)
    assert (Path(call.record.artifacts_dir) / "call.wav").exists()


async def test_an_agent_that_ends_the_call_is_waited_for(make_livekit_call: Any, livekit_server: Any) -> None:
    """Deleting the room is how agents hang up: wait_for_call_end expects it, it is no error."""
    import asyncio

    from livekit import api

    async with make_livekit_call(agent=EXAMPLE_AGENT) as call:
        await call.say("Thank you goodbye")
        await call.wait_for_agent_reply()

        async def hang_up_like_an_agent() -> None:
            await asyncio.sleep(0.5)  # scheduling the hang-up, not synchronising the test
            async with api.LiveKitAPI(
                livekit_server.url.replace("ws://", "http://"), livekit_server.api_key, livekit_server.api_secret
            ) as lk:
                await lk.room.delete_room(api.DeleteRoomRequest(room=call.room_name))

        task = asyncio.create_task(hang_up_like_an_agent())
        assert await call.wait_for_call_end(timeout=10) == "ROOM_DELETED"
        await task
    assert not call.record.errors


SERVER_KILL = '''
import os
import signal
import time

from pytest_livekit.keys import SESSION_KEY


async def test_a_killed_server_fails_the_call(livekit_call, pytestconfig):
    import subprocess

    server = pytestconfig.stash[SESSION_KEY].server
    await livekit_call.say("Hello")
    if getattr(server, "container_id", None):  # docker mode: the container dies
        subprocess.run(["docker", "kill", "--signal", "KILL", server.container_id], check=True, capture_output=True)
    else:
        os.kill(server.pid, signal.SIGKILL)
    started = time.monotonic()
    try:
        await livekit_call.say("Can I speak to a human please")
        await livekit_call.wait_for_agent_reply()
    finally:
        with open("seconds_to_failure.txt", "w") as f:
            f.write(str(time.monotonic() - started))


async def test_the_next_test_fails_at_setup(livekit_call):
    pass


def test_a_test_without_a_call_is_unaffected():
    pass
'''


@pytest.mark.parametrize("mode", ["binary", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_killed_server_fails_the_call_at_once_and_later_tests_at_setup(
    pytester: pytest.Pytester, server_binary: Path, mode: str
) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    pytester.makepyfile(test_server_kill=SERVER_KILL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--livekit-server={mode}",
         *([f"--livekit-server-binary={server_binary}"] if mode == "binary" else [])],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = proc.stdout
    assert "1 failed, 1 passed, 1 error" in out, out[-4000:]
    assert float((pytester.path / "seconds_to_failure.txt").read_text()) < 10.0
    # the binary's exit status, or the container's (docker reports a SIGKILLed process as 137)
    how = "was killed by signal 9 (SIGKILL)" if mode == "binary" else ""
    assert f"ServerDiedError: the session's livekit-server {how}" in out
    assert "ERROR at setup of test_the_next_test_fails_at_setup" in out
    assert "ServerDiedError: no call can be placed: the session's livekit-server" in out
    calls = pytester.path / ".livekit" / "calls"
    killed = calls / "test_server_kill.test_a_killed_server_fails_the_call"
    assert (killed / "call.wav").exists()  # the recording up to the fault is kept
    trace = json.loads((killed / "trace.json").read_text())
    assert trace["test"]["outcome"] == "failed" and "ServerDiedError" in trace["test"]["message"]


def _job_pid(call: Any) -> int:
    """The pid of the worker's job process serving ``call`` (from the worker's JSON log)."""
    for line in Path(call.worker.log_path).read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("room") == call.room_name and event.get("message") == "RoomIO linked to participant":
            return int(event["pid"])
    raise AssertionError(f"no job process of room {call.room_name} in {call.worker.log_path}")


async def test_a_tool_that_raises_in_a_worker_fails_the_call(make_livekit_call: Any) -> None:
    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent=f"{FAULTY}:tool_fails", agent_mode="worker") as call:
            spoke = time.monotonic()
            await call.say("I want a refund for order one two three four")
            await call.wait_for_agent_reply()
    assert time.monotonic() - spoke < 10.0
    assert "the agent's tool lookup_order() raised RuntimeError: CRM unreachable" in str(excinfo.value)


@pytest.mark.parametrize("victim", ["job process", "worker process"])
async def test_a_killed_worker_or_job_process_fails_the_call(make_livekit_call: Any, victim: str) -> None:
    import os
    import signal

    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent=f"{FAULTY}:tool_fails", agent_mode="worker") as call:
            await call.say("Hello")
            await call.wait_for_agent_reply()
            pid = _job_pid(call) if victim == "job process" else call.worker.pid
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            await call.say("Can I speak to a human please")
            await call.wait_for_agent_reply()
    assert time.monotonic() - killed < 10.0
    message = str(excinfo.value)
    if victim == "job process":
        assert "the agent's job process exited with non-zero exit code -9" in message
    else:
        assert re.search(r"the agent worker process \(pid \d+\) was killed by signal 9 \(SIGKILL\) during the call",
                         message), message


MID_CALL = '''
import asyncio
import os


async def test_hold_a_call(make_livekit_call, livekit_server, pytestconfig):
    from pytest_livekit.caller import caller_host
    from pytest_livekit.keys import SESSION_KEY

    async with make_livekit_call(agent_mode="worker") as call:
        await call.say("Hello")
        session = pytestconfig.stash[SESSION_KEY]
        pids = [session.server.pid, caller_host().pid, call.worker.pid]
        print("PIDS=" + ",".join(map(str, pids)), flush=True)
        await call.say("I want a refund for order one two three four")  # the signal lands here
        await asyncio.sleep(60)
'''


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_ctrl_c_or_sigkill_of_pytest_mid_call_leaves_nothing_running(
    tmp_path: Path, server_binary: Path, sig: str
) -> None:
    """Every process of the session (server, caller process, worker and its job processes)
    is gone soon after pytest is interrupted or killed in the middle of a call."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "test_mid_call.py").write_text(MID_CALL)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", f"--livekit-server-binary={server_binary}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    guard = threading.Timer(120, proc.kill)  # bounds the blocking read below
    guard.start()
    pids: list[int] = []
    try:
        for line in proc.stdout:
            if "PIDS=" in line:
                pids = [int(p) for p in line.split("PIDS=", 1)[1].split()[0].split(",")]
                break
    finally:
        guard.cancel()
    assert len(pids) == 3, proc.communicate(timeout=30)[0][-3000:]
    group = os.getpgid(pids[2])  # the worker's job processes share its process group
    proc.send_signal(getattr(signal, sig))
    out = proc.communicate(timeout=60)[0]
    for pid in pids:
        assert _gone(pid, 15.0), f"pid {pid} survived {sig} of pytest:\n{out[-3000:]}"
    assert _group_gone(group, 15.0), f"the worker's job processes survived {sig}"


def _gone(pid: int, timeout: float) -> bool:
    import os
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _group_gone(group: int, timeout: float) -> bool:
    """No process left in process group ``group`` within ``timeout`` s (a process group has no
    exit event to wait on: this polls /proc, bounded)."""
    import os

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == group:
                        alive.append(entry)
                except ProcessLookupError:
                    pass
        if not alive:
            return True
        time.sleep(0.2)
    return False



THREAD_TIMEOUT = '''
import asyncio

import pytest


@pytest.mark.timeout(25, method="thread")
async def test_times_out_mid_call(make_livekit_call, pytestconfig):
    from pytest_livekit.caller import caller_host
    from pytest_livekit.keys import SESSION_KEY

    async with make_livekit_call(agent_mode="worker") as call:
        await call.say("Hello")
        pids = [pytestconfig.stash[SESSION_KEY].server.pid, caller_host().pid, call.worker.pid]
        print("PIDS=" + ",".join(map(str, pids)), flush=True)
        await asyncio.sleep(60)  # stuck: pytest-timeout's thread method ends the process here
'''


def test_pytest_timeout_thread_method_mid_call_leaves_nothing_running(tmp_path: Path, server_binary: Path) -> None:
    """The thread method ends pytest with os._exit: the parent-death signal takes the server,
    the caller process, the worker and its job processes with it."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "test_thread_timeout.py").write_text(THREAD_TIMEOUT)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", f"--livekit-server-binary={server_binary}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert "Timeout" in proc.stdout + proc.stderr and proc.returncode != 0, proc.stdout[-3000:]
    pids = [int(p) for p in proc.stdout.split("PIDS=", 1)[1].split()[0].split(",")]
    for pid in pids:
        assert _gone(pid, 15.0), f"pid {pid} survived pytest-timeout's thread method"


DISK = '''
async def test_one(livekit_call):
    await livekit_call.say("Hello")
    await livekit_call.wait_for_agent_reply()


async def test_two(livekit_call):
    await livekit_call.say("Hello")
    await livekit_call.wait_for_agent_reply()
'''


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_an_unwritable_artifacts_folder_keeps_the_results_and_says_so_once(
    tmp_path: Path, server_binary: Path, fault: str
) -> None:
    """A 200 KiB tmpfs (disk full) or a read-only mount, private to the inner run (unshare -m)."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a private tmpfs")  # CI runs as root
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "test_disk.py").write_text(DISK)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mount = (
        f"mount -t tmpfs -o size=200k tmpfs {out_dir}" if fault == "disk full"
        else f"mount -t tmpfs -o size=10m tmpfs {out_dir} && mkdir {out_dir}/calls && mount -o remount,ro {out_dir}"
    )
    pytest_cmd = (
        f"{sys.executable} -m pytest -p no:cacheprovider --livekit-server-binary={server_binary} "
        f"--livekit-artifacts={out_dir}/calls --livekit-report={out_dir}/report.html test_disk.py"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mount} && {pytest_cmd}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = proc.stdout
    last = out.strip().splitlines()[-1]
    assert "2 passed in" in last and "error" not in last and "failed" not in last, out[-3000:]
    assert out.count("calls could not write their artifacts") == 1, out[-3000:]
    assert "test results are not affected" in out
    if fault == "read-only":  # the logs found another home, and the run says where
        assert "cannot be written" in out and "server and worker logs are in" in out
