"""Cluster mode and worker groups without processes: where each call runs, the session's
argument checks, a missing redis-server, and :class:`~pytest_livekit.agent.worker.WorkerGroup`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_livekit.agent.worker import AgentWorker, WorkerGroup, WorkerPool
from pytest_livekit.errors import ConfigError, ServerStartError
from pytest_livekit.server.cluster import call_nodes
from pytest_livekit.session import SERVER_MODES, LivekitSession


def test_call_i_signals_to_node_i_its_room_is_on_the_next_and_workers_on_the_last() -> None:
    assert [call_nodes(i, 3) for i in range(4)] == [(0, 1, 2), (1, 2, 2), (2, 0, 2), (0, 1, 2)]
    assert [call_nodes(i, 2) for i in range(2)] == [(0, 1, 1), (1, 0, 1)]
    # the caller's signalling always reaches another node than the room's
    assert all(s != r for n in range(2, 6) for s, r, _ in (call_nodes(i, n) for i in range(10)))


def test_cluster_is_a_session_server_mode(tmp_path: Path) -> None:
    assert "cluster" in SERVER_MODES
    session = LivekitSession(server="cluster", cluster_nodes=4, agent_workers=2, rootdir=tmp_path)
    assert session.settings.server_mode.value == "cluster"
    assert session.settings.cluster_nodes == 4 and session.settings.agent_workers == 2
    assert session.workers.size == 2


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"server": "cluster", "cluster_nodes": 1}, "a cluster needs at least 2 nodes"),
        ({"agent_workers": 0}, "at least 1 worker process"),
        ({"server": "clustr"}, "Valid values: auto, binary, docker, external, cluster"),
    ],
)
def test_bad_session_arguments(tmp_path: Path, arguments: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        LivekitSession(rootdir=tmp_path, **arguments)  # type: ignore[arg-type]


def test_no_redis_server_says_how_to_install_it_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    session = LivekitSession(server="cluster", rootdir=tmp_path)
    with pytest.raises(ServerStartError, match="apt-get install -y redis-server"):
        session.start()
    assert session.handle is None and session.server is None


@pytest.mark.parametrize(
    ("arguments", "words"),
    [({"packet_relay": "on"}, "livekit_packet_relay = on is not supported"), ({"port": 7880}, "--livekit-port")],
)
def test_what_a_cluster_cannot_do_is_said_before_anything_starts(
    tmp_path: Path, arguments: dict[str, object], words: str
) -> None:
    session = LivekitSession(server="cluster", rootdir=tmp_path, **arguments)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=words):
        session.start()
    assert session.handle is None and session.server is None


def _worker(tmp_path: Path, name: str, i: int) -> AgentWorker:
    return AgentWorker("a:b", agent_name=name, log_path=tmp_path / f"w{i}.log")


def test_a_worker_group_shares_one_agent_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="share one agent name"):
        WorkerGroup([_worker(tmp_path, "x", 0), _worker(tmp_path, "y", 1)])
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerGroup([])


def test_a_worker_group_says_which_member_took_a_room(tmp_path: Path) -> None:
    first, second = _worker(tmp_path, "x", 0), _worker(tmp_path, "x", 1)
    group = WorkerGroup([first, second])
    # livekit-agents' log line when the server offers a worker a job
    second._read_line(b'{"message": "received job request", "room": "call-1", "job_id": "AJ_1", "level": "INFO"}\n')
    assert group.worker_for("call-1") is second and second.worker_for("call-1") is second
    assert group.worker_for("call-2") is None and first.worker_for("call-1") is None
    assert second.jobs == {"call-1": "AJ_1"}
    assert group.agent_name == "x" and group.members == [first, second] and first.members == [first]
    assert group.pid is None and not group.is_running()  # nothing started
    seen: list[tuple[str, str | None]] = []
    remove = group.on_job_error(lambda text, room: seen.append((text, room)))
    first._read_line(b'{"message": "pytest-livekit offline violation: x", "room": "call-3"}\n')
    remove()
    second._read_line(b'{"message": "pytest-livekit offline violation: y", "room": "call-4"}\n')
    assert [room for _, room in seen] == ["call-3"]
    assert len(group.job_errors) == 2


def test_a_pool_of_several_workers_per_agent_makes_groups(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 worker"):
        WorkerPool(cwd=tmp_path, log_dir=tmp_path, workers=0)
    group = WorkerPool(cwd=tmp_path, log_dir=tmp_path, workers=3)._new_worker("a:b", "offline")
    assert isinstance(group, WorkerGroup) and len(group.members) == 3
    assert len({m.log_path for m in group.members}) == 3
    assert len({m.agent_name for m in group.members}) == 1
    single = WorkerPool(cwd=tmp_path, log_dir=tmp_path)._new_worker("a:b", "offline")
    assert isinstance(single, AgentWorker)


def test_where_a_call_ran_is_kept_in_the_record_and_the_trace() -> None:
    from pytest_livekit.call.record import CallRecord
    from pytest_livekit.outputs.trace import build_trace

    where = {"signal_node_id": "ND_a", "room_node_id": "ND_b", "agent_node_id": "ND_c", "nodes": ["ND_a", "ND_b", "ND_c"]}
    record = CallRecord(call_id="c-1", call_type=None, started_at_epoch=0.0, server=dict(where))
    assert CallRecord.from_dict(record.to_dict()).server == where
    assert build_trace(record)["server"] == where
    assert build_trace(CallRecord(call_id="c-2", call_type=None, started_at_epoch=0.0))["server"] == {}  # a single server
