"""Integration: pytest SIGKILLed or interrupted (Ctrl-C) in the middle of a call in Docker server
mode: the last row of the fault matrix, for the container and docker's own processes.

A SIGKILLed pytest cannot remove its container, and dockerd owns it, so it outlives the run; the
run's own children (caller process, worker and its job processes, ``docker logs -f``) die with it
(parent-death signal). The next session start removes the container (its livekit-server and its
containerd shim go with it) and the config folder it mounts. Ctrl-C removes the container before
pytest exits. With ``--network host`` there is never a docker-proxy.

The dead run's container is found by the owner label (``io.pytest-livekit.owner-pid``) the
plugin puts on it, and its processes on the host by /proc: the container's init pid
(``docker inspect``), its shim (``containerd-shim-runc-v2 ... -id <container id>``), and any
process the Docker engine's tree (dockerd and its descendants) gained since the test started.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import process_gone

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"
OWNER_LABEL = "io.pytest-livekit.owner-pid"

MID_CALL = '''
import asyncio


async def test_hold_a_call(make_livekit_call, pytestconfig):
    from pytest_livekit.call.caller import caller_host
    from pytest_livekit.pytest_run.keys import SESSION_KEY

    async with make_livekit_call(agent_mode="worker") as call:
        await call.say("Hello")
        server = pytestconfig.stash[SESSION_KEY].server
        ports = [p for p in (server.ports.http, server.ports.rtc_udp, server.ports.turn_udp) if p]
        print(f"MID_CALL container={server.container_id} ports={','.join(map(str, ports))} "
              f"pids={caller_host().pid},{call.worker.pid}", flush=True)
        await call.say("I want a refund for order one two three four")  # the signal lands here
        await asyncio.sleep(60)
'''

# -s puts the line after pytest's own progress text; a traceback's source line does not match
MID_CALL_LINE = re.compile(
    r"MID_CALL container=(?P<container>[0-9a-f]{64}) ports=(?P<ports>[\d,]+) pids=(?P<pids>\d+,\d+)"
)

NEXT_SESSION = '''
def test_next_session_starts(livekit_server, pytestconfig):
    from pytest_livekit.pytest_run.keys import SESSION_KEY

    assert livekit_server.mode == "docker"
    print("REAPED=" + ",".join(pytestconfig.stash[SESSION_KEY].server.reaped) + ";", flush=True)
'''


@dataclass
class MidCall:
    """What a run held in the middle of its call, seen from outside."""

    pytest_pid: int
    container_id: str
    ports: list[int]
    caller_and_worker: list[int]
    tree: list[int]
    """The pytest process's descendants (caller, worker, job processes, ``docker logs -f``)."""
    container_pid: int
    """livekit-server in the container, as the host sees it."""
    shims: list[int]
    config_dir: Path
    engine_before: set[int]
    """The Docker engine's processes before the run started."""

    @classmethod
    def observe(cls, proc: subprocess.Popen[str], engine_before: set[int]) -> MidCall:
        """Wait for the run's mid-call line, then look at what it holds."""
        found = _read_until(proc, MID_CALL_LINE, 90)
        container_id = found["container"]
        status, container_pid = _container_state(container_id)
        assert status == "running", f"the run's container is {status} mid-call"
        mounts = _docker(
            "inspect", "-f", '{{range .Mounts}}{{.Source}}{{"\\n"}}{{end}}', container_id
        ).split()
        assert len(mounts) == 1, mounts
        return cls(
            pytest_pid=proc.pid,
            container_id=container_id,
            ports=[int(p) for p in found["ports"].split(",")],
            caller_and_worker=[int(p) for p in found["pids"].split(",")],
            tree=_descendants(proc.pid),
            container_pid=container_pid,
            shims=_shims(container_id),
            config_dir=Path(mounts[0]).parent,
            engine_before=engine_before,
        )

    def check_held(self) -> None:
        """The snapshot holds what the rest of the test checks for (else it checks nothing)."""
        assert set(self.caller_and_worker) <= set(self.tree), (self.caller_and_worker, self.tree)
        assert any(Path(_argv(p)[0]).name == "docker" for p in self.tree), "no `docker logs -f` follower"
        assert self.shims, f"no containerd shim of container {self.container_id}:\n{_process_list()}"
        assert self.container_pid in self.engine_new(), "the container's process is not in the engine's tree"
        assert self.config_dir.is_dir()
        assert not _docker_proxies(self.ports), "a docker-proxy with --network host"

    def leftovers(self) -> dict[str, Any]:
        """Everything of the run still there (empty when clean)."""
        found: dict[str, Any] = {
            "containers": _containers_of(self.pytest_pid),
            "container state": _container_state(self.container_id)[0],
            "livekit-server": [self.container_pid] if _alive(self.container_pid) else [],
            "shims": [p for p in self.shims if _alive(p)],
            "pytest's descendants": [p for p in self.tree if _alive(p)],
            "processes naming the container": _mentioning(self.container_id),
            "docker-proxy": _docker_proxies(self.ports),
            "engine's new processes": {p: " ".join(_argv(p)) for p in self.engine_new()},
            "ports held": _held(self.ports),
            "config folder": self.config_dir.exists(),
        }
        return {k: v for k, v in found.items() if v and v != "gone"}

    def engine_new(self) -> list[int]:
        """Processes the Docker engine's tree gained since the run started."""
        return sorted(_engine_tree() - self.engine_before)

    def wait_engine_settled(self, timeout: float) -> None:
        """Each process the engine gained exits within ``timeout`` s (a later run's shim may
        still be on its way out)."""
        for pid in self.engine_new():
            assert process_gone(pid, timeout), f"{_argv(pid)} (pid {pid}) is still in the Docker engine's tree"


def test_sigkill_of_pytest_mid_call_leaves_nothing_after_the_next_session_start(
    tmp_path: Path, record_property: Any
) -> None:
    """(a) Right after the kill the run's own processes die; the container may outlive it (dockerd
    owns it): recorded. (b) The next Docker-mode session removes the container, its livekit-server
    and shim, and its config folder; no docker-proxy ever; the next run's test passes."""
    runs: list[subprocess.Popen[str]] = []
    seen: list[MidCall] = []
    try:
        engine_before = _engine_tree()
        runs.append(dead := _start_run(tmp_path / "killed", MID_CALL))
        mid = MidCall.observe(dead, engine_before)
        seen.append(mid)
        mid.check_held()
        killed = time.monotonic()
        os.kill(dead.pid, signal.SIGKILL)
        dead.communicate(timeout=30)
        for pid in mid.tree:
            assert process_gone(pid, 15.0), f"{_argv(pid)} (pid {pid}) outlived the SIGKILL of its pytest"
        tree_gone = time.monotonic() - killed
        after_kill = mid.leftovers()
        print(f"after SIGKILL: {after_kill}")
        record_property("after_sigkill", after_kill)
        assert not after_kill.get("pytest's descendants") and not after_kill.get("docker-proxy"), after_kill

        next_started = time.monotonic()
        runs.append(nxt := _start_run(tmp_path / "next", NEXT_SESSION))
        assert process_gone(mid.container_pid, 45.0), "the dead run's livekit-server outlived the next session start"
        server_gone = time.monotonic() - killed
        for shim in mid.shims:
            assert process_gone(shim, 15.0), f"the dead run's containerd shim (pid {shim}) outlived its container"
        clean = time.monotonic() - killed
        next_start_to_clean = time.monotonic() - next_started
        out = nxt.communicate(timeout=45)[0]
        assert nxt.returncode == 0 and "1 passed" in out, out[-4000:]
        reaped = out.split("REAPED=", 1)[1].split(";", 1)[0].split(",")
        assert any(r and mid.container_id.startswith(r) for r in reaped), (reaped, mid.container_id)
        mid.wait_engine_settled(15.0)
        assert mid.leftovers() == {}
        timings = {
            "tree_gone_s": tree_gone, "server_gone_s": server_gone, "clean_s": clean,
            "next_start_to_clean_s": next_start_to_clean,
        }
        print("seconds from SIGKILL: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        record_property("seconds_from_sigkill", timings)
    finally:
        _cleanup(runs, seen)


def test_ctrl_c_of_pytest_mid_call_removes_the_container_before_pytest_exits(
    tmp_path: Path, record_property: Any
) -> None:
    """A terminal's Ctrl-C (SIGINT to pytest's process group) mid-call: the container is gone
    when pytest exits; its livekit-server, shim, config folder and pytest's children soon after."""
    runs: list[subprocess.Popen[str]] = []
    seen: list[MidCall] = []
    try:
        engine_before = _engine_tree()
        runs.append(run := _start_run(tmp_path / "interrupted", MID_CALL))
        mid = MidCall.observe(run, engine_before)
        seen.append(mid)
        mid.check_held()
        interrupted = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)
        out = run.communicate(timeout=45)[0]
        exited = time.monotonic() - interrupted
        assert "KeyboardInterrupt" in out, out[-4000:]
        at_exit = {
            "containers": _containers_of(run.pid), "container state": _container_state(mid.container_id)[0]
        }
        assert at_exit == {"containers": [], "container state": "gone"}, f"when pytest exited: {at_exit}"
        for pid in [mid.container_pid, *mid.shims, *mid.tree]:
            assert process_gone(pid, 15.0), f"{_argv(pid)} (pid {pid}) outlived Ctrl-C of its pytest"
        clean = time.monotonic() - interrupted
        mid.wait_engine_settled(15.0)
        assert mid.leftovers() == {}
        timings = {"pytest_exited_s": exited, "clean_s": clean}
        print("seconds from Ctrl-C: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        record_property("seconds_from_ctrl_c", timings)
    finally:
        _cleanup(runs, seen)


# -- the inner runs -------------------------------------------------------------------------------


def _start_run(folder: Path, source: str) -> subprocess.Popen[str]:
    """An inner pytest run of ``source`` in Docker mode, in its own session: its process group is
    what a terminal's Ctrl-C reaches, and it is not the outer run's."""
    folder.mkdir()
    (folder / "test_inner.py").write_text(source)
    (folder / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--livekit-server=docker"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def _read_until(proc: subprocess.Popen[str], marker: re.Pattern[str], timeout: float) -> re.Match[str]:
    """The first match of ``marker`` in an output line of ``proc``; the run is killed if it does
    not come within ``timeout`` s (that bounds the blocking read)."""
    assert proc.stdout is not None
    guard = threading.Timer(timeout, proc.kill)
    guard.start()
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            found = marker.search(line)
            if found is not None:
                return found
    finally:
        guard.cancel()
    raise AssertionError(f"the inner run ended without {marker.pattern!r}:\n{''.join(seen)[-4000:]}")


def _cleanup(runs: list[subprocess.Popen[str]], seen: list[MidCall]) -> None:
    """Leave nothing behind when the test fails half-way."""
    for proc in runs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    for mid in seen:
        subprocess.run(["docker", "rm", "-f", mid.container_id], capture_output=True, timeout=60, check=False)
        shutil.rmtree(mid.config_dir, ignore_errors=True)


# -- Docker ---------------------------------------------------------------------------------------


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _containers_of(pytest_pid: int) -> list[str]:
    """Containers (any state) labelled as owned by ``pytest_pid``."""
    return _docker("ps", "-aq", "--no-trunc", "--filter", f"label={OWNER_LABEL}={pytest_pid}").split()


def _container_state(cid: str) -> tuple[str, int]:
    """(status, host pid of its init) of container ``cid``; ("gone", 0) once removed."""
    proc = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}} {{.State.Pid}}", cid],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if proc.returncode != 0:
        assert "No such" in proc.stderr, proc.stderr
        return "gone", 0
    status, pid = proc.stdout.split()
    return status, int(pid)


# -- processes on the host ------------------------------------------------------------------------


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1] or ["?"]
    except OSError:
        return ["(gone)"]


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child in _pids():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _mentioning(text: str) -> dict[int, str]:
    """Processes whose command line holds ``text`` (a container id: its shim, runc, logs)."""
    found = {pid: " ".join(_argv(pid)) for pid in _pids() if pid != os.getpid()}
    return {pid: cmd for pid, cmd in found.items() if text in cmd}


def _shims(cid: str) -> list[int]:
    return [pid for pid in _pids() if "containerd-shim" in Path(_argv(pid)[0]).name and cid in _argv(pid)]


def _docker_proxies(ports: list[int]) -> dict[int, str]:
    """docker-proxy processes forwarding one of ``ports``."""
    wanted = {str(p) for p in ports}
    found = {}
    for pid in _pids():
        argv = _argv(pid)
        if Path(argv[0]).name == "docker-proxy" and any(
            a == "-host-port" and b in wanted for a, b in zip(argv, argv[1:], strict=False)
        ):
            found[pid] = " ".join(argv)
    return found


def _engine_tree() -> set[int]:
    """The Docker engine's processes on this host: dockerd (the one DOCKER_HOST names) and its
    descendants (containerd, docker-proxy), and its containerd's shims with their descendants
    (the containers' processes): a shim detaches, its parent is init."""
    host = os.environ.get("DOCKER_HOST", "")
    engines = [
        pid for pid in _pids()
        if Path(_argv(pid)[0]).name == "dockerd" and (not host or any(host in arg for arg in _argv(pid)))
    ]
    if not engines:
        reason = f"the Docker engine ({host or 'dockerd'}) runs elsewhere: its processes are not visible here"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    tree = {pid for engine in engines for pid in [engine, *_descendants(engine)]}
    # the containerd dockerd talks to: its own (socket next to its config) or --containerd's
    sockets = {_option(_argv(pid), "--containerd") for pid in engines}
    sockets |= {
        str(Path(config).parent / "containerd.sock")
        for pid in tree
        if Path(_argv(pid)[0]).name == "containerd" and (config := _option(_argv(pid), "--config"))
    }
    sockets.discard(None)
    for pid in _pids():
        argv = _argv(pid)
        if "containerd-shim" in Path(argv[0]).name and _option(argv, "-namespace") == "moby":
            if not sockets or _option(argv, "-address") in sockets:
                tree |= {pid, *_descendants(pid)}
    return tree


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``name value`` or ``name=value``)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _process_list() -> str:
    return "\n".join(f"{pid} {' '.join(_argv(pid))[:200]}" for pid in _pids())


def _alive(pid: int) -> bool:
    return not process_gone(pid, 0.0)




def _held(ports: list[int]) -> list[str]:
    """``ports`` someone still listens on, TCP or UDP (SO_REUSEADDR: TIME_WAIT is not holding)."""
    held = []
    for port in ports:
        for kind, name in ((socket.SOCK_STREAM, "tcp"), (socket.SOCK_DGRAM, "udp")):
            with socket.socket(socket.AF_INET, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    held.append(f"{port}/{name}")
    return held
