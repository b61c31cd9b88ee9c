"""Integration: ``--livekit-server=cluster`` runs a suite unchanged on a Redis and three
livekit-server nodes (issue 15), each call spread over the nodes.

A tiny suite (two worker-mode calls, one in-process call, one failing test) runs in a pytest
subprocess. Call ``i``
signals to node ``i mod 3``, its room is created on node ``(i+1) mod 3`` and the worker is
registered with node 2; an in-process agent signals to the caller's node. Each call's trace
records where it ran (``server``); after the run no node, Redis or worker process is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import process_gone

pytestmark = [pytest.mark.integration]
if shutil.which("redis-server") is None and not os.environ.get("CI"):
    pytestmark.append(pytest.mark.skip(reason="no redis-server (apt-get install -y redis-server)"))

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"

SUITE = '''
import json, os
from pathlib import Path

import pytest
from pytest_livekit import assert_tool_called

PIDS = Path(os.environ["CLUSTER_PIDS_FILE"])


def _note_pids(request, workers):
    from pytest_livekit.plugin import SERVER_KEY

    cluster = request.config.stash[SERVER_KEY]
    pids = [n.pid for n in cluster.nodes] + [cluster.redis.pid]
    for worker in list(workers._workers.values()):
        pids += [m.pid for m in worker.members]
    PIDS.write_text(json.dumps({"pids": pids, "redis_config": str(cluster.redis.config_path)}))


@pytest.mark.livekit(agent_mode="worker", call_type="refund")
async def test_0_worker_call(livekit_call, livekit_server, livekit_workers, request):
    assert livekit_server.mode == "cluster"
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")
    _note_pids(request, livekit_workers)


@pytest.mark.livekit(call_type="refund")
async def test_1_in_process_call(livekit_call):
    await livekit_call.say("Can I speak to a human please")
    await livekit_call.wait_for_agent_reply()
    assert_tool_called(livekit_call, "transfer_to_human")


@pytest.mark.livekit(agent_mode="worker", call_type="refund")
async def test_2_worker_call(livekit_call, livekit_workers, request):
    await livekit_call.say("Can I speak to a human please")
    await livekit_call.wait_for_agent_reply()
    assert_tool_called(livekit_call, "transfer_to_human")
    _note_pids(request, livekit_workers)


def test_3_fails_with_the_nodes_logs(livekit_server):
    assert livekit_server.mode == "nope"
'''


def test_a_suite_runs_on_a_cluster_spread_over_its_nodes(
    pytester: pytest.Pytester, server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\nlivekit_call_types = refund\n"
    )
    pytester.makepyfile(test_on_cluster=SUITE)
    pids_file = pytester.path / "pids.json"
    env = {
        **os.environ,
        "CLUSTER_PIDS_FILE": str(pids_file),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--livekit-server=cluster",
         f"--livekit-server-binary={server_binary}"],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "1 failed, 3 passed" in output, output
    # the failing test's report shows each node's log tail
    assert "livekit-server log (" in output and "-- node 0 (ND_" in output and "-- node 2 (ND_" in output
    assert "livekit: server=cluster 3 nodes + redis" in output

    traces = {
        trace["test"]["nodeid"].rsplit("::", 1)[-1]: trace
        for trace in (json.loads(p.read_text()) for p in (pytester.path / ".livekit" / "calls").glob("*/trace.json"))
    }
    traces.pop("test_3_fails_with_the_nodes_logs", None)
    assert sorted(traces) == ["test_0_worker_call", "test_1_in_process_call", "test_2_worker_call"], sorted(traces)
    placements = []
    for i, name in enumerate(sorted(traces)):
        server = traces[name]["server"]
        nodes = server["nodes"]
        assert len(nodes) == 3 and len(set(nodes)) == 3 and all(n.startswith("ND_") for n in nodes), server
        assert server["signal_node_id"] == nodes[i % 3], (name, server)
        assert server["room_node_id"] == nodes[(i + 1) % 3], (name, server)  # created there, from Redis
        worker = traces[name]["call"]["agent_mode"] == "worker"
        # a worker is registered with the last node; an in-process agent signals where the caller does
        assert server["agent_node_id"] == (nodes[2] if worker else server["signal_node_id"]), (name, server)
        placements.append(server)
    # the first call uses three different nodes; every call's signalling is relayed to its room's node
    first = placements[0]
    assert len({first["signal_node_id"], first["room_node_id"], first["agent_node_id"]}) == 3
    assert all(p["signal_node_id"] != p["room_node_id"] for p in placements)
    assert len({p["signal_node_id"] for p in placements}) == 3

    # nothing left running after a run with a failure: the nodes, the Redis, the workers; the Redis password's file is gone
    noted = json.loads(pids_file.read_text())
    assert len(noted["pids"]) == 3 + 1 + 1, noted
    assert all(pid is not None and not os.path.exists(f"/proc/{pid}") for pid in noted["pids"]), noted
    assert not Path(noted["redis_config"]).exists()
    logs = pytester.path / ".livekit" / "livekit-cluster-main"
    assert sorted(p.name for p in logs.iterdir()) == [
        "livekit-node-0.log", "livekit-node-1.log", "livekit-node-2.log", "redis.log"
    ]
    print(json.dumps({"run_s": round(took, 1), "placements": placements}, indent=2))


HOLD = '''
import json, threading

def test_hold_cluster(livekit_server, request):
    from pytest_livekit.plugin import SERVER_KEY

    cluster = request.config.stash[SERVER_KEY]
    pids = [n.pid for n in cluster.nodes] + [cluster.redis.pid]
    print("CLUSTER=" + json.dumps({"pids": pids, "config": str(cluster.redis.config_path)}), flush=True)
    threading.Event().wait(60)  # held until the outer test sends Ctrl-C
'''




def test_ctrl_c_stops_every_node_and_the_redis(tmp_path: Path, server_binary: Path) -> None:
    import signal
    import threading

    (tmp_path / "test_hold.py").write_text(HOLD)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--livekit-server=cluster",
         f"--livekit-server-binary={server_binary}", "test_hold.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    noted = None
    guard = threading.Timer(90, proc.kill)  # bounds the blocking read below
    guard.start()
    try:
        for line in proc.stdout:
            if "CLUSTER=" in line:
                noted = json.loads(line.split("CLUSTER=", 1)[1])
                break
    finally:
        guard.cancel()
    if noted is None:
        proc.kill()
        pytest.fail(f"the inner run reported no cluster:\n{proc.communicate()[0]}")
    assert len(noted["pids"]) == 4 and all(os.path.exists(f"/proc/{pid}") for pid in noted["pids"])
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert all(process_gone(pid, 15) for pid in noted["pids"]), out
    took = time.monotonic() - started
    assert "KeyboardInterrupt" in out
    assert not Path(noted["config"]).exists(), "the Redis password's file outlived the run"
    print(f"pytest and the cluster ended {took:.2f} s after Ctrl-C")
