"""The worker process's own pieces without a server: the job-process setup that carries the
environment past an early forkserver, and the connection line."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import pytest

from pytest_livekit.agent._worker_main import JobProcessSetup, read_connection


def _prewarm(proc: dict[str, str]) -> str:
    proc["prewarmed"] = os.environ["LIVEKIT_URL"]
    return "done"


def test_a_job_process_gets_the_environment_the_worker_set_after_its_forkserver_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STAYS_THE_SAME", "1")
    monkeypatch.setenv("GOES_AWAY", "1")
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    setup = JobProcessSetup(dict(os.environ), _prewarm)
    # what the worker sets once it has its server (after the forkserver started)
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:7880")
    monkeypatch.delenv("GOES_AWAY")
    sent = pickle.dumps(setup)  # when livekit-agents starts a job process
    received = pickle.loads(sent)
    assert received.changes == {"LIVEKIT_URL": "ws://127.0.0.1:7880"}
    assert received.removed == ["GOES_AWAY"]
    assert b"STAYS_THE_SAME" not in sent  # only the changes travel

    # in the job process (its environment is the forkserver's, from before)
    monkeypatch.delenv("LIVEKIT_URL")
    monkeypatch.setenv("GOES_AWAY", "1")
    proc: dict[str, str] = {}
    assert received(proc) == "done"
    assert proc == {"prewarmed": "ws://127.0.0.1:7880"}  # set before the agent's own setup ran
    assert "GOES_AWAY" not in os.environ


def test_without_an_agent_setup_the_job_process_setup_only_sets_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTEST_LIVEKIT_PROBE", raising=False)
    setup = JobProcessSetup(dict(os.environ), None)
    monkeypatch.setenv("PYTEST_LIVEKIT_PROBE", "x")
    received = pickle.loads(pickle.dumps(setup))
    monkeypatch.delenv("PYTEST_LIVEKIT_PROBE")
    assert received(object()) is None
    assert os.environ["PYTEST_LIVEKIT_PROBE"] == "x"


def test_the_early_forkserver_starts_before_the_worker_imports_livekit_agents() -> None:
    """Started before the process imports livekit-agents, it runs; the process itself has not
    imported livekit-agents yet (the two imports overlap)."""
    code = (
        "import sys\n"
        "from multiprocessing import forkserver\n"
        "from pytest_livekit.agent._worker_main import start_forkserver_early, stop_early_forkserver\n"
        "assert start_forkserver_early()\n"
        "assert 'livekit.agents' not in sys.modules\n"
        "pid = forkserver._forkserver._forkserver_pid\n"
        "import os; os.kill(pid, 0)\n"
        "stop_early_forkserver()\n"
        "print('ok', pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("ok")


def test_the_connection_line() -> None:
    line = '{"url": "ws://127.0.0.1:1", "api_key": "k", "api_secret": "s", "other": 1}\n'
    assert read_connection(io.StringIO(line)) == {"url": "ws://127.0.0.1:1", "api_key": "k", "api_secret": "s"}
    assert read_connection(io.StringIO("")) is None
    with pytest.raises(ValueError, match="api_secret"):
        read_connection(io.StringIO('{"url": "ws://x", "api_key": "k"}\n'))
