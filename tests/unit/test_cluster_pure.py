"""Unit tests of the pure parts of :mod:`pytest_livekit.server.cluster`: the Redis config, the Redis
wire protocol, node ids from a server log, and each node's config. No process is started."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pytest_livekit.errors import ServerStartError
from pytest_livekit.server.binary import LivekitServer, ServerPorts
from pytest_livekit.server.cluster import (
    LivekitCluster,
    RedisError,
    RedisServer,
    _encode,
    _read_reply,
    find_redis_binary,
    node_id_from_log,
    redis_config_text,
)

_START_LINE = (
    '2026-12-01T10:20:53.030Z\tINFO\tlivekit\tservice/server.go:292\tstarting LiveKit server\t'
    '{"portHttp": 49687, "nodeID": "ND_ygouc2yx2vKK", "nodeIP": "10.213.0.2", "version": "1.13.5"}\n'
)


# -- redis config ------------------------------------------------------------------------------
def test_redis_config_is_loopback_with_a_password_and_no_persistence(tmp_path: Path) -> None:
    text = redis_config_text(host="127.0.0.1", port=6390, password="p" * 43, folder=tmp_path)
    lines = text.splitlines()
    assert "bind 127.0.0.1" in lines and "port 6390" in lines
    assert f'requirepass "{"p" * 43}"' in lines
    assert 'save ""' in lines and "appendonly no" in lines  # nothing written to disk
    assert "protected-mode yes" in lines and "daemonize no" in lines
    assert f'dir "{tmp_path}"' in lines


def test_redis_password_is_random_and_never_shown() -> None:
    a, b = RedisServer(), RedisServer()
    assert a.password != b.password and len(a.password) >= 32
    assert a.password not in repr(a)
    assert a._secrets() == [a.password]


def test_redis_address_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = RedisServer().address


def test_find_redis_binary_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="apt-get install -y redis-server"):
        find_redis_binary(tmp_path / "no-such-redis")


# -- the Redis wire protocol (RESP2) ------------------------------------------------------------
def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert _encode("HGET", "room_node_map", "röom") == (
        b"*3\r\n$4\r\nHGET\r\n$13\r\nroom_node_map\r\n$5\r\nr\xc3\xb6om\r\n"
    )


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b"+OK\r\n", "OK"),
        (b":42\r\n", 42),
        (b"$5\r\nND_ab\r\n", "ND_ab"),
        (b"$-1\r\n", None),
        (b"*2\r\n$4\r\nND_a\r\n$4\r\nND_b\r\n", ["ND_a", "ND_b"]),
        (b"*0\r\n", []),
        (b"*-1\r\n", None),
    ],
)
def test_read_reply(wire: bytes, value: object) -> None:
    assert _read_reply(io.BytesIO(wire)) == value


def test_read_reply_raises_redis_errors_and_broken_connections() -> None:
    with pytest.raises(RedisError, match="NOAUTH"):
        _read_reply(io.BytesIO(b"-NOAUTH Authentication required.\r\n"))
    with pytest.raises(RedisError, match="closed"):
        _read_reply(io.BytesIO(b""))


# -- node ids ----------------------------------------------------------------------------------
def test_node_id_from_the_start_line(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    earlier = "2026-12-01T10:20:53.014Z\tINFO\tlivekit\tredis/redis.go:145\tconnecting to redis\n"
    log.write_text(earlier + _START_LINE)
    assert node_id_from_log(log) == "ND_ygouc2yx2vKK"


def test_node_id_absent_or_unreadable(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("nothing yet\n")
    assert node_id_from_log(log) is None
    assert node_id_from_log(tmp_path / "missing.log") is None


# -- the nodes' config -------------------------------------------------------------------------
def _cluster(**kwargs: object) -> LivekitCluster:
    cluster = LivekitCluster("/bin/true", **kwargs)  # type: ignore[arg-type]
    cluster.redis.port = 6390  # as if started
    return cluster


def test_a_cluster_has_two_nodes_at_least() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        LivekitCluster("/bin/true", nodes=1)


def test_every_node_points_at_the_shared_redis_with_its_password() -> None:
    cluster = _cluster(extra_config={"room": {"empty_timeout": 5}})
    node = LivekitServer(
        cluster.binary, extra_config=cluster.node_config(0), api_secret=cluster.api_secret
    )
    node.ports = ServerPorts(http=17880, rtc_udp=17881)
    conf = node.config()
    assert conf["redis"] == {"address": "127.0.0.1:6390", "password": cluster.redis.password}
    assert conf["keys"] == {cluster.api_key: cluster.api_secret}  # one key and secret per cluster
    assert conf["room"]["empty_timeout"] == 5 and conf["room"]["departure_timeout"] == 2
    assert conf["bind_addresses"] == ["127.0.0.1"] and conf["port"] == 17880


def test_node_index_maps_ids_back() -> None:
    cluster = _cluster()
    cluster.node_ids = ["ND_a", "ND_b", "ND_c"]
    assert cluster.node_index("ND_c") == 2
    assert cluster.node_index("ND_x") is None and cluster.node_index(None) is None


def test_a_server_without_api_secret_keeps_its_random_one() -> None:
    assert LivekitServer("/bin/true").api_secret != LivekitServer("/bin/true").api_secret
    assert LivekitServer("/bin/true", api_secret="s" * 40).api_secret == "s" * 40
    with pytest.raises(ValueError, match="at least 32"):
        LivekitServer("/bin/true", api_secret="short")


def test_node_id_for_url() -> None:
    cluster = _cluster(nodes=2)
    cluster.nodes = [LivekitServer("/bin/true"), LivekitServer("/bin/true")]
    for port, node in zip((17880, 17890), cluster.nodes, strict=True):
        node.ports = ServerPorts(http=port, rtc_udp=port + 1)
    cluster.node_ids = ["ND_a", "ND_b"]
    assert cluster.node_id_for_url("ws://127.0.0.1:17890") == "ND_b"
    assert cluster.node_id_for_url("http://127.0.0.1:17880/") == "ND_a"
    assert cluster.node_id_for_url("ws://127.0.0.1:1") is None
