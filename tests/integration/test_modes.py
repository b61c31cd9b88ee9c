"""Integration: worker mode and external-server mode run the same tests unchanged."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit import assert_asr_accuracy, assert_time_to_first_audio, assert_tool_called
from pytest_livekit.errors import AgentCrashedError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"


@pytest.mark.livekit(agent=EXAMPLE_AGENT, agent_mode="worker", call_type="refund")
async def test_worker_mode_refund_call(livekit_call: Any) -> None:
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert_time_to_first_audio(livekit_call, max_ms=3000)
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")
    rec = livekit_call.record
    assert rec.agent_mode == "worker"
    assert livekit_call.agent_identity.startswith("agent-AJ_")  # a real dispatched job
    assert any(i.role == "assistant" and "e2e_latency" in i.metrics for i in rec.items)
    assert {("agent", "speaking"), ("user", "speaking")} <= {(s.who, s.new) for s in rec.state_changes}


async def test_worker_job_crash_fails_fast_with_traceback(
    make_livekit_call: Any, livekit_workers: Any, livekit_server: Any, request: Any
) -> None:
    """The job's entrypoint raises: the call fails within 10 s of the dispatch (the worker is
    registered first: its start is not the fault's time) with the job's traceback, and the call's
    folder keeps the recording and the crash (test_faults.py's matrix checks the trace.json a
    failing test leaves)."""
    import asyncio
    import json

    from pytest_livekit.pytest_run.keys import CALL_KEY

    spec = "tests.agents.crashing_worker_agent:server"
    await asyncio.to_thread(
        livekit_workers.get, spec,
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret,
    )
    started = time.monotonic()
    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent=spec, agent_mode="worker"):
            pass
    elapsed = time.monotonic() - started
    print(f"the job's crash failed the call {elapsed:.2f} s after the dispatch")
    message = str(excinfo.value)
    assert "boom: CRM unreachable from the job" in message
    assert "_open_crm_connection" in message
    assert elapsed < 10, f"the job's crash failed the call {elapsed:.1f} s after the dispatch"
    (call,) = request.node.stash[CALL_KEY]  # failed while starting: the factory never handed it out
    folder = Path(call.record.artifacts_dir)
    assert (folder / "call.wav").stat().st_size > 44  # more than a WAV header
    saved = json.loads((folder / "call.json").read_text())
    assert any(e["source"] == "crash" and "_open_crm_connection" in e["message"] for e in saved["errors"])


def test_two_workers_get_distinct_health_ports(livekit_server: Any, tmp_path: Path) -> None:
    from pytest_livekit.agent.worker import AgentWorker, WorkerPool

    pool = WorkerPool(cwd=ROOT, log_dir=tmp_path)
    try:
        kw = dict(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
        first = pool.get(EXAMPLE_AGENT, **kw)
        second = pool.get("tests.agents.crashing_worker_agent:server", **kw)
        # one worker per agent here (the pool's default): not a WorkerGroup
        assert isinstance(first, AgentWorker) and isinstance(second, AgentWorker)
        assert first.health_port != second.health_port
        assert first.agent_name != second.agent_name
        assert livekit_server.api_secret not in first.log_path.read_text()
    finally:
        pool.stop_all()
    assert first.pid is None and second.pid is None


def test_external_server_mode(pytester: pytest.Pytester, server_binary: Path, tmp_path: Path) -> None:
    """--livekit-url against a server this test starts; the example call passes unchanged."""
    from pytest_livekit.server.binary import LivekitServer

    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    pytester.makepyfile(
        test_external="""
        import pytest
        from pytest_livekit import assert_time_to_first_audio, assert_tool_called

        @pytest.mark.livekit(call_type="refund")
        async def test_refund(livekit_call, livekit_server):
            assert livekit_server.mode == "external"
            await livekit_call.say("Can I speak to a human please")
            await livekit_call.wait_for_agent_reply()
            assert_time_to_first_audio(livekit_call, max_ms=3000)
            assert_tool_called(livekit_call, "transfer_to_human")
        """
    )
    with LivekitServer(server_binary, log_path=tmp_path / "server.log") as server:
        env = {
            **os.environ,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        result = _run(pytester, server.url, env)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"livekit: server=external {server.url} (cli --livekit-url)*"])
    assert server.api_secret not in result.stdout.str()


def _run(pytester: pytest.Pytester, url: str, env: dict[str, str]) -> pytest.RunResult:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--livekit-url={url}"],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    return pytest.RunResult(proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines(), 0.0)


def test_a_worker_that_cannot_start_fails_once_then_at_once(livekit_server: Any, tmp_path: Path) -> None:
    from pytest_livekit.agent.worker import WorkerPool, WorkerStartError

    pool = WorkerPool(cwd=tmp_path, log_dir=tmp_path, startup_timeout=60)
    kw = dict(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
    try:
        with pytest.raises(WorkerStartError) as first:
            pool.get("no_such_agent_module:server", **kw)
        assert "no_such_agent_module" in str(first.value)
        assert "import path (sys.path)" in str(first.value)  # the worker says where it looked
        started = time.monotonic()
        with pytest.raises(WorkerStartError) as again:
            pool.get("no_such_agent_module:server", **kw)
        assert time.monotonic() - started < 1.0  # the later tests of the session fail at once
        assert "not retried" in str(again.value)
    finally:
        pool.stop_all()


def test_the_worker_imports_what_the_test_process_imports(
    livekit_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder only this process has on sys.path (a conftest put it there) reaches the worker."""
    from pytest_livekit.agent.worker import WorkerPool

    agents = tmp_path / "private_agents"
    agents.mkdir()
    (agents / "private_agent.py").write_text((ROOT / "tests" / "agents" / "crashing_worker_agent.py").read_text())
    monkeypatch.syspath_prepend(str(agents))
    pool = WorkerPool(cwd=tmp_path, log_dir=tmp_path)
    try:
        kw = dict(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
        worker = pool.get("private_agent:server", **kw)
        assert worker.pid is not None
    finally:
        pool.stop_all()


def test_a_prestarted_worker_imports_before_the_server_exists(server_binary: Path, tmp_path: Path) -> None:
    """The session spawns its worker before its server is up; the server's URL and keys reach it
    later on stdin, never in its environment.
    """
    from pytest_livekit.agent.worker import WorkerPool
    from pytest_livekit.server.binary import LivekitServer

    pool = WorkerPool(cwd=ROOT, log_dir=tmp_path)
    try:
        pool.prestart(EXAMPLE_AGENT)
        pool.prestart("tests.agents.crashing_worker_agent:server")
        pool.keep_prestarted({(EXAMPLE_AGENT, "offline")})  # the other one is not needed: stopped
        assert [w.spec for w in pool.prestarted] == [EXAMPLE_AGENT]
        with LivekitServer(server_binary, log_path=tmp_path / "server.log") as server:
            worker = pool.get(EXAMPLE_AGENT, url=server.url, api_key=server.api_key, api_secret=server.api_secret)
            assert worker.pid is not None and not pool.prestarted
            environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
            assert server.api_secret.encode() not in environ
            assert server.api_secret not in worker.log_path.read_text()
            pool.stop_all()
    finally:
        pool.stop_all()


def test_a_prestarted_worker_handed_a_server_that_moved_is_replaced(server_binary: Path, tmp_path: Path) -> None:
    """The session hands a prestarted worker its server as soon as it is spawned; if that server
    then moved to other ports (a port race), the first call gets a new worker on the real one.
    """
    from pytest_livekit.agent.worker import WorkerPool
    from pytest_livekit.server.binary import LivekitServer
    from tests.support.processes import process_gone

    pool = WorkerPool(cwd=ROOT, log_dir=tmp_path)
    try:
        pool.prestart(EXAMPLE_AGENT)
        (warm,) = pool.prestarted
        warm_pid = warm.pid
        assert warm_pid is not None
        pool.connect_prestarted("ws://127.0.0.1:9", "key", "a-secret-of-at-least-thirty-two-chars")
        assert warm.connected
        with LivekitServer(server_binary, log_path=tmp_path / "server.log") as server:
            worker = pool.get(EXAMPLE_AGENT, url=server.url, api_key=server.api_key, api_secret=server.api_secret)
            assert worker is not warm and worker.url == server.url and worker.pid is not None
            assert process_gone(warm_pid, timeout=15)
            pool.stop_all()
    finally:
        pool.stop_all()


def test_a_prestarted_worker_that_cannot_import_fails_with_its_log(livekit_server: Any, tmp_path: Path) -> None:
    from pytest_livekit.agent.worker import WorkerPool, WorkerStartError

    pool = WorkerPool(cwd=tmp_path, log_dir=tmp_path)
    try:
        pool.prestart("no_such_agent_module:server")
        kw = dict(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
        with pytest.raises(WorkerStartError, match="no_such_agent_module"):
            pool.get("no_such_agent_module:server", **kw)
    finally:
        pool.stop_all()


def test_worker_mode_for_the_run_starts_the_worker_with_the_session(
    pytester: pytest.Pytester, server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``livekit_agent_mode = worker``: the worker is spawned at session start (its imports
    overlap collection and the server's start) and the first call uses it.
    """
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\nlivekit_agent_mode = worker\n"
    )
    pytester.makepyfile(
        test_prestarted_worker="""
        from pytest_livekit import assert_tool_called

        async def test_first_call_uses_the_prestarted_worker(livekit_workers, make_livekit_call):
            (warm,) = livekit_workers.prestarted
            assert warm.connected  # handed the server while pytest collected
            async with make_livekit_call() as call:
                await call.say("Can I speak to a human please")
                await call.wait_for_agent_reply()
            assert call.record.agent_mode == "worker"
            assert not livekit_workers.prestarted and warm.pid is not None
            assert_tool_called(call, "transfer_to_human")
        """
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--livekit-server-binary={server_binary}", timeout=300
    )
    result.assert_outcomes(passed=1)
