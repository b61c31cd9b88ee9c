"""A local LiveKit cluster: one Redis and several livekit-server nodes, the way LiveKit runs one.

livekit-server runs multi-node when its config has a ``redis:`` section: the nodes register in
Redis (hash ``nodes``), each room is assigned to one node (hash ``room_node_map``: the node that
runs the room's media), and a participant whose signalling reaches another node is relayed to
the room's node over Redis (psrpc); agent dispatch travels the same way to whichever node the
agent worker registered with. :class:`LivekitCluster` starts that locally, without pytest::

    with LivekitCluster(find_server_binary(), nodes=3) as cluster:
        print(cluster.urls)            # ws://127.0.0.1:<port> of each node
        print(cluster.node_ids)        # ND_... of each node, as livekit-server names them

* :class:`RedisServer`: Debian's ``redis-server`` on ``127.0.0.1``, a free port, no persistence
  (no RDB, no AOF), a random password; its config (with the password) is a 0600 file in a
  temporary folder, never argv; ready on its ``Ready to accept connections`` log line.
* :class:`LivekitCluster`: the Redis plus ``nodes`` :class:`~pytest_livekit.server.binary.LivekitServer`
  processes sharing the API key and secret, each with its own ports and ``redis: {address,
  password}`` in its config; ready once every node answers ``GET /`` and every node id is
  registered in Redis.

Which node does what in a call: the node a participant's URL names handles its signalling; the
room's node (:meth:`LivekitCluster.room_node`, or the ``node_id`` of
:meth:`LivekitCluster.create_room`) runs its media; an agent worker is registered with the node
its URL names.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_livekit.errors import ServerStartError, ServerStartTimeoutError
from pytest_livekit.server.binary import LivekitServer, free_port
from pytest_livekit.server.process import ManagedProcess, stop_all

__all__ = [
    "LivekitCluster",
    "RedisError",
    "RedisServer",
    "call_nodes",
    "find_redis_binary",
    "node_id_from_log",
    "redis_config_text",
    "stop_all_redis",
]

_REDIS_READY = b"Ready to accept connections"
#: The line livekit-server logs at start with its node id (``"nodeID": "ND_..."``).
_NODE_ID = re.compile(r"starting LiveKit server.*?\"nodeID\": \"(ND_[A-Za-z0-9]+)\"")


class RedisError(RuntimeError):
    """Redis refused a command (``-ERR ...``), or the connection broke."""


def find_redis_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` if given, else ``redis-server`` on PATH (Debian: ``apt-get install redis-server``).

    Raises:
        ServerStartError: none found.
    """
    found = str(explicit) if explicit else shutil.which("redis-server")
    if not found or not os.access(found, os.X_OK):
        raise ServerStartError(
            f"no redis-server binary ({explicit or 'redis-server on PATH'}).\n"
            "Hint: apt-get install -y redis-server (scripts/test installs it on a fresh machine)."
        )
    return Path(found)


def redis_config_text(*, host: str, port: int, password: str, folder: str | os.PathLike[str]) -> str:
    """The config of a throwaway Redis: one loopback address, a password, nothing on disk."""
    return "\n".join([
        f"bind {host}",
        f"port {port}",
        "protected-mode yes",
        f'requirepass "{password}"',
        # no persistence: no RDB snapshots, no append-only file
        'save ""',
        "appendonly no",
        f'dir "{folder}"',
        "daemonize no",
        'logfile ""',  # stdout, which the test reads (readiness) and keeps in a file
        "databases 1",
        "",
    ])


class RedisServer(ManagedProcess):
    """A redis-server subprocess on loopback with a random password and no persistence.

    Args:
        binary: the redis-server executable (default: ``redis-server`` on PATH).
        host: the loopback address to bind.
        port: fixed port, or ``None`` for a free one.
        startup_timeout: seconds to wait for ``Ready to accept connections``.
        log_path: where its log goes (default: in its temporary folder).
    """

    #: livekit-server nodes use it until they stop: the safety net stops it with the servers.
    stops_last = True

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 15.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self._binary = binary
        self.host = host
        self._fixed_port = port
        self.port: int | None = None
        self.password = secrets.token_urlsafe(32)
        self._log_path = Path(log_path) if log_path else None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.config_path: Path | None = None
        """The config file (0600, in a temporary folder :meth:`cleanup_files` removes)."""

    def __repr__(self) -> str:  # never show the password
        return f"<RedisServer {self.address if self.port else 'not started'}>"

    @property
    def address(self) -> str:
        """``host:port`` (livekit-server's ``redis.address``)."""
        if self.port is None:
            raise RuntimeError("redis not started")
        return f"{self.host}:{self.port}"

    def livekit_config(self) -> dict[str, Any]:
        """The ``redis:`` section of a livekit-server config pointing at this Redis."""
        return {"address": self.address, "password": self.password}

    @property
    def log_path(self) -> Path:
        """Path of redis-server's log."""
        if self._log_path is None:
            raise RuntimeError("redis not started")
        return self._log_path

    def start(self) -> RedisServer:
        """Write the config, start redis-server and wait until it accepts connections."""
        if self._proc is not None:
            return self
        binary = find_redis_binary(self._binary)
        self.port = self._fixed_port or free_port(self.host, socket.SOCK_STREAM)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="pytest-livekit-redis-")
        folder = Path(self._tmpdir.name)
        if self._log_path is None:
            self._log_path = folder / "redis.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        conf = self.config_path = folder / "redis.conf"
        # the password is in this file only: 0600 from its creation
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(redis_config_text(host=self.host, port=self.port, password=self.password, folder=folder))
        proc = self._spawn(
            [str(binary), str(conf)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        self._follow_output(
            proc.stdout, self._read_line, log_to=self._log_path, name="pytest-livekit-redis-log"
        )
        self.wait_until_ready()
        return self

    def _read_line(self, raw: bytes) -> None:
        if _REDIS_READY in raw:
            self._mark_ready()

    def _died_before_ready(self, code: int | None) -> BaseException:
        return ServerStartError(
            f"redis-server exited with code {code} before it was ready.\n"
            f"Last log lines ({self._log_path}):\n{self.log_tail()}\n"
            "Hint: a port conflict shows as 'Address already in use'."
        )

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return ServerStartTimeoutError(
            f"redis-server did not log 'Ready to accept connections' within {timeout:.0f} s.\n"
            f"Last log lines ({self._log_path}):\n{self.log_tail()}"
        )

    def _log_source(self) -> Path | None:
        return self._log_path

    def _secrets(self) -> list[str]:
        return [self.password]

    def cleanup_files(self) -> None:
        """Remove the temporary folder (config, log unless placed elsewhere)."""
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    # -- a minimal client (RESP2): enough to read the cluster's state --------------------------
    def command(self, *args: str, timeout: float = 5.0) -> Any:
        """Run one command (after ``AUTH``) and return its reply: ``str``, ``int``, ``None``,
        or a list of those.

        Raises:
            RedisError: Redis answered with an error, or the connection broke.
        """
        if self.port is None:
            raise RuntimeError("redis not started")
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            stream = sock.makefile("rb")
            sock.sendall(_encode("AUTH", self.password) + _encode(*args))
            _read_reply(stream)  # +OK, or an error raised here
            return _read_reply(stream)


def stop_all_redis() -> None:
    """Stop every Redis this process started and has not stopped yet, and remove its folder (the
    password's file): the safety net at Ctrl-C and session end (with the servers).
    """
    from pytest_livekit.server.process import live_processes

    redis = [p for p in live_processes(RedisServer) if isinstance(p, RedisServer)]
    try:
        stop_all(RedisServer)
    finally:
        for server in redis:
            server.cleanup_files()


def _encode(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError("connection to redis closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise RedisError(f"unexpected reply from redis: {line[:40]!r}")


def call_nodes(index: int, size: int) -> tuple[int, int, int]:
    """Where the session's call number ``index`` (0, 1, ...) runs on a ``size``-node cluster:
    ``(signal node, room node, worker node)``. The caller signals to node ``index mod size``, the
    room is created on the next node, agent workers are registered with the last node: the first
    call of a 3-node cluster uses three different nodes, and every call relays its signalling.
    """
    return index % size, (index + 1) % size, size - 1


def node_id_from_log(path: Path) -> str | None:
    """The node id livekit-server logged at start (``starting LiveKit server ... nodeID``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 1024).decode(errors="replace")
    except OSError:
        return None
    match = _NODE_ID.search(head)
    return match.group(1) if match else None


class LivekitCluster:
    """A Redis and ``nodes`` livekit-server nodes that form one LiveKit cluster on loopback.

    Args:
        binary: the livekit-server executable.
        nodes: how many nodes (2 or more).
        host: the loopback address every node binds (each on its own ports).
        node_ip: the address every node advertises for media (see
            :class:`~pytest_livekit.server.binary.LivekitServer`); ``None``: livekit-server picks.
        redis_binary: the redis-server executable (default: on PATH).
        startup_timeout: seconds for each node (and Redis) to be ready.
        log_dir: folder for ``livekit-node-<i>.log`` and ``redis.log`` (default: temporary).
        extra_config: merged over every node's config (see ``LivekitServer``).

    Attributes ``nodes`` (the :class:`LivekitServer` objects), ``redis`` and, once started,
    ``node_ids`` are in node order; :meth:`node_index` maps a node id back.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str],
        *,
        nodes: int = 3,
        host: str = "127.0.0.1",
        node_ip: str | None = None,
        redis_binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        log_dir: str | os.PathLike[str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        if nodes < 2:
            raise ValueError(f"a cluster needs at least 2 nodes, got {nodes}")
        self.binary = Path(binary)
        self.size = nodes
        self.host = host
        self.node_ip = node_ip
        self.startup_timeout = startup_timeout
        self._log_dir = Path(log_dir) if log_dir else None
        self._extra_config = dict(extra_config or {})
        self.api_key = "APIpytestlivekit"
        self.api_secret = secrets.token_urlsafe(48)
        self.redis = RedisServer(
            redis_binary,
            host=host,
            startup_timeout=startup_timeout,
            log_path=self._log_dir / "redis.log" if self._log_dir else None,
        )
        self.nodes: list[LivekitServer] = []
        self.node_ids: list[str] = []
        self.startup_seconds: float | None = None
        """Seconds from the start of Redis to every node registered."""

    def __repr__(self) -> str:
        return f"<LivekitCluster {self.size} nodes {self.urls if self.nodes else 'not started'}>"

    # -- addresses ---------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        """Each node's WebSocket URL, in node order."""
        return [node.url for node in self.nodes]

    @property
    def http_urls(self) -> list[str]:
        """Each node's HTTP (API) URL, in node order."""
        return [node.http_url for node in self.nodes]

    @property
    def version(self) -> str:
        """The nodes' livekit-server version."""
        return self.nodes[0].version if self.nodes else "unknown"

    def node_config(self, index: int) -> dict[str, Any]:
        """What node ``index`` adds to the generated config: the shared Redis (pure)."""
        return {**self._extra_config, "redis": self.redis.livekit_config()}

    def node_index(self, node_id: str | None) -> int | None:
        """Which node (its index) has ``node_id``; None for an unknown id."""
        return self.node_ids.index(node_id) if node_id in self.node_ids else None

    def node_id_for_url(self, url: str) -> str | None:
        """The id of the node ``url`` (WebSocket or HTTP) reaches; None for another address."""
        wanted = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
        for node_url, node_id in zip(self.urls, self.node_ids, strict=False):
            if node_url == wanted:
                return node_id
        return None

    def placement(self, room: str, *, caller_url: str, agent_url: str | None = None) -> dict[str, Any]:
        """Where a call runs, by node id (read while the room exists): ``signal_node_id`` (the
        node the caller's URL names), ``room_node_id`` (the room's media, from Redis),
        ``agent_node_id`` (the node the agent's worker is registered with) and ``nodes`` (all
        node ids in node order).
        """
        return {
            "signal_node_id": self.node_id_for_url(caller_url),
            "room_node_id": self.room_node(room),
            "agent_node_id": self.node_id_for_url(agent_url) if agent_url else None,
            "nodes": list(self.node_ids),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LivekitCluster:
        """Start Redis, then every node at once, and wait until each is ready and registered;
        on any failure stop everything and raise. A cluster starts once (a second call returns
        it as it is; make a new one after :meth:`stop`).
        """
        if self.nodes:
            return self
        started = time.monotonic()
        try:
            self.redis.start()
            for index in range(self.size):
                node = LivekitServer(
                    self.binary,
                    host=self.host,
                    startup_timeout=self.startup_timeout,
                    log_path=self._log_dir / f"livekit-node-{index}.log" if self._log_dir else None,
                    extra_config=self.node_config(index),
                    node_ip=self.node_ip,
                    api_secret=self.api_secret,
                )
                self.nodes.append(node)
                # spawned here (the parent-death signal belongs to this thread), all at once
                node.spawn()
            for node in self.nodes:
                node.wait_until_ready()
            self.node_ids = [self._node_id(i) for i in range(self.size)]
            self._wait_registered(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _node_id(self, index: int) -> str:
        node = self.nodes[index]
        found = node_id_from_log(node.log_path)
        if found is None:
            raise ServerStartError(
                f"livekit-server node {index} is ready but logged no node id.\n"
                f"Last log lines ({node.log_path}):\n{node.log_tail()}"
            )
        return found

    def _wait_registered(self, deadline: float) -> None:
        """Poll Redis until every node's id is in its ``nodes`` hash (no event to wait on)."""
        missing: set[str] = set(self.node_ids)
        while True:
            missing = set(self.node_ids) - set(self.registered_nodes())
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise ServerStartTimeoutError(
                    f"livekit-server nodes {sorted(missing)} did not register in Redis in time.\n"
                    f"Redis log:\n{self.redis.log_tail()}"
                )
            time.sleep(0.05)

    def registered_nodes(self) -> list[str]:
        """The node ids registered in Redis now (hash ``nodes``)."""
        return list(self.redis.command("HKEYS", "nodes") or [])

    def room_node(self, room: str) -> str | None:
        """The id of the node that hosts ``room`` (hash ``room_node_map``), None if unassigned."""
        found = self.redis.command("HGET", "room_node_map", room)
        return str(found) if found else None

    async def create_room(self, room: str, *, node: int, via: int | None = None, **fields: Any) -> Any:
        """Create ``room`` on node ``node`` (``CreateRoomRequest.node_id``), asking node ``via``
        (default: the same); returns the ``Room``. Further ``CreateRoomRequest`` fields pass on.
        """
        from livekit import api

        via = node if via is None else via
        async with api.LiveKitAPI(self.http_urls[via], self.api_key, self.api_secret) as lk:
            request = api.CreateRoomRequest(name=room, node_id=self.node_ids[node], **fields)
            return await lk.room.create_room(request)

    def create_room_now(self, room: str, *, node: int, via: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """:meth:`create_room` without an event loop (a blocking Twirp JSON request to node
        ``via``); returns the ``Room`` as JSON. For code that is not async (a session's
        ``new_call``); loopback, a few milliseconds.

        Raises:
            ServerStartError: the node refused (its answer in the message).
        """
        import json
        import urllib.error
        import urllib.request

        from livekit import api

        via = node if via is None else via
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_grants(api.VideoGrants(room_create=True, room=room))
            .to_jwt()
        )
        request = urllib.request.Request(
            f"{self.http_urls[via]}/twirp/livekit.RoomService/CreateRoom",
            data=json.dumps({"name": room, "node_id": self.node_ids[node]}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - our node
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            raise ServerStartError(
                f"node {via} refused to create room {room!r} on node {node}: HTTP {exc.code} "
                f"{exc.read()[:300].decode(errors='replace')}"
            ) from None

    @property
    def log_path(self) -> Path | None:
        """The folder of the cluster's logs (node 0's log's folder), once started."""
        return self.nodes[0].log_path.parent if self.nodes else None

    @property
    def pid(self) -> int | None:
        """Node 0's process id (None when not running)."""
        return self.nodes[0].pid if self.nodes else None

    def log_tail(self, lines: int = 30, width: int = 400) -> str:
        """The last lines of each node's log, one block per node (redacted)."""
        per = max(5, lines // max(1, len(self.nodes)))
        return "\n".join(
            f"-- node {i} ({node_id}) {node.log_path}:\n{node.log_tail(per, width)}"
            for i, (node, node_id) in enumerate(zip(self.nodes, self.node_ids or [""] * len(self.nodes), strict=False))
        )

    def stop(self) -> None:
        """Stop every node, then Redis (safe twice, and after a failed start)."""
        first: BaseException | None = None
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # stop the others anyway
                first = first or exc
        try:
            self.redis.stop()
        except Exception as exc:
            first = first or exc
        if first is not None:
            raise first

    def cleanup_files(self) -> None:
        """Remove the temporary folders of the nodes and Redis."""
        for node in self.nodes:
            node.cleanup_files()
        self.redis.cleanup_files()

    def log_paths(self) -> dict[str, Path]:
        """Every log of the cluster by name (``redis``, ``node-0``, ...)."""
        out = {"redis": self.redis.log_path} if self.redis.port else {}
        out.update({f"node-{i}": node.log_path for i, node in enumerate(self.nodes)})
        return out

    def __enter__(self) -> LivekitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup_files()
