"""A test session without pytest: the server, the agent's worker processes, and calls.

:class:`LivekitSession` is what the plugin's fixtures wrap, so a plain ``asyncio.run()`` script
gets the same server selection (a managed binary, the Docker image, or an existing server), the
same call resolution (call type and its limits, agent target and mode, providers, the offline
LLM's plan, the worker) and the same artifacts (``call.wav``, ``trace.json``, ``metrics.json``,
``call.json``, and ``calls.jsonl`` for the session)::

    async with LivekitSession("support_agent:server", rootdir="example_suite") as session:
        async with session.call("refund", call_type="refund") as call:
            await call.say("I want a refund for order one two three four")
            await call.wait_for_agent_reply()
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_livekit.config import (
    AGENT_MODES,
    PACKET_RELAY_MODES,
    PROVIDER_MODES,
    LivekitSettings,
    MarkerOptions,
    Setting,
)
from pytest_livekit.errors import ConfigError

if TYPE_CHECKING:
    from pytest_livekit.agent.worker import WorkerPool
    from pytest_livekit.call.livekit_call import LivekitCall
    from pytest_livekit.metrics.thresholds import CallType
    from pytest_livekit.outputs.run_summary import RunSummary

__all__ = ["SERVER_MODES", "LivekitSession", "ServerHandle", "managed_server"]

#: How the session gets its server: ``auto`` (``external`` when a URL is given, else a binary,
#: else the Docker image), ``binary``, ``docker``, ``external`` or ``cluster`` (a Redis and
#: several livekit-server nodes, :class:`~pytest_livekit.server.cluster.LivekitCluster`).
SERVER_MODES = ("auto", "binary", "docker", "external", "cluster")


@dataclass(frozen=True)
class ServerHandle:
    """Where the session's livekit-server is and how to talk to it."""

    mode: str
    """``binary``, ``docker``, ``external`` or ``cluster``."""
    url: str
    """WebSocket URL (a cluster's node 0; each call's own node is in its ``url``)."""
    api_key: str
    """API key."""
    api_secret: str
    """API secret (never logged)."""
    version: str
    """Server version, or ``unknown`` for external servers."""
    log_path: Path | None = None
    """Server log file (managed servers only)."""
    startup_seconds: float | None = None
    """Seconds the managed server took to become ready."""

    def __repr__(self) -> str:
        return f"ServerHandle(mode={self.mode!r}, url={self.url!r}, version={self.version!r})"


def relay_addresses() -> tuple[str, str]:
    """``(server media address, packet relay address)``: the two private addresses of the network
    namespace ``scripts/netns-run`` made (``PYTEST_LIVEKIT_NETNS_ADDRESSES``).

    Raises:
        ConfigError: not inside that namespace.
    """
    found = os.environ.get("PYTEST_LIVEKIT_NETNS_ADDRESSES", "").split()
    if len(found) < 2:
        raise ConfigError(
            "livekit_packet_relay = on needs two private addresses for the server's media and the "
            "relay, which scripts/netns-run provides: run 'scripts/netns-run python -m pytest ...' "
            "(as root), or set livekit_packet_relay = off."
        )
    return found[0], found[1]


def managed_server(settings: LivekitSettings, log_path: Path) -> Any:
    """The (not yet started) server for binary or docker mode; in auto mode docker is the
    fallback when no binary is found and a Docker engine with the image is available.
    """
    from pytest_livekit.errors import ServerBinaryNotFoundError
    from pytest_livekit.server.binary import LivekitServer, find_server_binary

    s = settings
    common: dict[str, Any] = dict(port=s.port, startup_timeout=s.startup_timeout, log_path=log_path)
    if s.packet_relay.value == "on":
        common["node_ip"], common["relay_ip"] = relay_addresses()
    if s.server_mode.value == "docker":
        from pytest_livekit.server.docker import DockerLivekitServer

        return DockerLivekitServer(str(s.docker_image.value), **common)
    try:
        binary = find_server_binary(s.server_binary.value, root=s.rootdir)
    except ServerBinaryNotFoundError:
        if s.server_mode.source != "auto" or s.server_binary.value:
            raise
        from pytest_livekit.server.docker import DockerLivekitServer, docker_image_available

        if docker_image_available(str(s.docker_image.value)):
            return DockerLivekitServer(str(s.docker_image.value), **common)
        raise
    return LivekitServer(binary, **common)


def _settings_from_arguments(
    agent: str | None,
    *,
    server: str,
    server_binary: str | os.PathLike[str] | None,
    docker_image: str | None,
    url: str | None,
    api_key: str | None,
    api_secret: str | None,
    port: int | None,
    startup_timeout: float,
    artifacts_dir: str | os.PathLike[str],
    agent_mode: str,
    providers: str,
    rootdir: str | os.PathLike[str] | None,
    report_path: str | os.PathLike[str] | None,
    stt_phrases: Iterable[str],
    packet_relay: str = "off",
    cluster_nodes: int = 3,
    agent_workers: int = 1,
) -> LivekitSettings:
    """Settings as the plugin would resolve them, from a script's arguments; the call types and
    the offline LLM's table come from ``<rootdir>/pyproject.toml`` as in a pytest run there.
    """
    from pytest_livekit.metrics.thresholds import load_call_types, plugin_table

    root = Path(rootdir).resolve() if rootdir is not None else Path.cwd()
    if server not in SERVER_MODES:
        raise ConfigError(f"server={server!r} is not valid. Valid values: {', '.join(SERVER_MODES)}.")
    source = "argument"
    if server == "auto":
        server, source = ("external" if url else "binary"), "auto"
    if server == "external" and not (url and api_key and api_secret):
        raise ConfigError("server='external' needs url=, api_key= and api_secret=.")
    if server == "cluster" and cluster_nodes < 2:
        raise ConfigError(f"cluster_nodes={cluster_nodes} is not valid: a cluster needs at least 2 nodes.")
    if agent_workers < 1:
        raise ConfigError(f"agent_workers={agent_workers} is not valid: at least 1 worker process.")
    if agent_mode not in AGENT_MODES:
        raise ConfigError(f"agent_mode={agent_mode!r} is not valid. Valid values: {', '.join(AGENT_MODES)}.")
    if providers not in PROVIDER_MODES:
        raise ConfigError(f"providers={providers!r} is not valid. Valid values: {', '.join(PROVIDER_MODES)}.")
    if packet_relay not in PACKET_RELAY_MODES:
        raise ConfigError(
            f"packet_relay={packet_relay!r} is not valid. Valid values: {', '.join(PACKET_RELAY_MODES)}."
        )
    if docker_image is None:
        from pytest_livekit.server.docker import DEFAULT_IMAGE

        docker_image = DEFAULT_IMAGE
    folder = Path(artifacts_dir)
    pyproject = root / "pyproject.toml"
    call_types = load_call_types(pyproject)
    report = Path(report_path) if report_path is not None else None
    return LivekitSettings(
        server_mode=Setting(server, source),
        server_binary=Setting(str(server_binary) if server_binary else None, "argument"),
        docker_image=Setting(docker_image, "argument"),
        url=Setting(url, "argument"),
        api_key=Setting(api_key, "argument"),
        api_secret=Setting(api_secret, "argument"),
        port=port,
        agent_spec=Setting(agent, "argument"),
        agent_mode=Setting(agent_mode, "argument"),
        artifacts_dir=folder if folder.is_absolute() else root / folder,
        startup_timeout=startup_timeout,
        call_types=tuple(call_types),
        call_type_configs=call_types,
        rootdir=root,
        report_path=report if report is None or report.is_absolute() else root / report,
        providers=Setting(providers, "argument"),
        llm=dict(plugin_table(pyproject).get("llm", {})),
        stt_phrases=tuple(str(p).strip() for p in stt_phrases if str(p).strip()),
        packet_relay=Setting(packet_relay, "argument"),
        cluster_nodes=cluster_nodes,
        agent_workers=agent_workers,
    )


class LivekitSession:
    """A livekit-server, the agent's worker processes and a factory of calls to the agent.

    Use it as an async (or plain) context manager: entering starts (or checks) the server,
    leaving stops what the session started and writes ``calls.jsonl`` (and the report, if
    ``report_path`` is given) for the calls placed with :meth:`call`.

    Args:
        agent: the agent under test, ``"package.module:attribute"`` (an ``AgentServer`` or an
            entrypoint), imported relative to ``rootdir``.
        server: ``auto`` (default: ``external`` when ``url`` is given, else the binary, else the
            Docker image), ``binary``, ``docker``, ``external`` or ``cluster`` (a Redis and
            ``cluster_nodes`` livekit-server nodes; each call is spread over them, see
            :func:`~pytest_livekit.server.cluster.call_nodes`).
        server_binary: the livekit-server binary (default: searched as the plugin does).
        docker_image: the image for ``docker`` mode (default: the tested version).
        url: an existing server's URL (``external`` mode), with ``api_key`` and ``api_secret``.
        api_key: the existing server's API key.
        api_secret: the existing server's API secret (never logged or saved).
        port: a fixed HTTP port for a managed server (default: a free one).
        startup_timeout: seconds to wait for a managed server to be ready.
        artifacts_dir: the calls' folders go here (relative to ``rootdir``).
        agent_mode: ``in-process`` (default) or ``worker`` (a real livekit-agents worker).
        providers: ``offline`` (default: offline doubles, network guarded) or ``real``.
        rootdir: the project folder (its ``pyproject.toml`` gives the call types; default: cwd).
        report_path: write the HTML report of the session's calls here when it ends.
        stt_phrases: phrases (or a file of them) the offline STT must know besides the call
            types' scripts (``livekit_stt_phrases``; a pytest run adds its tests' ``say()`` texts).
        packet_relay: ``on``: run the managed server behind the packet relay, so calls can pass
            ``network=`` (needs ``scripts/netns-run``); ``off`` (default).
        cluster_nodes: how many livekit-server nodes ``server="cluster"`` starts (default 3).
        agent_workers: worker mode: how many worker processes register under the agent's name
            (default 1); livekit-server spreads the jobs over them.
        settings: a pytest run's resolved settings instead of the arguments above (what the
            plugin passes).
    """

    def __init__(
        self,
        agent: str | None = None,
        *,
        server: str = "auto",
        server_binary: str | os.PathLike[str] | None = None,
        docker_image: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        port: int | None = None,
        startup_timeout: float = 30.0,
        artifacts_dir: str | os.PathLike[str] = Path(".livekit") / "calls",
        agent_mode: str = "in-process",
        providers: str = "offline",
        rootdir: str | os.PathLike[str] | None = None,
        report_path: str | os.PathLike[str] | None = None,
        stt_phrases: Iterable[str] = (),
        packet_relay: str = "off",
        cluster_nodes: int = 3,
        agent_workers: int = 1,
        settings: LivekitSettings | None = None,
    ) -> None:
        self._standalone = settings is None
        if settings is None:
            settings = _settings_from_arguments(
                agent, server=server, server_binary=server_binary, docker_image=docker_image, url=url,
                api_key=api_key, api_secret=api_secret, port=port, startup_timeout=startup_timeout,
                artifacts_dir=artifacts_dir, agent_mode=agent_mode, providers=providers,
                rootdir=rootdir, report_path=report_path, stt_phrases=stt_phrases, packet_relay=packet_relay,
                cluster_nodes=cluster_nodes, agent_workers=agent_workers,
            )
        self.settings = settings
        """The resolved settings (a pytest run's, or built from the arguments)."""
        self.server: Any = None
        """The managed server object (binary or docker mode; the
        :class:`~pytest_livekit.server.cluster.LivekitCluster` in cluster mode), set before it starts."""
        self.handle: ServerHandle | None = None
        """Where the running server is (None until :meth:`start`)."""
        self._workers: WorkerPool | None = None
        self.log_name = os.environ.get("PYTEST_XDIST_WORKER", "main")
        """The suffix of this session's server logs (``livekit-server-<log_name>.log``): one per
        xdist worker, so that two workers' servers never share a file. The pytest plugin sets it
        from the run's own config: a pytest started by a test of an xdist worker inherits that
        worker's ``PYTEST_XDIST_WORKER`` without being one."""
        self._summary: RunSummary | None = None
        self._log_dir: Path | None = None
        self._prestarted = False
        self.notes: list[str] = []
        """Things the run's summary should say (e.g. logs moved to a temporary folder)."""
        self.server_death: BaseException | None = None
        """Why the managed server is gone (it ended on its own mid-session), else None."""
        self._live_calls: weakref.WeakSet[LivekitCall] = weakref.WeakSet()
        self.relay_address: tuple[str, int] | None = None
        """The packet relay's address (``livekit_packet_relay = on``): calls pass it on."""
        self._names: dict[str, int] = {}
        self._cluster_calls = 0

    @classmethod
    def from_settings(cls, settings: LivekitSettings) -> LivekitSession:
        """The session of a pytest run (the plugin's fixtures wrap it)."""
        return cls(settings=settings)

    # -- the server ---------------------------------------------------------------------------

    def start(self) -> ServerHandle:
        """Start the managed server (or check the external one answers); idempotent.

        The caller's own process is started first: it imports livekit while the server starts,
        so the first call finds it ready.

        Raises:
            ServerStartError: the server did not become ready (with its log tail and a hint).
            ServerUnreachableError: the external server does not answer.
        """
        if self.handle is not None:
            return self.handle
        if self.settings.server_mode.value == "cluster":
            self._check_cluster_settings()  # before anything starts
        self.prestart()
        from pytest_livekit.call.caller import caller_host

        s = self.settings
        if self._standalone and s.vocabulary is None:
            from pytest_livekit.config import collect_vocabulary

            # the offline STT's model, as a pytest run builds it at collection (minus the tests)
            collect_vocabulary(s, [])
        if s.server_mode.value == "external":
            from pytest_livekit.server.binary import check_reachable

            url = str(s.url.value)
            if s.packet_relay.value == "on":
                raise ConfigError(
                    "livekit_packet_relay = on cannot shape an external server's calls: shaped "
                    "participants reach the server through the relay and the server's embedded TURN "
                    "server on a private address, which only a server the plugin starts is "
                    "configured with. Use server mode binary or docker, or set livekit_packet_relay = off."
                )
            check_reachable(url.replace("ws://", "http://").replace("wss://", "https://"))
            self.handle = ServerHandle("external", url, str(s.api_key.value), str(s.api_secret.value), "unknown")
            return self.handle
        if s.server_mode.value == "cluster":
            return self._start_cluster(self.log_dir / f"livekit-cluster-{self.log_name}")
        if self.server is None:
            self.server = managed_server(s, self.log_dir / f"livekit-server-{self.log_name}.log")
        server = self.server
        server.start()  # a server prestart() spawned: waits until it is ready
        server.on_exit(self._server_exited)
        if server.relay_addresses is not None:
            listen, upstream = server.relay_addresses
            caller_host().start_relay(listen, upstream)
            self.relay_address = listen
        self.handle = ServerHandle(
            "docker" if hasattr(server, "container_id") else "binary",
            server.url,
            server.api_key,
            server.api_secret,
            server.version,
            server.log_path,
            server.startup_seconds,
        )
        return self.handle

    def prestart(self) -> None:
        """Set going, without waiting, what the first call needs: the caller's process (its
        imports take 1-2 s), the imports of a call's script (in a thread) and, in binary mode,
        the server process. The pytest plugin calls this when it collects the first test that
        places a call, so they come up while collection goes on
        (the collection-time checks import the agent); :meth:`start` then waits for them. Safe
        to call more than once; it never raises: a server that cannot be spawned is left to
        :meth:`start`, which says why.
        """
        if self._prestarted:
            return
        self._prestarted = True
        from pytest_livekit.redaction import install_log_redaction

        install_log_redaction()  # livekit's own loggers never show a call's token
        from pytest_livekit.call.caller import caller_host

        caller_host().start()
        import threading

        from pytest_livekit.audio import warm_imports

        threading.Thread(target=warm_imports, name="pytest-livekit-warm-imports", daemon=True).start()
        s = self.settings
        if self.server is not None or s.server_mode.value not in ("binary", "auto"):
            return  # docker and cluster start in start(); an external server is not ours
        from pytest_livekit.errors import PytestLivekitError
        from pytest_livekit.server.binary import LivekitServer

        try:
            server = managed_server(s, self.log_dir / f"livekit-server-{self.log_name}.log")
            if isinstance(server, LivekitServer):  # (auto mode may fall back to a container)
                server.spawn()
                self.server = server
        except (PytestLivekitError, OSError):
            return  # start() tries again and raises the error with its hint
        if self._workers is not None and self.server is not None:
            # a worker spawned at the session's start registers as soon as its imports are done
            self._workers.connect_prestarted(self.server.url, self.server.api_key, self.server.api_secret)

    def _check_cluster_settings(self) -> None:
        """What cluster mode cannot do, and a missing redis-server, said before anything starts.

        Raises:
            ConfigError: the packet relay or a fixed port asked for.
            ServerStartError: no redis-server (the message says how to install it).
        """
        from pytest_livekit.server.cluster import find_redis_binary

        s = self.settings
        if s.packet_relay.value == "on":
            raise ConfigError(
                "livekit_packet_relay = on is not supported with livekit_server = cluster: the relay "
                "shapes one server's TURN port. Use server mode binary, or set livekit_packet_relay = off."
            )
        if s.port is not None:
            raise ConfigError(
                "--livekit-port fixes one server's port: a cluster's nodes each take free ports. "
                "Drop --livekit-port with --livekit-server=cluster."
            )
        find_redis_binary()

    def _start_cluster(self, log_dir: Path) -> ServerHandle:
        """Cluster mode: a Redis and ``cluster_nodes`` nodes, their logs in ``log_dir``."""
        from pytest_livekit.server.binary import find_server_binary
        from pytest_livekit.server.cluster import LivekitCluster

        s = self.settings
        binary = find_server_binary(s.server_binary.value, root=s.rootdir)
        self.server = cluster = LivekitCluster(
            binary, nodes=s.cluster_nodes, startup_timeout=s.startup_timeout, log_dir=log_dir
        )
        cluster.start()
        import functools

        processes: list[Any] = [*cluster.nodes, cluster.redis]
        for process in processes:
            process.on_exit(functools.partial(self._on_cluster_exit, process))
        self.handle = ServerHandle(
            "cluster",
            cluster.urls[0],
            cluster.api_key,
            cluster.api_secret,
            cluster.version,
            cluster.log_path,
            cluster.startup_seconds,
        )
        return self.handle

    @property
    def log_dir(self) -> Path:
        """Where the server and worker logs (and worker offline plans) go: beside the calls'
        folder, or, when that cannot be written (read-only, full), a temporary folder, which
        :attr:`notes` then names: a call must not fail because its logs have nowhere to go.
        """
        if self._log_dir is None:
            wanted = Path(self.settings.artifacts_dir).parent
            try:
                wanted.mkdir(parents=True, exist_ok=True)
                probe = wanted / f".pytest-livekit-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
                self._log_dir = wanted
            except OSError as exc:
                import tempfile

                self._log_dir = Path(tempfile.mkdtemp(prefix="pytest-livekit-logs-"))
                self.notes.append(
                    f"livekit: {wanted} cannot be written ({type(exc).__name__}: {exc.strerror or exc}); "
                    f"server and worker logs are in {self._log_dir}"
                )
        return self._log_dir

    def _on_cluster_exit(self, process: Any, how: str) -> None:  # an exit watcher thread
        self._server_exited(how, process)

    def _server_exited(self, how: str, process: Any = None) -> None:  # the server's exit watcher thread
        """The managed server (in cluster mode: ``process``, one node or the Redis) ended on its
        own: fail the calls in progress at once and every later call of the session at its start
        (a clear session error; the session does not restart the server, whose port, rooms and
        registered workers would all be new).
        """
        from pytest_livekit.errors import ServerDiedError

        server = process if process is not None else self.server
        log = getattr(server, "log_path", None)
        tail = server.log_tail(lines=15) if server is not None else ""
        what = "livekit-server"
        if process is not None and self.server is not None and process in getattr(self.server, "nodes", ()):
            what = f"cluster node {self.server.nodes.index(process)} (livekit-server)"
        elif process is not None:
            what = "cluster's redis-server"
        self.server_death = ServerDiedError(
            f"the session's {what} {how} while a call was running.\n"
            f"Last log lines ({log}):\n{tail}\n"
            "Hint: the server was killed from outside (the OOM killer, a CI timeout, someone's "
            "kill) or crashed: its log above says which. Later tests of this session fail at once."
        )
        for call in list(self._live_calls):
            call.abort(self.server_death)

    def stop_server(self) -> None:
        """Stop the managed server (an external one is left alone)."""
        server, self.server, self.handle = self.server, None, None
        self._prestarted = False  # a later start() sets everything going again
        if server is not None:
            try:
                server.stop()
            finally:
                if hasattr(server, "redis"):  # a cluster: its Redis's password file and folder
                    server.cleanup_files()

    # -- agent workers ------------------------------------------------------------------------

    @property
    def workers(self) -> WorkerPool:
        """The agent worker processes of worker mode, one per agent spec (created on first use)."""
        if self._workers is None:
            from pytest_livekit.agent.worker import WorkerPool

            s = self.settings
            self._workers = WorkerPool(
                cwd=s.rootdir,
                log_dir=self.log_dir,
                # a worker imports livekit-agents and the agent's plugins: never less than a minute
                startup_timeout=max(60.0, s.startup_timeout),
                workers=s.agent_workers,
            )
        return self._workers

    def existing_workers(self) -> WorkerPool | None:
        """The worker pool if something created it, else None (never creates one)."""
        return self._workers

    def prestart_worker(self) -> None:
        """Worker mode with a configured ``module:attribute`` agent: spawn its worker now, so its
        imports (about 2 s) overlap the server's start instead of delaying the first call.
        """
        s = self.settings
        spec = s.agent
        if s.agent_mode.value == "worker" and isinstance(spec, str) and spec.count(":") == 1:
            self.workers.prestart(spec, providers=str(s.providers.value))

    # -- calls --------------------------------------------------------------------------------

    def call_type(self, name: str | CallType | None) -> CallType | None:
        """The :class:`~pytest_livekit.metrics.thresholds.CallType` named ``name`` (configured, or a bare
        one without limits); a ``CallType`` or None is returned as is.
        """
        from pytest_livekit.metrics.thresholds import CallType

        if name is None or isinstance(name, CallType):
            return name

        return self.settings.call_type_configs.get(name) or CallType(name)

    def new_call(
        self,
        name: str = "call",
        *,
        call_type: Any = None,
        agent: Any = None,
        agent_mode: str | None = None,
        providers: str | None = None,
        offline_plan: Any = None,
        llm_rules: Iterable[Any] = (),
        options: MarkerOptions | None = None,
        join_timeout: float | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
        audio_root: Path | None = None,
        **call_arguments: Any,
    ) -> LivekitCall:
        """A call to the agent (not yet placed: ``async with`` it), resolved as the plugin does.

        Each argument left out falls back to ``options`` (a test's ``@pytest.mark.livekit``),
        then to the session's settings.

        Args:
            name: the call's name (its room name and, by default, its folder derive from it).
            call_type: a call type name or :class:`~pytest_livekit.metrics.thresholds.CallType`: its
                limits are checked on the call, its offline LLM rules apply.
            agent: the agent under test (``module:attribute`` or an ``AgentTarget``; default:
                the session's).
            agent_mode: ``in-process`` or ``worker``.
            providers: ``offline`` or ``real``.
            offline_plan: what the offline doubles do (default: from ``llm_rules``, the call
                type's and the session's rules and the STT vocabulary).
            llm_rules: offline LLM rules tried first.
            options: a test's merged ``livekit`` marker.
            join_timeout: seconds to wait for the agent to join and listen (default 30).
            artifacts_dir: the call's folder (default: ``<artifacts>/<name>``, ``-2``... when a
                name repeats).
            audio_root: folder relative WAV paths resolve against (default: the rootdir).
            **call_arguments: passed on to :class:`~pytest_livekit.call.livekit_call.LivekitCall`
                (``conditions=``, ``voice=``, ...).

        Raises:
            ConfigError: worker mode with an agent that is not a ``module:attribute`` string.
        """
        from pytest_livekit.agent.in_process import resolve_agent_target
        from pytest_livekit.call.livekit_call import LivekitCall, sanitize
        from pytest_livekit.config import offline_plan_for
        from pytest_livekit.metrics import call_metrics  # noqa: F401 - imported now, not first when the call ends

        s = self.settings
        opts = options or MarkerOptions()
        if self.server_death is not None:
            from pytest_livekit.errors import ServerDiedError

            raise ServerDiedError(f"no call can be placed: {self.server_death}")
        server = self.start()
        call_type = self.call_type(call_type)
        target = agent if agent is not None else s.agent_target()
        if isinstance(target, str) or not hasattr(target, "entrypoint"):
            target = resolve_agent_target(target, rootdir=s.rootdir)
        mode = agent_mode or opts.agent_mode or s.agent_mode.value
        providers = providers or opts.providers or s.providers.value
        plan = offline_plan or offline_plan_for(s, call_type, opts, fixture_rules=list(llm_rules))
        cluster = self.server if server.mode == "cluster" else None
        placement: tuple[int, int, int] | None = None
        url = server.url
        if cluster is not None:
            from pytest_livekit.server.cluster import call_nodes

            placement = call_nodes(self._cluster_calls, cluster.size)
            self._cluster_calls += 1
            url = cluster.urls[placement[0]]
        worker = None
        if mode == "worker":
            if target.spec.count(":") != 1:
                raise ConfigError(
                    f"worker mode needs the agent as a 'package.module:attribute' string, got "
                    f"{target.spec!r}.\nHint: set livekit_agent or @pytest.mark.livekit(agent=...)."
                )
            worker = self.workers.get(
                target.spec,
                url=cluster.urls[placement[2]] if cluster is not None and placement is not None else server.url,
                api_key=server.api_key, api_secret=server.api_secret, providers=providers,
            )
        if artifacts_dir is None:
            n = self._names[name] = self._names.get(name, 0) + 1
            artifacts_dir = Path(s.artifacts_dir) / (sanitize(name, max_len=150) + ("" if n == 1 else f"-{n}"))
        call = LivekitCall(
            url,
            server.api_key,
            server.api_secret,
            agent=target,
            name=name,
            call_type=call_type.name if call_type is not None else None,
            artifacts_dir=Path(artifacts_dir),
            server_version=server.version,
            join_timeout=join_timeout or opts.join_timeout or 30.0,
            audio_root=audio_root or s.rootdir,
            worker=worker,
            providers=providers,
            offline_plan=plan,
            **{"relay": self.relay_address, **call_arguments},
        )
        call.limits = dict(call_type.limits) if call_type is not None else {}
        if cluster is not None and placement is not None:
            self._place_on_cluster(call, cluster, placement)
        self._live_calls.add(call)
        return call

    @staticmethod
    def _place_on_cluster(call: LivekitCall, cluster: Any, placement: tuple[int, int, int]) -> None:
        """Create the call's room on its node (before the caller joins it) and tell the call how
        to record where it ran. The caller signals to ``call.url``'s node, a worker's agent is
        registered with the worker's node, an in-process agent signals to the caller's node.
        """
        signal_node, room_node, _ = placement
        cluster.create_room_now(call.room_name, node=room_node, via=signal_node)

        def where() -> dict[str, Any]:
            agent_url = call.worker.url if call.worker is not None else call.url
            return dict(cluster.placement(call.room_name, caller_url=call.url, agent_url=agent_url))

        call.placement = where

    @asynccontextmanager
    async def call(self, name: str = "call", **arguments: Any) -> AsyncIterator[LivekitCall]:
        """Place a call (:meth:`new_call`'s arguments) for the ``async with`` block; when it ends
        the call has hung up and its folder holds ``call.wav``, ``trace.json`` and the rest.

        The trace's ``test`` part records the block's outcome (``failed`` with the exception's
        text if it raised) under the call's name.
        """
        call = self.new_call(name, **arguments)
        started = time.monotonic()
        outcome: dict[str, Any] = {"outcome": "passed", "phase": "call", "message": ""}
        try:
            async with call:
                yield call
        except BaseException as exc:
            outcome.update(outcome="failed", message=f"{type(exc).__name__}: {exc}")
            self._finish(call, name, outcome, started, raising=True)
            raise
        self._finish(call, name, outcome, started, raising=False)

    def _finish(self, call: LivekitCall, name: str, outcome: dict[str, Any], started: float, *, raising: bool) -> None:
        """Write the call's trace and keep it for the session's files."""
        from pytest_livekit.outputs.artifacts import finish_call

        outcome["duration_s"] = time.monotonic() - started
        try:
            summary, trace = finish_call(call, nodeid=name, outcome=outcome, secrets=self._secrets())
        except Exception:
            if raising:
                return  # the block's own exception is the one to see
            raise
        self.summary.add(name, str(outcome["outcome"]), summary, trace)

    def _secrets(self) -> list[str]:
        """Strings no artifact may contain: the server's API secret."""
        out = [self.handle.api_secret if self.handle is not None else ""]
        return [*out, str(self.settings.api_secret.value or "")]

    @property
    def summary(self) -> RunSummary:
        """The calls placed with :meth:`call` (their rows and traces)."""
        if self._summary is None:
            from pytest_livekit.outputs.run_summary import OutputOptions, RunSummary

            self._summary = RunSummary(options=OutputOptions.from_settings(self.settings))
        return self._summary

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Write the session files of the calls placed with :meth:`call`, then stop the worker
        processes and the managed server (and, outside pytest, the caller's process).
        """
        try:
            if self._summary is not None and self._summary.traces:
                self._summary.write_files()
        finally:
            if self._workers is not None:
                self._workers.stop_all()
            self.stop_server()
            if self._standalone:  # under pytest, the plugin stops it with the run
                from pytest_livekit.call.caller import stop_caller_host

                stop_caller_host()

    def __enter__(self) -> LivekitSession:
        self.prestart_worker()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LivekitSession:
        # the start blocks (about a second): nothing else runs on the loop yet, and a server
        # spawned from a worker thread would get its death signal when that thread exits
        self.prestart_worker()
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
