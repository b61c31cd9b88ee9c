"""Unit tests of the pure parts of :mod:`pytest_livekit.server.binary`: binary discovery, secret
redaction, free-port handling and the generated server config. No server process is started."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_livekit.errors import PortInUseError, ServerBinaryNotFoundError
from pytest_livekit.server.binary import (
    BINARY_ENV_VAR,
    CACHE_ENV_VAR,
    DEFAULT_SERVER_VERSION,
    LivekitServer,
    ServerPorts,
    _check_port_free,
    _PortFactory,
    cached_binary_name,
    find_server_binary,
    free_port,
    redact,
)


@dataclass
class _Env:
    """Folders of an isolated discovery environment."""

    tmp: Path
    path_dir: Path
    project_cache: Path
    user_cache: Path


def _make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'livekit-server version 0.0.0'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Env]:
    """Empty PATH, no binary env var, caches in tmp: nothing on the machine can be found."""
    path_dir = tmp_path / "empty-bin"
    path_dir.mkdir()
    project_cache = tmp_path / "project-cache"
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("PATH", str(path_dir))
    monkeypatch.delenv(BINARY_ENV_VAR, raising=False)
    monkeypatch.setenv(CACHE_ENV_VAR, str(project_cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    yield _Env(tmp_path, path_dir, project_cache, xdg / "pytest-livekit")


# -- find_server_binary ------------------------------------------------------------------------
def test_explicit_missing_path_raises_with_path(env: _Env) -> None:
    missing = env.tmp / "nowhere" / "livekit-server"
    with pytest.raises(ServerBinaryNotFoundError) as info:
        find_server_binary(missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert "does not exist or is not executable" in msg
    assert "Hint" in msg


def test_explicit_non_executable_file_raises(env: _Env) -> None:
    plain = env.tmp / "livekit-server"
    plain.write_text("not a program")
    plain.chmod(0o644)
    with pytest.raises(ServerBinaryNotFoundError, match="not executable"):
        find_server_binary(plain)


def test_explicit_executable_wins_over_env(env: _Env, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _make_executable(env.tmp / "a" / "livekit-server")
    monkeypatch.setenv(BINARY_ENV_VAR, str(_make_executable(env.tmp / "b" / "livekit-server")))
    assert find_server_binary(str(explicit)) == explicit.resolve()


def test_env_var_executable_is_returned(env: _Env, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _make_executable(env.tmp / "tools" / "my-livekit")
    _make_executable(env.path_dir / "livekit-server")  # lower priority than the env var
    monkeypatch.setenv(BINARY_ENV_VAR, str(binary))
    assert find_server_binary() == binary.resolve()


def test_path_lookup(env: _Env) -> None:
    on_path = _make_executable(env.path_dir / "livekit-server")
    assert find_server_binary() == on_path.resolve()


def test_project_cache_then_user_cache(env: _Env) -> None:
    name = cached_binary_name()
    assert DEFAULT_SERVER_VERSION in name
    user = _make_executable(env.user_cache / "bin" / name)
    assert find_server_binary() == user.resolve()
    project = _make_executable(env.project_cache / "bin" / name)
    assert find_server_binary() == project.resolve()


def test_cached_binary_of_other_version_is_not_used(env: _Env) -> None:
    _make_executable(env.project_cache / "bin" / cached_binary_name("0.0.1"))
    with pytest.raises(ServerBinaryNotFoundError):
        find_server_binary()


def test_nothing_found_lists_places_and_three_ways(env: _Env) -> None:
    with pytest.raises(ServerBinaryNotFoundError) as info:
        find_server_binary()
    msg = str(info.value)
    assert "install-server" in msg
    assert "PATH" in msg
    assert "--livekit-server-binary" in msg
    assert "1." in msg and "2." in msg and "3." in msg
    assert f"${BINARY_ENV_VAR} (unset)" in msg
    assert str(env.project_cache / "bin" / cached_binary_name()) in msg
    assert str(env.user_cache / "bin" / cached_binary_name()) in msg
    assert DEFAULT_SERVER_VERSION in msg


def test_env_var_pointing_at_non_executable_is_reported(
    env: _Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = env.tmp / "not-there"
    monkeypatch.setenv(BINARY_ENV_VAR, str(bogus))
    with pytest.raises(ServerBinaryNotFoundError) as info:
        find_server_binary()
    assert f"{BINARY_ENV_VAR}={bogus} (not an executable file)" in str(info.value)


# -- redact ------------------------------------------------------------------------------------
def test_redact_replaces_every_occurrence_of_every_secret() -> None:
    text = "key=s3cr3t-one other=TOKEN2-abc again s3cr3t-one"
    assert redact(text, ["s3cr3t-one", "TOKEN2-abc"]) == "key=[redacted] other=[redacted] again [redacted]"


def test_redact_ignores_empty_secrets_and_leaves_other_text() -> None:
    assert redact("nothing secret here", ["", "absent"]) == "nothing secret here"
    assert redact("", ["x"]) == ""


def test_redact_overlapping_secrets_leaks_nothing() -> None:
    out = redact("token abcdefgh-ijkl", ["abcdefgh", "abcdefgh-ijkl"])
    assert "ijkl" not in out


def test_redact_removes_jwt_shaped_strings_from_log_tails() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYWxsZXIifQ.c2lnbmF0dXJlLXZhbHVl"
    assert redact(f"connect token={token} ok", []) == "connect token=[redacted] ok"


# -- free ports --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_free_port_never_repeats(kind: int) -> None:
    ports = [free_port("127.0.0.1", kind) for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p <= 65535 for p in ports)
    assert set(ports) <= free_port.produced


def test_port_factory_skips_ports_it_already_produced() -> None:
    factory = _PortFactory()
    first = factory("127.0.0.1", socket.SOCK_STREAM)
    assert factory.produced == {first}
    more = {factory("127.0.0.1", socket.SOCK_STREAM) for _ in range(20)}
    assert first not in more
    assert len(more) == 20


def test_free_port_is_bindable() -> None:
    port = free_port("127.0.0.1", socket.SOCK_STREAM)
    _check_port_free("127.0.0.1", port, socket.SOCK_STREAM, "HTTP")


@pytest.mark.parametrize(
    ("kind", "proto"), [(socket.SOCK_STREAM, "tcp"), (socket.SOCK_DGRAM, "udp")]
)
def test_check_port_free_raises_when_port_is_held(kind: int, proto: str) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError) as info:
            _check_port_free("127.0.0.1", port, kind, "HTTP")
    msg = str(info.value)
    assert "already in use" in msg
    assert "Hint" in msg
    assert f"HTTP port {port}/{proto} on 127.0.0.1" in msg
    assert info.value.__cause__ is None


# -- LivekitServer.config() --------------------------------------------------------------------
def _server(**kwargs: object) -> LivekitServer:
    server = LivekitServer("/nonexistent/livekit-server", **kwargs)  # type: ignore[arg-type]
    server.ports = ServerPorts(http=17880, rtc_udp=17881)
    return server


def test_config_is_loopback_only() -> None:
    conf = _server().config()
    assert conf["bind_addresses"] == ["127.0.0.1"]
    assert conf["port"] == 17880
    assert conf["rtc"]["udp_port"] == 17881
    assert conf["rtc"]["tcp_port"] == 0
    assert conf["rtc"]["use_external_ip"] is False
    assert conf["rtc"]["stun_servers"] == ["127.0.0.1:17881"]
    assert "node_ip" not in conf["rtc"]
    json.dumps(conf)  # it travels as JSON in LIVEKIT_CONFIG


def test_config_secret_is_long_and_per_instance() -> None:
    a, b = _server(), _server()
    conf_a, conf_b = a.config(), b.config()
    assert conf_a["keys"] == {a.api_key: a.api_secret}
    secret_a = conf_a["keys"][a.api_key]
    secret_b = conf_b["keys"][b.api_key]
    assert len(secret_a.encode()) >= 32
    assert len(secret_b.encode()) >= 32
    assert secret_a != secret_b


def test_repr_never_contains_secret() -> None:
    unstarted = LivekitServer("/nonexistent/livekit-server")
    assert unstarted.api_secret not in repr(unstarted)
    assert "not started" in repr(unstarted)
    server = _server()
    text = repr(server) + str(server) + f"{server!r}"
    assert server.api_secret not in text
    assert "ws://127.0.0.1:17880" in text


def test_config_node_ip_and_extra_config_merge() -> None:
    server = _server(
        node_ip="10.1.2.3",
        extra_config={"rtc": {"udp_port": 20000}, "logging": {"level": "debug"}, "region": "test"},
    )
    conf = server.config()
    assert conf["rtc"]["node_ip"] == "10.1.2.3"
    assert conf["rtc"]["ips"] == {"includes": ["10.1.2.3/32"]}
    assert conf["rtc"]["udp_port"] == 20000
    assert conf["rtc"]["tcp_port"] == 0  # shallow merge keeps the other rtc keys
    assert conf["logging"] == {"level": "debug", "pion_level": "error"}
    assert conf["region"] == "test"
    assert conf["bind_addresses"] == ["127.0.0.1"]


def test_behind_the_packet_relay_the_server_runs_turn_on_its_private_address() -> None:
    server = _server(node_ip="10.213.0.1", relay_ip="10.213.0.2")
    server.ports = ServerPorts(http=17880, rtc_udp=17881, turn_udp=17882)
    conf = server.config()
    turn = conf["turn"]
    assert turn["enabled"] is True and turn["udp_port"] == 17882 and turn["tls_port"] == 0
    assert turn["bind_addresses"] == ["10.213.0.1"]  # only the relay's upstream reaches it
    assert turn["allow_restricted_peer_cidrs"] == ["10.213.0.1/32"]  # the SFU, a private address
    assert turn["relay_range_end"] - turn["relay_range_start"] == 199
    assert conf["rtc"]["node_ip"] == "10.213.0.1"
    assert server.relay_addresses == (("10.213.0.2", 17882), ("10.213.0.1", 17882))
    assert "turn" not in _server(node_ip="10.213.0.1").config()
    with pytest.raises(ValueError, match="needs node_ip"):
        LivekitServer("/nonexistent/livekit-server", relay_ip="10.213.0.2")


def test_urls_need_ports() -> None:
    unstarted = LivekitServer("/nonexistent/livekit-server")
    with pytest.raises(RuntimeError, match="not started"):
        _ = unstarted.url
    server = _server()
    assert server.url == "ws://127.0.0.1:17880"
    assert server.http_url == "http://127.0.0.1:17880"
    assert os.fspath(server.binary) == "/nonexistent/livekit-server"
