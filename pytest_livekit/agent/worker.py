"""The agent under test as a real livekit-agents worker process (production parity).

:class:`AgentWorker` starts the user's ``AgentServer`` as a worker subprocess through
livekit-agents' production runner (see :mod:`pytest_livekit.agent._worker_main`), waits until it has
registered with the server (the ``registered worker`` log line: a dispatch sent before that is
dropped by the server and never retried), and stops it with its job processes.
:class:`DispatchedAgent` dispatches it explicitly by agent name into one call's room.

Works without pytest::

    with AgentWorker("my_agent:server", url=..., api_key=..., api_secret=...) as worker:
        ...  # LivekitCall(..., worker=worker)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_livekit.agent.substitution import OFFLINE_DIR_ENV, is_placeholder, offline_environment
from pytest_livekit.errors import AgentCrashedError, AgentTargetError, CallTimeoutError
from pytest_livekit.redaction import redact
from pytest_livekit.server.binary import free_port
from pytest_livekit.server.process import ManagedProcess, stop_all

_READY_MESSAGE = "registered worker"
#: livekit-agents' log line when the server offers this worker a job (it names the room).
_JOB_REQUEST_MESSAGE = "received job request"
#: Seconds without an agent after which a dispatch with no job is sent again.
REDISPATCH_AFTER = 4.0
#: Re-sends per call before giving up.
MAX_REDISPATCHES = 2
_JOB_FAILED_MESSAGES = (
    "unhandled exception while running the job task",
    # offline mode broken in a job (a provider tried the network; a double's rules are wrong)
    "pytest-livekit offline violation:",
)


class WorkerStartError(AgentTargetError):
    """The worker process exited or did not register in time (log tail in the message)."""


class AgentWorker(ManagedProcess):
    """A livekit-agents worker process serving the agent under test.

    Args:
        spec: ``package.module:attribute`` of an ``AgentServer`` or an async entrypoint.
        url: server WebSocket URL (or later, with :meth:`connect`).
        api_key: server API key.
        api_secret: server API secret (sent on the worker's stdin, never argv, environment or logs).
        agent_name: explicit-dispatch name; unique per session by default so that tests never get
            another worker's jobs and that worker never gets ours.
        cwd: working directory (the rootdir: the agent module is imported from it).
        log_path: worker log file (JSON lines).
        startup_timeout: seconds to wait for ``registered worker``.

    :meth:`stop` SIGTERMs the worker's process group (it drains its jobs), then SIGKILLs the whole
    group: after ``timeout`` seconds (default 10) if the worker still runs, else as soon as it
    exited, since its job processes may outlive it.
    """

    stop_timeout = 10.0
    sweep_group = True

    def __init__(
        self,
        spec: str,
        *,
        url: str = "",
        api_key: str = "",
        api_secret: str = "",
        agent_name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        providers: str = "offline",
        offline_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.spec = spec
        self.providers = providers
        """``offline``: the agent's cloud providers are replaced by doubles; ``real``: kept."""
        self.offline_dir = Path(offline_dir) if offline_dir else None
        """Where the test writes each call's :class:`~pytest_livekit.agent.substitution.OfflinePlan`."""
        self.url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self.agent_name = agent_name or f"pytest-livekit-{secrets.token_hex(4)}"
        self.cwd = Path(cwd) if cwd else Path.cwd()
        self.log_path = Path(log_path) if log_path else Path(
            os.environ.get("TMPDIR", "/tmp")
        ) / f"pytest-livekit-worker-{self.agent_name}.log"
        self.health_port: int | None = None
        self.job_errors: list[str] = []
        """Tracebacks of job failures seen in the worker log."""
        self.jobs: dict[str, str] = {}
        """The jobs the server offered this worker: room name -> job id (from its log)."""
        self._connected = False
        self._listeners: list[Callable[[str, str | None], None]] = []

    def __repr__(self) -> str:
        return f"<AgentWorker {self.spec} name={self.agent_name!r} pid={self.pid}>"

    @property
    def members(self) -> list[AgentWorker]:
        """The worker processes serving the agent name: this one (see :class:`WorkerGroup`)."""
        return [self]

    @property
    def connected(self) -> bool:
        """Whether :meth:`connect` has handed the worker its server."""
        return self._connected

    def worker_for(self, room: str) -> AgentWorker | None:
        """This worker if the server offered it the job of ``room``, else None."""
        return self if room in self.jobs else None

    def on_job_error(self, callback: Callable[[str, str | None], None]) -> Callable[[], None]:
        """Call ``callback(traceback_text)`` from the reader thread on each job failure; returns
        a function that unregisters it.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def start(self) -> AgentWorker:
        """Start the worker (or finish starting a :meth:`spawn`-ed one) and wait until it has
        registered with the server.
        """
        if self._proc is None:
            self.spawn()
        if not self._connected:
            self.connect(self.url, self._api_key, self._api_secret)
        self.wait_until_ready()
        return self

    def spawn(self) -> AgentWorker:
        """Start the worker process without a server yet: it imports livekit-agents and the
        agent's module (about 2 s), then waits for :meth:`connect`. Lets a session start its
        workers while its server starts.
        """
        if self._proc is not None:
            return self
        self.health_port = free_port("127.0.0.1", socket.SOCK_STREAM)
        env = self._environment()
        env.update(PYTHONUNBUFFERED="1", LIVEKIT_AGENT_NAME_OVERRIDE=self.agent_name)
        env["PYTHONPATH"] = _import_path(env.get("PYTHONPATH", ""))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            [sys.executable, "-m", "pytest_livekit.agent._worker_main", self.spec, str(self.health_port)],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE,  # the server's URL and keys arrive here (connect)
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        self._follow_output(proc.stdout, self._read_line, log_to=self.log_path, name="pytest-livekit-worker-log")
        return self

    def connect(self, url: str, api_key: str, api_secret: str) -> None:
        """Hand a :meth:`spawn`-ed worker its server (through its stdin, never argv or the
        environment); it registers once its imports are done (see :meth:`start` to wait).
        """
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("connect() needs a spawned worker")
        if not url:
            raise ValueError("connect() needs the server's URL")
        self.url, self._api_key, self._api_secret = url, api_key, api_secret
        line = json.dumps({"url": url, "api_key": api_key, "api_secret": api_secret}) + "\n"
        try:
            self._proc.stdin.write(line.encode())
            self._proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # it already exited: wait_until_ready reports its log
        self._connected = True

    def _environment(self) -> dict[str, str]:
        """The worker's environment before the server's URL and keys are added.

        The test's ``LIVEKIT_*`` variables are the local server's business and are dropped, but
        LiveKit Inference settings (``LIVEKIT_INFERENCE_*``, ``LIVEKIT_REMOTE_EOT_URL``) are the
        agent's own and pass in ``real`` mode. ``offline``: every provider credential is a
        placeholder (the agent never sees a real key), and the worker substitutes and guards.
        """
        keep = ("LIVEKIT_INFERENCE_", "LIVEKIT_REMOTE_EOT_URL")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LIVEKIT_") or (self.providers == "real" and k.startswith(keep))
        }
        env.pop("PYTEST_LIVEKIT_PROVIDERS", None)
        env.pop(OFFLINE_DIR_ENV, None)
        # placeholders the test process holds for its own offline calls are not real settings
        env = {k: v for k, v in env.items() if not is_placeholder(v)}
        if self.providers == "real":
            # LiveKit Inference falls back to LIVEKIT_API_KEY/SECRET, which in the worker are the
            # local server's: hand the user's own over under the names inference reads first.
            for name in ("API_KEY", "API_SECRET"):
                user_value = os.environ.get(f"LIVEKIT_{name}")
                if user_value and not env.get(f"LIVEKIT_INFERENCE_{name}"):
                    env[f"LIVEKIT_INFERENCE_{name}"] = user_value
        if self.providers == "offline":
            folder = self.offline_dir or (self.log_path.parent / "offline")
            env.update(offline_environment(folder, override=True))
            env["PYTEST_LIVEKIT_PROVIDERS"] = "offline"
            env[OFFLINE_DIR_ENV] = str(folder)
        return env

    def _read_line(self, raw: bytes) -> None:
        """One line of the worker's output (JSON log lines): registration and job failures."""
        line = raw.decode(errors="replace")
        event = _parse(line)
        message = event.get("message", line)
        if not self._ready and _READY_MESSAGE in message:
            self._mark_ready()
        room = event.get("room") if isinstance(event.get("room"), str) else None
        if room and message == _JOB_REQUEST_MESSAGE:
            self.jobs[room] = str(event.get("job_id", ""))
        exc_text = event.get("exc_info", "") or event.get("exception", "")
        head = message.split("\n", 1)[0]
        # in a job (it names the room): an exception livekit-agents caught and only logged (a
        # tool, a provider stream), or the job's process ending mid-job (killed, crashed)
        caught = bool(room and exc_text and event.get("level") == "ERROR" and str(event.get("name", "")).startswith("livekit.agents"))
        job_died = bool(room and head.startswith("process exited with non-zero exit code"))
        if any(m in message for m in _JOB_FAILED_MESSAGES) or caught or job_died:
            if caught and not any(m in message for m in _JOB_FAILED_MESSAGES):
                from pytest_livekit.agent.error_log import failed_part

                last = [ln for ln in str(exc_text).strip().splitlines() if ln.strip()][-1:]
                error = last[0] if last else head
                head = f"the agent's {failed_part(head, event.get('function'))} raised {error} (livekit-agents logged: {head!r})"
                message = f"{head}\n{exc_text}"
                exc_text = ""
            elif job_died:
                message = f"the agent's job process {head.removeprefix('process ')} (pid {event.get('pid')}) mid-job"
            text = redact(f"{message}\n{exc_text}".rstrip(), self._secrets())
            self.job_errors.append(text)
            for cb in list(self._listeners):
                cb(text, room)

    def _died_before_ready(self, code: int | None) -> BaseException:
        return WorkerStartError(
            f"agent worker for {self.spec!r} exited with code {code} before registering.\n"
            f"Last log lines ({self.log_path}):\n{self.log_tail()}\n"
            "Hint: run the agent by hand with `python -m pytest_livekit.agent._worker_main "
            f"{self.spec} 0` and the LIVEKIT_* variables to see the error."
        )

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return WorkerStartError(
            f"agent worker for {self.spec!r} did not register with {self.url} within "
            f"{timeout:.0f} s.\nLast log lines ({self.log_path}):\n{self.log_tail()}"
        )

    def _log_source(self) -> Path | None:
        return self.log_path

    def _secrets(self) -> list[str]:
        return [self._api_secret]


def _import_path(existing: str) -> str:
    """The worker's ``PYTHONPATH``: the folders this test process imports from that are not the
    interpreter's own (the rootdir, folders a conftest or pytest's rootdir insertion added), so
    that what imports in-process imports in the worker, then whatever was already set.
    """
    prefixes = {os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    own = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if any(real == p or real.startswith(p + os.sep) for p in prefixes) or "site-packages" in real:
            continue
        if real not in own:
            own.append(real)
    return os.pathsep.join([*own, *(p for p in existing.split(os.pathsep) if p and p not in own)])


#: Environment names that carry a provider's key, secret, endpoint or credentials file.
_PROVIDER_SETTING_PARTS = ("KEY", "SECRET", "TOKEN", "URL", "CREDENTIALS", "ENDPOINT", "PROJECT", "REGION")


def _provider_settings_digest() -> str:
    """A digest of the provider settings in the environment: a ``real`` worker keeps the
    environment it started with, so other keys or endpoints need another worker.
    """
    import hashlib

    items = sorted(
        (k, v)
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "PYTEST_")) and any(p in k for p in _PROVIDER_SETTING_PARTS)
    )
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def _parse(line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def stop_all_workers() -> None:
    """Stop every worker this process started and has not stopped yet (the safety net: 3 s each
    to drain).
    """
    stop_all(AgentWorker, timeout=3.0)


class DispatchedAgent:
    """The agent of one call, dispatched to a worker by agent name (same interface as
    :class:`~pytest_livekit.agent.in_process.InProcessAgent`).
    """

    def __init__(
        self,
        worker: AgentWorker | WorkerGroup,
        *,
        room_name: str,
        http_url: str,
        api_key: str,
        api_secret: str,
        job_metadata: str = "",
    ) -> None:
        self.worker = worker
        self.room_name = room_name
        self._http_url = http_url
        self._api_key = api_key
        self._api_secret = api_secret
        self._metadata = job_metadata
        self.identity: str | None = None
        self.dispatch_id: str | None = None
        self.redispatches = 0
        """How many times the dispatch was re-sent because the server assigned no job."""
        self.failure_text: str | None = None
        self._failed = asyncio.Event()
        self._on_failure: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_exit: Callable[[], None] | None = None

    def on_failure(self, callback: Callable[[], None]) -> None:
        """Register a callback run when a job of this worker fails."""
        self._on_failure.append(callback)

    def _job_failed(self, text: str, room: str | None = None) -> None:  # reader or watcher thread
        if room is not None and room != self.room_name:
            return  # another call's job on the same worker
        loop = self._loop

        def mark() -> None:
            if self.failure_text is None:
                self.failure_text = text
            self._failed.set()
            for cb in self._on_failure:
                cb()

        with contextlib.suppress(RuntimeError):  # the call's loop is gone: nothing to fail
            loop.call_soon_threadsafe(mark)

    @property
    def job_worker(self) -> AgentWorker | None:
        """The worker process the server gave this call's job to (from the workers' logs), once
        it did; None before.
        """
        for member in self.worker.members:
            if member.worker_for(self.room_name) is not None:
                return member
        return None

    async def wait_until_failed(self) -> None:
        """Return when the job has failed (never, for a job that does not)."""
        await self._failed.wait()

    def raise_if_failed(self) -> None:
        """Raise :class:`AgentCrashedError` with the job's traceback if it failed."""
        if self.failure_text is not None:
            log = (self.job_worker or self.worker).log_path
            raise AgentCrashedError(
                f"the agent job in worker {self.worker.spec} ({self.worker.agent_name}) failed:\n"
                f"{self.failure_text}\nWorker log: {log}"
            )

    def _worker_exited(self, member: AgentWorker, how: str) -> None:  # an exit watcher thread
        """A worker process ended on its own: this call's job is gone if it ran there (with one
        worker: always); a call whose job another worker of the group runs goes on.
        """
        if len(self.worker.members) > 1 and member.worker_for(self.room_name) is None:
            return
        pid = f" (pid {member.pid})" if member.pid is not None else ""
        self._job_failed(
            f"the agent worker process{pid} {how} during the call.\n"
            f"Last log lines ({member.log_path}):\n{member.log_tail(lines=15)}"
        )

    async def start(self) -> None:
        """Explicitly dispatch the worker's agent into the room (after the caller created it)."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.worker.on_job_error(self._job_failed)
        exits = [
            member.on_exit(functools.partial(self._worker_exited, member)) for member in self.worker.members
        ]

        def unsubscribe_exits() -> None:
            for unsubscribe in exits:
                unsubscribe()

        self._unsubscribe_exit = unsubscribe_exits
        await self._dispatch()

    async def _dispatch(self) -> None:
        from livekit import api

        async with api.LiveKitAPI(self._http_url, self._api_key, self._api_secret) as lk:
            if self.dispatch_id is not None:
                await lk.agent_dispatch.delete_dispatch(self.dispatch_id, self.room_name)
            dispatch = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=self.worker.agent_name, room=self.room_name, metadata=self._metadata
                )
            )
        self.dispatch_id = dispatch.id

    async def _dispatch_has_job(self) -> bool:
        from livekit import api

        async with api.LiveKitAPI(self._http_url, self._api_key, self._api_secret) as lk:
            dispatches = await lk.agent_dispatch.list_dispatch(self.room_name)
        return any(d.id == self.dispatch_id and len(d.state.jobs) > 0 for d in dispatches)

    async def find_identity(
        self, agents: Callable[[], list[str]], changed: asyncio.Event, timeout: float
    ) -> str:
        """Wait until an agent-kind participant joined the call and return its identity.

        Args:
            agents: the identities of the agent-kind participants the caller sees now.
            changed: set whenever the caller's view changed.
            timeout: seconds to wait.
        """
        from pytest_livekit.call.observer import wait_until

        def agent_present() -> bool:
            present = agents()
            if present:
                self.identity = present[0]
                return True
            return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await wait_until(
            agent_present, changed, min(REDISPATCH_AFTER, max(0.0, deadline - loop.time()))
        ):
            if loop.time() >= deadline:
                break
            # livekit-server 1.13.5 sometimes never assigns a dispatch created right after the
            # previous test's room was deleted (seen in 1 of 8 calls, with API and token dispatch
            # alike; the worker never gets an availability request). A dispatch that still has no
            # job is deleted and sent again; one that has a job is just slow.
            if self.redispatches < MAX_REDISPATCHES and not await self._dispatch_has_job():
                self.redispatches += 1
                await self._dispatch()
        if self.identity is None:
            raise CallTimeoutError(
                f"no agent joined room {self.room_name!r} within {timeout:.0f} s after dispatching "
                f"{self.worker.agent_name!r}.\nWorker log tail ({self.worker.log_path}):\n"
                f"{self.worker.log_tail()}"
            )
        assert self.identity is not None
        return self.identity

    async def aclose(self) -> None:
        """Nothing to stop here: deleting the room ends the job in the worker."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._unsubscribe_exit is not None:
            self._unsubscribe_exit()


class WorkerGroup:
    """Several :class:`AgentWorker` processes registered under one agent name, as a fleet of
    workers runs in production: livekit-server gives each job to one of them (at random, weighted
    by ``1 - load``; the test workers report a load of 0). Looks like one :class:`AgentWorker`
    to a call: its job errors and exits come from every member, and
    :meth:`worker_for` says which member took a room's job.

    A member that dies fails only the call whose job it ran (:class:`DispatchedAgent`); the
    server drops it when its connection closes, and later calls go to the others.
    """

    def __init__(self, members: list[AgentWorker]) -> None:
        if not members:
            raise ValueError("a worker group needs at least one worker")
        names = {m.agent_name for m in members}
        if len(names) != 1:
            raise ValueError(f"the workers of a group share one agent name, got {sorted(names)}")
        self.members = list(members)
        """The worker processes, in start order."""

    def __repr__(self) -> str:
        return f"<WorkerGroup {self.spec} name={self.agent_name!r} pids={[m.pid for m in self.members]}>"

    # -- what a call reads --------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The agent's ``module:attribute``."""
        return self.members[0].spec

    @property
    def agent_name(self) -> str:
        """The explicit-dispatch name every member registered under."""
        return self.members[0].agent_name

    @property
    def providers(self) -> str:
        """``offline`` or ``real``."""
        return self.members[0].providers

    @property
    def offline_dir(self) -> Path | None:
        """Where the test writes each call's offline plan (shared by the members)."""
        return self.members[0].offline_dir

    @property
    def url(self) -> str:
        """The server URL the members registered with."""
        return self.members[0].url

    @property
    def log_path(self) -> Path:
        """The first member's log (:meth:`log_tail` shows every member's)."""
        return self.members[0].log_path

    @property
    def pid(self) -> int | None:
        """The pid of the first member still running; None when none is."""
        return next((m.pid for m in self.members if m.is_running()), None)

    @property
    def job_errors(self) -> list[str]:
        """Every member's job failures."""
        return [e for m in self.members for e in m.job_errors]

    def is_running(self) -> bool:
        """True while at least one member runs."""
        return any(m.is_running() for m in self.members)

    def worker_for(self, room: str) -> AgentWorker | None:
        """The member the server offered ``room``'s job to, if any did."""
        return next((m for m in self.members if room in m.jobs), None)

    def log_tail(self, lines: int = 30, width: int = 400) -> str:
        """The last lines of each member's log, one block each."""
        per = max(5, lines // len(self.members))
        return "\n".join(
            f"-- worker {i} (pid {m.pid}) {m.log_path}:\n{m.log_tail(per, width)}" for i, m in enumerate(self.members)
        )

    def on_job_error(self, callback: Callable[[str, str | None], None]) -> Callable[[], None]:
        """:meth:`AgentWorker.on_job_error` on every member; returns one unregister function."""
        removers = [m.on_job_error(callback) for m in self.members]

        def remove() -> None:
            for r in removers:
                r()

        return remove

    # -- lifecycle ----------------------------------------------------------------------------
    def spawn(self) -> WorkerGroup:
        """Spawn every member (see :meth:`AgentWorker.spawn`)."""
        for m in self.members:
            m.spawn()
        return self

    @property
    def connected(self) -> bool:
        """Whether every member has been handed its server."""
        return all(m.connected for m in self.members)

    def connect(self, url: str, api_key: str, api_secret: str) -> None:
        """Hand every member its server (see :meth:`AgentWorker.connect`)."""
        for m in self.members:
            m.connect(url, api_key, api_secret)

    def start(self) -> WorkerGroup:
        """Start every member (they import at once) and wait until each has registered; if one
        fails, stop them all and raise its error.
        """
        try:
            for m in self.members:
                if m.pid is None:
                    m.spawn()
            for m in self.members:
                m.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop every member (each drains its jobs)."""
        first: BaseException | None = None
        for m in self.members:
            try:
                m.stop(timeout)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


class WorkerPool:
    """The worker processes of each agent spec, started on first use and stopped together
    (session scope): one :class:`AgentWorker`, or with ``workers`` > 1 a :class:`WorkerGroup` of
    that many processes under one agent name.

    Args:
        cwd: working directory for the workers (the agent modules are imported from it).
        log_dir: folder for ``worker-<name>.log`` files (``worker-<name>-<i>.log`` in a group).
        startup_timeout: seconds to wait for each worker to register.
        workers: how many worker processes register under each agent name (default 1).
    """

    def __init__(self, *, cwd: Path, log_dir: Path, startup_timeout: float = 60.0, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 worker per agent, got {workers}")
        self.cwd = cwd
        self.log_dir = log_dir
        self.startup_timeout = startup_timeout
        self.size = workers
        """Worker processes per agent name."""
        self._workers: dict[tuple[str, str, str, str], AgentWorker | WorkerGroup] = {}
        self._warm: dict[tuple[str, str, str], AgentWorker | WorkerGroup] = {}
        """Spawned by :meth:`prestart`, waiting for a server."""
        self._failures: dict[tuple[str, str, str], str] = {}

    def prestart(self, spec: str, *, providers: str = "offline") -> None:
        """Spawn the worker for ``spec`` before the session has a server (its imports overlap
        the server's start); :meth:`get` hands it the server. Once per spec and providers.
        """
        key = self._spec_key(spec, providers)
        if key not in self._warm and key not in self._failures:
            self._warm[key] = self._new_worker(spec, providers).spawn()

    def get(
        self, spec: str, *, url: str, api_key: str, api_secret: str, providers: str = "offline"
    ) -> AgentWorker | WorkerGroup:
        """The running worker for ``spec`` on the server at ``url`` with these ``providers``
        (``offline`` or ``real``: a different environment, so a different worker), started if
        needed (or the one :meth:`prestart` spawned). A ``real`` worker takes the environment as
        it is when it starts. Returns an :class:`AgentWorker`, or a :class:`WorkerGroup` when the
        pool runs several workers per agent (it is kept while one of its members runs).
        """
        spec_key = self._spec_key(spec, providers)
        key = (*spec_key, url)
        failed = self._failures.get(spec_key)
        if failed is not None:
            # the same worker cannot start now either: every later test fails at once, same cause
            raise WorkerStartError(f"{failed}\n(The worker failed to start earlier in this session; not retried.)")
        worker = self._workers.get(key)
        if worker is not None and worker.pid is not None and not worker.is_running():
            # it died (killed, crashed) after an earlier call: the server dropped it, so a
            # dispatch to its name would wait for nobody. Reap it; the next test gets a new one.
            worker.stop()
            worker = None
        if worker is None or worker.pid is None:
            worker = self._warm.pop(spec_key, None)
            if worker is not None and worker.connected and worker.url != url:
                worker.stop()  # handed a server that then moved to other ports (a port race)
                worker = None
            worker = worker or self._new_worker(spec, providers).spawn()
            self._workers[key] = worker
            try:
                if not worker.connected:
                    worker.connect(url, api_key, api_secret)
                worker.start()
            except WorkerStartError as exc:
                self._failures[spec_key] = str(exc)
                raise
        return worker

    def connect_prestarted(self, url: str, api_key: str, api_secret: str) -> None:
        """Hand the prestarted workers their server as soon as it is known (before it is ready):
        each registers once its imports are done, so its job processes start while pytest still
        collects, not when the first call asks for it. :meth:`get` replaces one whose server
        then moved.
        """
        for worker in self._warm.values():
            if not worker.connected:
                worker.connect(url, api_key, api_secret)

    @property
    def prestarted(self) -> list[AgentWorker | WorkerGroup]:
        """Workers spawned by :meth:`prestart` that no call has used yet."""
        return list(self._warm.values())

    def keep_prestarted(self, needed: set[tuple[str, str]]) -> None:
        """Stop the prestarted workers whose ``(spec, providers)`` no selected test needs."""
        for key in [k for k in self._warm if (k[0], k[1]) not in needed]:
            self._warm.pop(key).stop()

    @staticmethod
    def _spec_key(spec: str, providers: str) -> tuple[str, str, str]:
        return (spec, providers, _provider_settings_digest() if providers == "real" else "")

    def _new_worker(self, spec: str, providers: str) -> AgentWorker | WorkerGroup:
        name = f"pytest-livekit-{secrets.token_hex(4)}"

        def worker(log_name: str) -> AgentWorker:
            return AgentWorker(
                spec,
                agent_name=name,
                cwd=self.cwd,
                log_path=self.log_dir / log_name,
                startup_timeout=self.startup_timeout,
                providers=providers,
                offline_dir=self.log_dir / "offline",
            )

        if self.size == 1:
            return worker(f"worker-{name}.log")
        return WorkerGroup([worker(f"worker-{name}-{i}.log") for i in range(self.size)])

    def stop_all(self) -> None:
        """Stop every worker of the pool."""
        for worker in [*self._workers.values(), *self._warm.values()]:
            worker.stop()
        self._workers.clear()
        self._warm.clear()
