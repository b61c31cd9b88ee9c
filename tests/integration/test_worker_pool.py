"""Integration: agent workers at scale (issue 15, item 4).

Two worker processes register under the test's agent name (``agent_workers=2``,
``livekit_agent_workers = 2``); livekit-server gives each call's job to one of them (at random,
weighted by ``1 - load``: both report 0). Which worker took a job is read from that worker's own
log (``received job request`` with the room) and checked against the job id in the agent's
identity. Then the worker running a call's job is killed mid-call: that call fails within
seconds with the dead worker's log tail, and the next calls pass on the other worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pytest_livekit import assert_tool_called
from pytest_livekit.agent.worker import AgentWorker, WorkerGroup
from pytest_livekit.errors import AgentCrashedError
from pytest_livekit.session import LivekitSession

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
AGENT = "support_agent:server"  # imported from the example suite's folder (its rootdir)
#: livekit-server picks a worker at random: calls are placed until both took one (at least 4);
#: 12 calls all on one worker happen once in 2048 runs.
MIN_CALLS, MAX_CALLS = 4, 12


def _job_worker(call: object, group: WorkerGroup) -> AgentWorker:
    """The member whose log says the server offered it the call's job; the agent that joined is
    that job's (``agent-<job id>``)."""
    room = call.room_name  # type: ignore[attr-defined]
    taken = [m for m in group.members if room in m.jobs]
    assert len(taken) == 1, f"job of {room} offered to {len(taken)} workers"
    member = taken[0]
    assert call.agent_identity == f"agent-{member.jobs[room]}"  # type: ignore[attr-defined]
    log = member.log_path.read_text()
    assert "received job request" in log and room in log
    assert all(room not in m.log_path.read_text() for m in group.members if m is not member)
    return member


async def test_jobs_spread_over_two_workers_and_a_dead_one_fails_only_its_call(tmp_path: Path) -> None:
    session = LivekitSession(
        AGENT, server="binary", agent_mode="worker", agent_workers=2,
        rootdir=ROOT / "example_suite", artifacts_dir=tmp_path / "calls",
    )
    async with session:
        taken: list[int] = []
        group: WorkerGroup | None = None
        while len(taken) < MAX_CALLS and (len(taken) < MIN_CALLS or len(set(taken)) < 2):
            async with session.call(f"spread-{len(taken)}", call_type="refund") as call:
                await call.say("Can I speak to a human please")
                await call.wait_for_agent_reply()
                assert_tool_called(call, "transfer_to_human")
            group = call.worker  # type: ignore[assignment]
            assert isinstance(group, WorkerGroup) and len(group.members) == 2
            assert len({m.agent_name for m in group.members}) == 1
            taken.append(group.members.index(_job_worker(call, group)))
        assert group is not None
        print(f"jobs per call went to workers {taken}")
        assert set(taken) == {0, 1}, f"livekit-server gave every job to one worker: {taken}"

        # kill the worker running a call's job, mid-call
        killed_at = None
        with pytest.raises(AgentCrashedError) as failed:
            async with session.call("killed", call_type="refund") as call:
                await call.say("Can I speak to a human please")
                await call.wait_for_agent_reply()
                dead = _job_worker(call, group)
                pid = dead.pid
                assert pid is not None
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                await call.say("I want a refund for order one two three four")
                await call.wait_for_agent_reply(timeout=30)
        assert killed_at is not None
        failed_after = time.monotonic() - killed_at
        message = str(failed.value)
        assert "was killed by signal 9 (SIGKILL)" in message, message
        assert f"pid {pid}" in message and str(dead.log_path) in message, message
        assert "received job request" in message  # the dead worker's log tail
        assert failed_after < 5.0, f"the call failed {failed_after:.1f} s after the kill"
        print(f"the call failed {failed_after:.2f} s after the kill:\n{message[:600]}")
        assert not dead.is_running() and group.pid is not None
        survivor = next(m for m in group.members if m is not dead)

        # the others go on: the next calls pass on the remaining worker
        for n in range(2):
            async with session.call(f"after-{n}", call_type="refund") as call:
                await call.say("I want a refund for order one two three four")
                await call.wait_for_agent_reply()
                assert_tool_called(call, "lookup_order", order_id="1234")
            assert call.worker is group and _job_worker(call, group) is survivor
        pids = [m.pid for m in group.members]
    # the session stopped every worker process
    assert all(pid is None or not os.path.exists(f"/proc/{pid}") for pid in pids)
    assert all(m.pid is None for m in group.members)
