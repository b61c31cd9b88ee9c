"""The offline network guard: an agent under test that tries to leave the machine fails its test.

In ``offline`` mode every cloud provider of the agent is replaced by a double
(:mod:`pytest_livekit.agent.substitution`). A part the substitution did not recognise would still
try its service: this guard makes that attempt fail at once, and tells the test which component
(STT, LLM, TTS, ...) tried which host, instead of the call silently waiting on a timeout or, on
a machine with a network, silently using a paid service.

It works at two levels:

* ``asyncio``'s name resolution (``loop.getaddrinfo``, what aiohttp, httpx and websockets use):
  it runs in the provider's task, so the stack names the component;
* a CPython audit hook on ``socket.getaddrinfo`` / ``socket.connect``: the backstop for anything
  else (threads, blocking clients), named from the stack when possible.

Allowed: loopback (``127.0.0.0/8``, ``::1``, ``localhost``), Unix sockets, and the hosts the
test itself uses (the livekit-server's host, addresses of the test's own network namespace).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["BlockedConnection", "NetworkGuard", "component_of_stack", "guard"]


@dataclass(frozen=True)
class BlockedConnection:
    """One attempt to leave the machine that the guard stopped."""

    host: str
    """The host name or address the agent tried."""
    port: int | None
    """The port, when known."""
    component: str
    """What tried, e.g. ``STT (livekit.plugins.deepgram)``; ``unknown component`` if not found."""
    room: str | None
    """The call's room, when the attempt ran inside a livekit-agents job."""

    def message(self) -> str:
        """The failure text a test shows."""
        port = f":{self.port}" if self.port else ""
        return (
            f"the agent's {self.component} tried to reach {self.host}{port} in offline mode. "
            "Nothing left the machine.\nHint: this provider was not replaced by an offline double; "
            "run with --livekit-providers=real (or @pytest.mark.livekit(providers='real')) to use "
            "it for real, or report the provider so the substitution learns it."
        )


class _Blocked(OSError):
    """Raised into the agent's code where it tried to connect (looks like an unreachable network)."""


class NetworkGuard:
    """Block and report connections outside loopback and the allowed hosts (process-wide)."""

    def __init__(self) -> None:
        self.allowed_hosts: set[str] = {"localhost", "localhost.localdomain", "ip6-localhost"}
        self.blocked: list[BlockedConnection] = []
        self._active = threading.Event()
        self._installed = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[BlockedConnection], None]] = []
        self._local = threading.local()

    # -- switching -------------------------------------------------------------------------

    def activate(self, allowed_hosts: Iterable[str] = ()) -> None:
        """Start blocking (installs the hooks once per process).

        Args:
            allowed_hosts: Extra hosts the test itself uses (e.g. an external server's host).
        """
        self.allowed_hosts.update(h.lower() for h in allowed_hosts if h)
        with self._lock:
            if not self._installed:
                sys.addaudithook(self._audit)  # cannot be removed: it checks _active instead
                _patch_loop_getaddrinfo(self)
                self._installed = True
        self._active.set()

    def deactivate(self) -> None:
        """Stop blocking (the hooks stay and pass everything through)."""
        self._active.clear()

    @property
    def active(self) -> bool:
        """Whether connections are being checked."""
        return self._active.is_set()

    def on_blocked(self, callback: Callable[[BlockedConnection], None]) -> Callable[[], None]:
        """Call ``callback(attempt)`` (from the thread that tried) on each blocked attempt.

        Returns:
            A function that unregisters it.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    # -- checks ------------------------------------------------------------------------------

    def is_allowed(self, host: Any) -> bool:
        """Whether ``host`` (name, address, or None) is loopback or an allowed host."""
        if host is None:
            return True  # getaddrinfo(None, port): the local wildcard
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        text = str(host).strip("[]").split("%")[0].lower()
        if not text or text in self.allowed_hosts:
            return True
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False  # a name other than localhost: resolving it is already a network use
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
        return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)

    def check(self, host: Any, port: Any, frame: FrameType | None) -> None:
        """Raise (and report) if ``host`` is not allowed while the guard is active."""
        if not self._active.is_set() or self.is_allowed(host):
            return
        name = host.decode() if isinstance(host, bytes) else str(host)
        if getattr(self._local, "reporting", False):
            # a listener's own attempt: blocked too, but not reported (no recursion into listeners)
            raise _Blocked(errno.ENETUNREACH, f"pytest-livekit offline mode: {name} blocked (in a listener)")
        component = component_of_stack(frame)
        if component == "unknown component":
            component = component_of_host(name)
        attempt = BlockedConnection(
            host=name,
            port=port if isinstance(port, int) else _int_or_none(port),
            component=component,
            room=_room_name(),
        )
        self._local.reporting = True
        try:
            self.blocked.append(attempt)
            for callback in list(self._listeners):
                callback(attempt)
        finally:
            self._local.reporting = False
        raise _Blocked(errno.ENETUNREACH, f"pytest-livekit offline mode: {attempt.message()}")

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._active.is_set():
            return
        if event == "socket.getaddrinfo":
            self.check(args[0], args[1], sys._getframe(1))
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):  # sendto: UDP, no connect
            sock, address = args[0], args[1]
            family = getattr(sock, "family", None)
            if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
                self.check(address[0], address[1] if len(address) > 1 else None, sys._getframe(1))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _patch_loop_getaddrinfo(g: NetworkGuard) -> None:
    """Check names where asyncio resolves them: in the provider's own task, whose stack says who."""
    original = asyncio.base_events.BaseEventLoop.getaddrinfo

    @functools.wraps(original)
    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        g.check(host, port, sys._getframe(0))
        return await original(self, host, port, *args, **kwargs)

    asyncio.base_events.BaseEventLoop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
    _patch_aiohttp(g)


def _patch_aiohttp(g: NetworkGuard) -> None:
    """Aiohttp (the client of livekit's plugins) resolves names in a task of its own, whose stack
    no longer shows the provider: check in the requesting task, before it hands over.
    """
    try:
        from aiohttp import connector
    except ImportError:
        return
    original = connector.TCPConnector._resolve_host  # noqa: SLF001 - the one place names resolve

    @functools.wraps(original)
    async def _resolve_host(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        g.check(host, port, sys._getframe(0))
        return await original(self, host, port, *args, **kwargs)

    connector.TCPConnector._resolve_host = _resolve_host  # type: ignore[method-assign]


_KINDS = (
    ("stt", "STT"),
    ("tts", "TTS"),
    ("realtime", "realtime model"),
    ("llm", "LLM"),
    ("eot", "turn detector"),
    ("turn_detector", "turn detector"),
    ("interruption", "interruption detector"),
    ("noise_cancellation", "noise filter"),
)


def component_of_stack(frame: FrameType | None) -> str:
    """Name the component on the stack: the first frame running on a provider object (an STT,
    TTS, LLM or realtime model, whatever package it comes from), else the first frame of a
    ``livekit.plugins.*`` or ``livekit.agents.inference`` module.
    """
    fallback = "unknown component"
    while frame is not None:
        module = frame.f_globals.get("__name__", "") or ""
        owner = frame.f_locals.get("self")
        kind = _kind_of(owner, "") if owner is not None else "provider"
        if kind != "provider":
            return f"{kind} ({type(owner).__module__}.{type(owner).__qualname__})"
        if fallback == "unknown component" and (
            module.startswith("livekit.plugins.") or module.startswith("livekit.agents.inference")
        ):
            fallback = f"{_kind_of(None, module)} ({'.'.join(module.split('.')[:3])})"
        frame = frame.f_back
    return fallback


#: Services the providers of livekit's plugins call, for naming a blocked attempt whose stack
#: no longer shows the caller (a connection opened in a task of its own, e.g. ``wait_for``).
KNOWN_HOSTS = (
    ("livekit.cloud", "LiveKit Cloud model (inference, turn detector or adaptive interruption)"),
    ("openai.com", "OpenAI provider (LLM, STT, TTS or realtime)"),
    ("deepgram.com", "Deepgram provider (STT or TTS)"),
    ("cartesia.ai", "Cartesia provider (TTS or STT)"),
    ("elevenlabs.io", "ElevenLabs provider (TTS or STT)"),
    ("assemblyai.com", "AssemblyAI provider (STT)"),
    ("googleapis.com", "Google provider (STT, TTS or LLM)"),
    ("anthropic.com", "Anthropic provider (LLM)"),
    ("groq.com", "Groq provider (LLM or STT)"),
    ("huggingface.co", "model download (Hugging Face hub)"),
)


def component_of_host(host: str) -> str:
    """Name the component from the service it tried, when the stack could not say."""
    host = host.lower().rstrip(".")
    for suffix, component in KNOWN_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return component
    return "unknown component"


def _kind_of(obj: Any, module: str) -> str:
    with _suppress():
        from livekit.agents import llm, stt, tts

        checks: tuple[tuple[tuple[type, ...], str], ...] = (
            ((stt.STT, stt.SpeechStream), "STT"),
            ((tts.TTS, tts.SynthesizeStream, tts.ChunkedStream), "TTS"),
            ((llm.RealtimeModel, llm.RealtimeSession), "realtime model"),
            ((llm.LLM, llm.LLMStream), "LLM"),
        )
        for classes, name in checks:
            if obj is not None and isinstance(obj, classes):
                return name
    parts = module.split(".")
    for part in reversed(parts):
        for key, name in _KINDS:
            if key in part:
                return name
    return "provider"


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _room_name() -> str | None:
    from pytest_livekit.agent.substitution import current_room_name

    return current_room_name()


guard = NetworkGuard()
"""The process's guard (one per process: the hooks are process-wide)."""
