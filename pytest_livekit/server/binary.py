"""A livekit-server process owned by the test run (binary mode).

:class:`LivekitServer` works without pytest::

    with LivekitServer(find_server_binary()) as server:
        print(server.url)          # ws://127.0.0.1:<free port>

It writes a loopback-only config with free ports, uses a fresh random API secret, waits for real
readiness (``GET /`` answers 200, which livekit-server only does once its node stats are fresh),
keeps the server's log in a file and stops the whole process group on exit. The child also gets
``PR_SET_PDEATHSIG`` so that it dies with the test process even on ``kill -9``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_livekit.errors import (
    PortInUseError,
    ServerBinaryNotFoundError,
    ServerStartError,
    ServerStartTimeoutError,
    ServerUnreachableError,
)
from pytest_livekit.redaction import redact
from pytest_livekit.server.process import (
    ManagedProcess,
    set_parent_death_signal,
    stop_all,
    stop_process_group,
    tail_lines,
)

__all__ = [
    "BINARY_ENV_VAR",
    "CACHE_ENV_VAR",
    "DEFAULT_SERVER_VERSION",
    "LivekitServer",
    "ServerPorts",
    "cached_binary_name",
    "check_reachable",
    "find_server_binary",
    "free_port",
    "project_cache_dir",
    "running_server",
    "server_version",
    "stop_all_servers",
    "user_cache_dir",
    # kept for code that imported them from here; they live in .process and .redaction now
    "redact",
    "set_parent_death_signal",
    "stop_process_group",
    "tail_lines",
]

#: The livekit-server release the plugin is tested against and installs by default.
DEFAULT_SERVER_VERSION = "1.13.5"
#: Environment variable naming a livekit-server binary (highest priority after the CLI/ini option).
BINARY_ENV_VAR = "PYTEST_LIVEKIT_SERVER_BINARY"
#: Environment variable overriding the cache folder used by ``python -m pytest_livekit install-server``.
CACHE_ENV_VAR = "PYTEST_LIVEKIT_CACHE_DIR"

_NOT_FOUND_HINT = """\
No livekit-server binary found. Looked in:
{looked}
Hint: get one in any of these ways:
  1. python -m pytest_livekit install-server      (builds v{version} with Go into .cache/pytest-livekit/bin)
  2. install a release binary and put it on PATH as 'livekit-server' (macOS: brew install livekit)
  3. point the plugin at it: --livekit-server-binary=PATH, ini livekit_server_binary, or ${env}
  or run it in Docker: --livekit-server=docker (image livekit/livekit-server:v{version}),
  or use a server you already run: --livekit-url=ws://127.0.0.1:7880 with LIVEKIT_API_KEY/LIVEKIT_API_SECRET."""


def user_cache_dir() -> Path:
    """The per-user cache shared by every checkout (``$XDG_CACHE_HOME/pytest-livekit``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-livekit"


def project_cache_dir(root: Path | None = None) -> Path:
    """The project-local, git-ignored cache folder (``<root>/.cache/pytest-livekit``)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env)
    return (root or Path.cwd()) / ".cache" / "pytest-livekit"


def cached_binary_name(version: str = DEFAULT_SERVER_VERSION) -> str:
    """File name of a cached server build: the version is part of the name so upgrades rebuild."""
    return f"livekit-server-{version}"


def find_server_binary(
    explicit: str | os.PathLike[str] | None = None,
    *,
    root: Path | None = None,
    version: str = DEFAULT_SERVER_VERSION,
) -> Path:
    """Locate a livekit-server binary.

    Order: ``explicit`` (CLI/ini option), ``$PYTEST_LIVEKIT_SERVER_BINARY``, ``livekit-server`` on
    PATH, the project cache (``<root>/.cache/pytest-livekit/bin``), the user cache.

    Raises:
        ServerBinaryNotFoundError: with every place it looked and the three ways to get one.
    """
    looked: list[str] = []
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        raise ServerBinaryNotFoundError(
            f"livekit-server binary {str(path)!r} (from --livekit-server-binary / livekit_server_binary) "
            "does not exist or is not executable.\n"
            "Hint: fix the path, or drop the option to let the plugin find or build one "
            "(python -m pytest_livekit install-server)."
        )
    env = os.environ.get(BINARY_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        looked.append(f"  ${BINARY_ENV_VAR}={env} (not an executable file)")
    else:
        looked.append(f"  ${BINARY_ENV_VAR} (unset)")
    on_path = shutil.which("livekit-server")
    if on_path:
        return Path(on_path).resolve()
    looked.append("  'livekit-server' on PATH")
    for folder in (project_cache_dir(root) / "bin", user_cache_dir() / "bin"):
        candidate = folder / cached_binary_name(version)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
        looked.append(f"  {candidate}")
    raise ServerBinaryNotFoundError(
        _NOT_FOUND_HINT.format(looked="\n".join(looked), version=version, env=BINARY_ENV_VAR)
    )


def server_version(binary: Path) -> str:
    """Ask a binary for its version (``livekit-server version 1.13.5`` -> ``"1.13.5"``)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=15, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().rsplit(" ", 1)[-1] if out.strip() else "unknown"


#: Starts tried when the server's freshly picked port was taken before it bound it (see
#: :meth:`LivekitServer.start`).
PORT_RACE_ATTEMPTS = 3

#: The server's nice value (where allowed: root or ``CAP_SYS_NICE``). In production the SFU has
#: its own machine; here it shares the CPUs with the agents under test, and a busy agent must not
#: delay the forwarding of the media both sides time (the caller's process runs at real-time
#: priority for the same reason).
SERVER_NICE = -10


class _PortFactory:
    """Hands out free loopback ports, never the same one twice in this process.

    The OS may hand a just-released port to someone else before the server binds it; the
    ``produced`` set at least rules out collisions between our own servers.
    """

    def __init__(self) -> None:
        self.produced: set[int] = set()

    def __call__(self, host: str, kind: int) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in self.produced:
                self.produced.add(port)
                return port
        raise PortInUseError(f"could not find a free port on {host} after 100 tries")


free_port = _PortFactory()


def _check_port_free(host: str, port: int, kind: int, what: str) -> None:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
            raise PortInUseError(
                f"{what} port {port}/{proto} on {host} is already in use ({exc.strerror}).\n"
                f"Hint: drop the fixed port (--livekit-port) so the plugin picks a free one, or stop "
                f"the process holding it (ss -lpn 'sport = :{port}')."
            ) from None


@dataclass(frozen=True)
class ServerPorts:
    """The ports one server instance listens on (all bound to the loopback host)."""

    http: int
    """HTTP / WebSocket signalling / Twirp API port."""
    rtc_udp: int
    """Single UDP port carrying all WebRTC media (ICE UDP mux)."""
    turn_udp: int | None = None
    """The embedded TURN server's UDP port (behind the packet relay only)."""


class LivekitServer(ManagedProcess):
    """A livekit-server subprocess bound to loopback, with a per-instance random API secret.

    Args:
        binary: path of the livekit-server executable.
        host: loopback address to bind and advertise (``127.0.0.1``).
        port: fixed HTTP port, or ``None`` for a free one.
        startup_timeout: seconds to wait for ``GET /`` to answer 200.
        log_path: where the server log goes; a temporary file if ``None``.
        extra_config: dict merged (shallowly per top-level key) over the generated config.
        node_ip: the address the server advertises for media (ICE). ``None`` lets livekit-server
            pick the first non-loopback IPv4, which is what libwebrtc clients can reach: they
            ignore loopback adapters. Run inside ``scripts/netns-run`` to keep that address private.
        relay_ip: enable the embedded TURN server on ``node_ip`` for a
            :class:`~pytest_livekit.conditions.packet_relay.PacketRelay` listening on ``relay_ip`` (see
            :attr:`relay_addresses`); participants that are not shaped connect as usual.
        api_secret: the API secret (default: a fresh random one); the nodes of a
            :class:`~pytest_livekit.server.cluster.LivekitCluster` share one.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
        extra_config: dict[str, Any] | None = None,
        node_ip: str | None = None,
        relay_ip: str | None = None,
        api_secret: str | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        if relay_ip and not node_ip:
            raise ValueError("relay_ip needs node_ip: the address the server's media is bound on")
        self.node_ip = node_ip
        self.relay_ip = relay_ip
        self.binary = Path(binary)
        self.host = host
        self._fixed_port = port
        self._log_path = Path(log_path) if log_path else None
        self._extra_config = extra_config or {}
        self.api_key = "APIpytestlivekit"
        # >= 32 bytes: PyJWT warns (an error under strict filters) below that, and the server logs
        # an error for short secrets in production mode.
        self.api_secret = api_secret or secrets.token_urlsafe(48)
        if len(self.api_secret) < 32:
            raise ValueError("api_secret must be at least 32 characters (PyJWT warns below that)")
        self.ports: ServerPorts | None = None
        self.version = "unknown"
        self._log_file: Any = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._last_answer = "no answer yet"

    def __repr__(self) -> str:  # never show the secret
        return f"<LivekitServer {self.url if self.ports else 'not started'} v{self.version}>"

    # -- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """WebSocket URL for rtc clients and agents (``ws://127.0.0.1:<port>``)."""
        if self.ports is None:
            raise RuntimeError("server not started")
        return f"ws://{self.host}:{self.ports.http}"

    @property
    def http_url(self) -> str:
        """HTTP URL for the server API (``http://127.0.0.1:<port>``)."""
        if self.ports is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.ports.http}"

    @property
    def relay_addresses(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """``(listen, upstream)`` for the packet relay in front of this server's TURN port, or
        ``None``.
        """
        if not self.relay_ip or self.ports is None or not self.node_ip or not self.ports.turn_udp:
            return None
        return (self.relay_ip, self.ports.turn_udp), (self.node_ip, self.ports.turn_udp)

    @property
    def log_path(self) -> Path:
        """Path of the server's log file."""
        if self._log_path is None:
            raise RuntimeError("server not started")
        return self._log_path

    def config(self) -> dict[str, Any]:
        """The config the server is started with (contains the secret: never log it)."""
        assert self.ports is not None
        conf: dict[str, Any] = {
            "port": self.ports.http,
            "bind_addresses": [self.host],
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": "info", "pion_level": "error"},
            "rtc": {
                "udp_port": self.ports.rtc_udp,
                # 0 disables ICE/TCP, which would otherwise listen on every interface.
                "tcp_port": 0,
                "use_external_ip": False,
                "enable_loopback_candidate": True,
                # ICE-lite: the server answers checks and gathers nothing itself. Full ICE would
                # gather server-reflexive candidates from stun_servers on a socket bound to
                # 0.0.0.0, one per peer connection (measured), against "bind to loopback only".
                "use_ice_lite": True,
                # Clients get Google's STUN servers unless this is set; keep their STUN on loopback.
                "stun_servers": [f"{self.host}:{self.ports.rtc_udp}"],
            },
            # Rooms that tests forget still go away; agents leave a room quickly.
            "room": {"empty_timeout": 30, "departure_timeout": 2},
        }
        if self.node_ip:
            conf["rtc"]["node_ip"] = self.node_ip
            conf["rtc"]["ips"] = {"includes": [f"{self.node_ip}/32"]}
        if self.relay_ip and self.node_ip and self.ports.turn_udp:
            # The embedded TURN server, reached through the packet relay (see packet_relay): a
            # participant routed through the relay uses relay-only ICE with the relay's address as
            # its TURN server; TURN then forwards its media to the SFU on node_ip, a private
            # address TURN refuses as a peer unless allowed.
            start = 40_000 + (self.ports.turn_udp % 100) * 200
            conf["turn"] = {
                "enabled": True,
                "udp_port": self.ports.turn_udp,
                "tls_port": 0,
                "bind_addresses": [self.node_ip],
                "relay_range_start": start,
                "relay_range_end": start + 199,
                "allow_restricted_peer_cidrs": [f"{self.node_ip}/32"],
            }
        for key, value in self._extra_config.items():
            if isinstance(value, dict) and isinstance(conf.get(key), dict):
                conf[key] = {**conf[key], **value}
            else:
                conf[key] = value
        return conf

    def _choose_ports(self) -> ServerPorts:
        """Free ports for this instance (the fixed HTTP port if one was given)."""
        return ServerPorts(
            http=self._fixed_port or free_port(self.host, socket.SOCK_STREAM),
            rtc_udp=free_port(self.host, socket.SOCK_DGRAM),
            turn_udp=free_port(self.host, socket.SOCK_DGRAM) if self.relay_ip else None,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    #: Polling an HTTP endpoint of a subprocess: there is no event to wait on.
    poll_interval = 0.05
    #: Its clients (workers, the caller) stop first and leave their rooms cleanly.
    stops_last = True
    #: livekit-server answers ``GET /`` about 100 ms before it counts itself as running, and
    #: ignores a SIGTERM in that window: a server stopped right after its start gets SIGTERM again
    #: every 0.2 s instead of waiting the whole stop timeout for the SIGKILL.
    term_repeat = 0.2

    def start(self) -> LivekitServer:
        """Start the server (unless :meth:`spawn` did) and wait until it is ready; on any failure
        stop it and raise. Returns at once when it is running and ready.

        A port picked free can be taken by another process before the server binds it (the OS
        hands a released port out again, e.g. to a WebRTC client's ephemeral UDP socket; seen
        once in CI): the server then exits with "address already in use", and the start is tried
        again with new ports, :data:`PORT_RACE_ATTEMPTS` times in all.
        """
        for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
            self.spawn()  # nothing to do when it was spawned before (a session's prestart)
            try:
                self.wait_until_ready()
            except ServerStartError as exc:
                if attempt == PORT_RACE_ATTEMPTS or "address already in use" not in str(exc):
                    raise
                continue  # wait_until_ready stopped it; spawn() picks new ports
            return self
        raise AssertionError("unreachable")  # the last attempt returned or raised

    def spawn(self) -> LivekitServer:
        """Start the server process without waiting: :meth:`wait_until_ready` next (a cluster
        starts its nodes together, then waits for each). Binary mode only.
        """
        if self._proc is not None:
            return self
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise ServerBinaryNotFoundError(
                f"{self.binary} is not an executable file.\n"
                "Hint: python -m pytest_livekit install-server"
            )
        if self._fixed_port is not None:
            _check_port_free(self.host, self._fixed_port, socket.SOCK_STREAM, "HTTP")
        self.ports = self._choose_ports()
        self.version = server_version(self.binary)
        if self._log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pytest-livekit-server-")
            self._log_path = Path(self._tmpdir.name) / "livekit-server.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # The config (with the secret) travels in the environment, not argv: argv is world-readable
        # in /proc, the environment is not. Strip LIVEKIT_* so a developer's cloud project settings
        # cannot leak into our server.
        for name in list(env):
            if name.startswith("LIVEKIT_"):
                del env[name]
        env["LIVEKIT_CONFIG"] = json.dumps(self.config())
        self._last_answer = "no answer yet"
        proc = self._spawn(
            [str(self.binary)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            nice=SERVER_NICE,
        )
        # through a reader, not straight into the file: the server logs job tokens (and, on some
        # errors, its key), and every log the plugin writes is redacted by the one rule
        assert proc.stdout is not None
        self._follow_output(proc.stdout, log_to=self._log_path, name="pytest-livekit-server-log")
        return self

    def _check_ready(self) -> bool:
        # a process that died cannot be ready, whatever else may answer on its port
        return self.is_running() and self._answers_ready() is True

    def _answers_ready(self) -> bool | None:
        """One ``GET /``: True on 200, False on another status (livekit-server answers 406 until
        its node stats are fresh), None when nothing answers.
        """
        try:
            with urllib.request.urlopen(self.http_url + "/", timeout=1.0) as resp:
                if resp.status == 200:
                    return True
                self._last_answer = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            self._last_answer = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            self._last_answer = str(getattr(exc, "reason", exc))
            return None
        return False

    def _died_before_ready(self, code: int | None) -> BaseException:
        return ServerStartError(
            f"livekit-server ({self.binary}) exited with code {code} before it was ready.\n"
            f"Last log lines ({self.log_path}):\n{self.log_tail()}\n"
            "Hint: read the log lines above; a port conflict shows as 'address already in "
            "use', a bad config as 'could not parse'."
        )

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return ServerStartTimeoutError(
            f"livekit-server did not answer GET {self.http_url}/ with 200 within "
            f"{timeout:.0f} s (last: {self._last_answer}; process still running, pid "
            f"{self.pid}).\nLast log lines ({self.log_path}):\n{self.log_tail()}\n"
            "Hint: raise --livekit-startup-timeout on a slow machine."
        )

    def _log_source(self) -> Path | None:
        return self._log_path

    def _secrets(self) -> list[str]:
        return [self.api_secret]

    def _release(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup_files(self) -> None:
        """Remove the temporary log folder, if the server made one."""
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def stop_all_servers() -> None:
    """Stop every server (binary or Docker) this process started and has not stopped yet, then
    the Redis of a cluster (cluster mode), which its nodes used until they stopped.
    """
    import sys

    try:
        stop_all(LivekitServer)
    finally:
        cluster = sys.modules.get("pytest_livekit.server.cluster")
        if cluster is not None:
            cluster.stop_all_redis()


def check_reachable(http_url: str, timeout: float = 5.0) -> None:
    """Raise :class:`ServerUnreachableError` unless ``http_url`` answers HTTP at all."""
    try:
        with urllib.request.urlopen(http_url.rstrip("/") + "/", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachableError(
            f"livekit-server at {http_url} is unreachable: {getattr(exc, 'reason', exc)}.\n"
            "Hint: check --livekit-url (is the server running? right port?), or drop it to let "
            "the plugin start its own server."
        ) from None


@contextlib.contextmanager
def running_server(binary: str | os.PathLike[str], **kwargs: Any) -> Iterator[LivekitServer]:
    """Context manager form of :class:`LivekitServer` that also removes its temporary files."""
    server = LivekitServer(binary, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()
        server.cleanup_files()
