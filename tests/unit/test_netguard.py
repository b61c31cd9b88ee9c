"""The offline network guard: attempts to leave the machine fail at once, naming who tried.

Network rule of these tests: they talk to loopback only. Every attempt at another host below is
one the guard blocks before anything is sent (before a name lookup, before a SYN or a datagram);
run them inside the private network namespace so that even a guard bug could not send anything::

    scripts/netns-run python3 -m pytest tests/unit/test_netguard.py

Each test uses a fresh :class:`NetworkGuard` where it can. Its hooks are process-wide and cannot
be removed (a deactivated guard passes everything through), so the module's own ``guard`` is
checked to be deactivated after every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, stt, tts
from livekit.agents.testing import fake_job_context
from livekit.agents.types import NotGivenOr
from livekit.agents.utils import AudioBuffer

from pytest_livekit.agent import substitution
from pytest_livekit.agent.netguard import (
    BlockedConnection,
    NetworkGuard,
    component_of_host,
    component_of_stack,
    guard,
)

#: Never resolves anywhere (RFC 2606), and the guard stops it before any lookup anyway.
BLOCKED_HOST = "blocked.example"
#: TEST-NET-1 (RFC 5737): not routed anywhere.
BLOCKED_ADDRESS = "192.0.2.1"


class FakeSTT(stt.STT[Literal["metrics_collected", "error"]]):
    """A provider defined here (not in a plugin package): named from the stack by its class."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError

    def connect(self, g: NetworkGuard, host: str) -> None:
        _open_connection(g, host)  # a helper without ``self``: the walk goes on up the stack

    async def resolve(self, host: str) -> Any:
        return await asyncio.get_running_loop().getaddrinfo(host, 443)

    async def fetch(self, url: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return await response.text()


class FakeTTS(tts.TTS[Literal["metrics_collected", "error"]]):
    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=16000, num_channels=1)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> Any:
        raise NotImplementedError

    def connect(self, g: NetworkGuard, host: str) -> None:
        g.check(host, 443, sys._getframe(0))


def _open_connection(g: NetworkGuard, host: str) -> None:
    g.check(host, 443, sys._getframe(0))


@pytest.fixture(autouse=True)
def module_guard_stays_off() -> Iterator[None]:
    """The process's guard is off after every test (whatever the test did with it)."""
    saved = set(guard.allowed_hosts)
    try:
        yield
    finally:
        guard.deactivate()
        guard.allowed_hosts = saved
    assert not guard.active


class RecordingGuard(NetworkGuard):
    """A guard with a listener that keeps what it was told, in order (``heard``)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[BlockedConnection] = []
        self.on_blocked(self.heard.append)


@pytest.fixture
def g() -> Iterator[RecordingGuard]:
    """A fresh, active guard with a recording listener (``g.heard``); deactivated after the test."""
    fresh = RecordingGuard()
    fresh.activate()
    try:
        yield fresh
    finally:
        fresh.deactivate()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Name lookups that reach the resolver (asyncio's executor calls ``socket.getaddrinfo``)."""
    seen: list[tuple[Any, ...]] = []

    def recording_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        seen.append((host, port))
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"a lookup of {host!r} reached the resolver")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    return seen


@contextlib.contextmanager
def _listening_socket(family: int = socket.AF_INET, address: Any = ("127.0.0.1", 0)) -> Iterator[Any]:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind(address)
        server.listen()
        yield server.getsockname()


# -- is_allowed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("[::1]", True),  # as in a URL
        ("localhost", True),
        ("LocalHost", True),
        ("ip6-localhost", True),
        (b"127.0.0.1", True),
        (None, True),  # getaddrinfo(None, port): the local wildcard
        ("", True),
        ("0.0.0.0", True),
        ("livekit.test", True),  # the test's own server host (allowed below)
        ("10.0.0.1", False),
        (BLOCKED_ADDRESS, False),
        ("2001:db8::1", False),
        ("fe80::1%eth0", False),
        ("api.deepgram.com", False),
        ("localhost.attacker.example", False),
        (b"api.openai.com", False),
    ],
)
def test_is_allowed(host: Any, allowed: bool) -> None:
    fresh = NetworkGuard()
    fresh.allowed_hosts.add("livekit.test")
    assert fresh.is_allowed(host) is allowed


def test_activate_adds_the_tests_own_hosts(g: NetworkGuard) -> None:
    assert not g.is_allowed("livekit.test")
    g.activate(["livekit.test", ""])
    assert g.is_allowed("livekit.test")
    assert "" not in g.allowed_hosts
    g.check("livekit.test", 7880, None)  # no error
    assert g.blocked == []


# -- check -----------------------------------------------------------------------------------


def test_an_inactive_guard_lets_everything_through() -> None:
    fresh = NetworkGuard()
    assert not fresh.active
    fresh.check("api.deepgram.com", 443, sys._getframe(0))  # no OSError: let through
    assert fresh.blocked == []


def test_check_blocks_and_names_the_stt_from_the_stack(g: RecordingGuard) -> None:
    with pytest.raises(OSError) as excinfo:
        FakeSTT().connect(g, "api.vendor.example")

    assert excinfo.value.errno == errno.ENETUNREACH
    assert "offline mode" in str(excinfo.value)
    assert "api.vendor.example:443" in str(excinfo.value)
    expected = BlockedConnection(
        host="api.vendor.example", port=443, component=f"STT ({__name__}.FakeSTT)", room=None
    )
    assert g.blocked == [expected]
    assert g.heard == [expected]
    assert expected.message().startswith(
        f"the agent's STT ({__name__}.FakeSTT) tried to reach api.vendor.example:443"
    )


def test_check_names_a_tts_from_the_stack(g: NetworkGuard) -> None:
    with pytest.raises(OSError):
        FakeTTS().connect(g, "api.vendor.example")
    assert g.blocked[0].component == f"TTS ({__name__}.FakeTTS)"


def test_a_plugin_modules_frame_names_the_component() -> None:
    namespace: dict[str, Any] = {"__name__": "livekit.plugins.fakevendor.tts", "sys": sys}
    exec("def here():\n    return sys._getframe(0)\n", namespace)  # code "from" a plugin module
    assert component_of_stack(namespace["here"]()) == "TTS (livekit.plugins.fakevendor)"
    assert component_of_stack(sys._getframe(0)) == "unknown component"
    assert component_of_stack(None) == "unknown component"


@pytest.mark.parametrize(
    ("host", "component"),
    [
        ("api.deepgram.com", "Deepgram provider (STT or TTS)"),
        (
            "agent-gateway.livekit.cloud",
            "LiveKit Cloud model (inference, turn detector or adaptive interruption)",
        ),
        ("API.OpenAI.com.", "OpenAI provider (LLM, STT, TTS or realtime)"),
        ("speech.googleapis.com", "Google provider (STT, TTS or LLM)"),
        ("huggingface.co", "model download (Hugging Face hub)"),
        ("deepgram.com.attacker.example", "unknown component"),
        ("notdeepgram.com", "unknown component"),
        (BLOCKED_ADDRESS, "unknown component"),
    ],
)
def test_component_of_host(host: str, component: str) -> None:
    assert component_of_host(host) == component


@pytest.mark.parametrize(
    ("host", "component"),
    [
        ("api.deepgram.com", "Deepgram provider (STT or TTS)"),
        (
            "agent-gateway.livekit.cloud",
            "LiveKit Cloud model (inference, turn detector or adaptive interruption)",
        ),
        (BLOCKED_HOST, "unknown component"),
    ],
)
def test_check_names_the_service_when_the_stack_cannot(g: NetworkGuard, host: str, component: str) -> None:
    with pytest.raises(OSError):
        g.check(host, 443, sys._getframe(0))  # this test's stack has no provider on it
    assert g.blocked == [BlockedConnection(host=host, port=443, component=component, room=None)]
    assert f"the agent's {component} tried to reach {host}:443" in g.blocked[0].message()


def test_check_reads_bytes_hosts_and_text_ports(g: NetworkGuard) -> None:
    with pytest.raises(OSError):
        g.check(b"api.deepgram.com", "443", None)
    with pytest.raises(OSError):
        g.check("api.deepgram.com", "https", None)
    assert [(b.host, b.port) for b in g.blocked] == [("api.deepgram.com", 443), ("api.deepgram.com", None)]
    assert "api.deepgram.com in offline mode" in g.blocked[1].message()  # no ":port"


async def test_an_attempt_in_a_job_names_its_room(g: NetworkGuard) -> None:
    with fake_job_context() as ctx:
        try:
            with pytest.raises(OSError):
                FakeSTT().connect(g, "api.deepgram.com")
        finally:
            ctx._tempdir.cleanup()
    assert g.blocked[0].room == "fake-room"


def test_a_listeners_own_attempt_is_blocked_but_not_reported(g: NetworkGuard) -> None:
    inside: list[OSError] = []

    def chatty_listener(attempt: BlockedConnection) -> None:
        try:
            g.check("telemetry.example", 443, None)  # e.g. a log handler that ships the line
        except OSError as e:
            inside.append(e)

    g.on_blocked(chatty_listener)
    with pytest.raises(OSError):
        g.check(BLOCKED_HOST, 80, None)

    assert len(inside) == 1 and inside[0].errno == errno.ENETUNREACH
    assert [b.host for b in g.blocked] == [BLOCKED_HOST]  # once: no recursion
    g.check("127.0.0.1", 80, None)  # the guard is not left in its "reporting" state


def test_on_blocked_returns_an_unregister_function(g: RecordingGuard) -> None:
    extra: list[BlockedConnection] = []
    stop = g.on_blocked(extra.append)
    stop()
    stop()  # twice is harmless
    with pytest.raises(OSError):
        g.check(BLOCKED_HOST, 80, None)
    assert extra == []
    assert len(g.heard) == 1


def test_a_deactivated_guards_hooks_pass_everything_through(g: NetworkGuard) -> None:
    g.deactivate()
    assert not g.active
    g.check(BLOCKED_HOST, 80, None)  # no OSError: let through
    # the hooks stay installed, and do nothing (no real lookup is made here: called directly)
    g._audit("socket.getaddrinfo", (BLOCKED_HOST, 80, 0, 0, 0))
    assert g.blocked == []
    g.activate()
    assert g.active
    with pytest.raises(OSError):
        g._audit("socket.getaddrinfo", (BLOCKED_HOST, 80, 0, 0, 0))


# -- asyncio's name resolution ---------------------------------------------------------------


async def test_loop_getaddrinfo_is_blocked_before_any_lookup(
    g: NetworkGuard, lookups: list[tuple[Any, ...]]
) -> None:
    loop = asyncio.get_running_loop()

    with pytest.raises(OSError, match="offline mode"):
        await loop.getaddrinfo("api.deepgram.com", 443)

    assert lookups == []  # the guard raised before asyncio handed the name to the resolver
    assert g.blocked == [
        BlockedConnection(
            host="api.deepgram.com", port=443, component="Deepgram provider (STT or TTS)", room=None
        )
    ]
    # loopback goes through to the resolver
    assert await loop.getaddrinfo("127.0.0.1", 80)
    assert await loop.getaddrinfo("localhost", 80)
    assert lookups == [("127.0.0.1", 80), ("localhost", 80)]


async def test_loop_getaddrinfo_in_a_providers_task_names_the_provider(
    g: NetworkGuard, lookups: list[tuple[Any, ...]]
) -> None:
    with pytest.raises(OSError):
        await asyncio.create_task(FakeSTT().resolve("api.speech-vendor.example"))
    assert lookups == []
    assert g.blocked[0].component == f"STT ({__name__}.FakeSTT)"
    assert g.blocked[0].host == "api.speech-vendor.example"


async def test_aiohttp_requests_are_blocked_in_the_requesting_task(
    g: NetworkGuard, lookups: list[tuple[Any, ...]]
) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
        await FakeSTT().fetch("https://api.deepgram.com/v1/listen")

    assert isinstance(excinfo.value, OSError)
    assert "offline mode" in str(excinfo.value.os_error)
    assert lookups == []  # aiohttp never resolved the name
    [attempt] = g.blocked
    assert attempt.host == "api.deepgram.com"
    assert attempt.port == 443
    assert attempt.component == f"STT ({__name__}.FakeSTT)"


async def test_aiohttp_to_loopback_still_works(g: NetworkGuard) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="local")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert await FakeSTT().fetch(f"http://127.0.0.1:{port}/") == "local"
    finally:
        await runner.cleanup()
    assert g.blocked == []


# -- the audit hook (threads, blocking clients) ----------------------------------------------


def test_blocking_getaddrinfo_is_blocked(g: NetworkGuard) -> None:
    with pytest.raises(OSError, match="offline mode"):
        socket.getaddrinfo(BLOCKED_HOST, 80)
    assert g.blocked == [
        BlockedConnection(host=BLOCKED_HOST, port=80, component="unknown component", room=None)
    ]
    assert socket.getaddrinfo("127.0.0.1", 80)  # loopback resolves


async def test_getaddrinfo_in_an_executor_thread_is_blocked(g: NetworkGuard) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(OSError, match="offline mode"):
        await loop.run_in_executor(None, socket.getaddrinfo, "api.cartesia.ai", 443)
    assert g.blocked[0].component == "Cartesia provider (TTS or STT)"


def test_connect_to_another_address_is_blocked_before_the_syn(g: NetworkGuard) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match="offline mode"),
    ):
        sock.connect((BLOCKED_ADDRESS, 443))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match="offline mode"),
    ):
        sock.connect_ex((BLOCKED_ADDRESS, 443))
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match="offline mode"),
    ):
        sock.connect(("2001:db8::1", 443, 0, 0))
    assert [(b.host, b.port) for b in g.blocked] == [(BLOCKED_ADDRESS, 443)] * 2 + [("2001:db8::1", 443)]


def test_udp_datagrams_to_another_address_are_blocked(g: NetworkGuard) -> None:
    # e.g. a DNS client library asking a name server directly: no getaddrinfo, no connect
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError, match="offline mode"):
            sock.sendto(b"query", (BLOCKED_ADDRESS, 53))
        with pytest.raises(OSError, match="offline mode"):
            sock.sendmsg([b"query"], [], 0, (BLOCKED_ADDRESS, 53))
    assert [(b.host, b.port) for b in g.blocked] == [(BLOCKED_ADDRESS, 53)] * 2


def test_udp_on_loopback_is_allowed(g: NetworkGuard) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.sendto(b"ping", server.getsockname())
        client.sendmsg([b"pong"], [], 0, server.getsockname())
        assert server.recv(16) == b"ping"
        assert server.recv(16) == b"pong"
    assert g.blocked == []


def test_create_connection_to_loopback_is_allowed(g: NetworkGuard) -> None:
    with _listening_socket() as (host, port):
        with socket.create_connection((host, port), timeout=5) as conn:
            assert conn.getpeername() == ("127.0.0.1", port)
    assert g.blocked == []


def test_connect_to_ipv6_loopback_is_allowed(g: NetworkGuard) -> None:
    try:
        listening = _listening_socket(socket.AF_INET6, ("::1", 0))
        address = listening.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as client:
            client.connect(address)
    finally:
        listening.__exit__(None, None, None)
    assert g.blocked == []


def test_unix_sockets_are_allowed(g: NetworkGuard, tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    with _listening_socket(socket.AF_UNIX, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
    assert g.blocked == []


# -- the process's guard, as offline calls use it ---------------------------------------------


def test_the_process_guard_reports_to_the_calls_watchers() -> None:
    heard: list[str] = []
    stop_watching = substitution.watch_room("room-netguard", heard.append)
    stop_listening = guard.on_blocked(
        lambda attempt: substitution.report_violation(attempt.message(), attempt.room)
    )
    guard.activate(["livekit.test"])
    try:
        with pytest.raises(OSError):
            socket.getaddrinfo("api.elevenlabs.io", 443)
        socket.getaddrinfo("127.0.0.1", 7880)  # the server on loopback is fine
    finally:
        guard.deactivate()
        stop_listening()
        stop_watching()
        substitution.unregister_plan("room-netguard")
    # one report per listener of the process's guard (offline calls earlier in the run add theirs)
    assert heard and len(set(heard)) == 1
    message = heard[0]
    assert "ElevenLabs provider (TTS or STT) tried to reach api.elevenlabs.io:443 in offline mode" in message
    assert "Nothing left the machine" in message
