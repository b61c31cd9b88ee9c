"""livekit-server in Docker (``--livekit-server=docker``), same rules as binary mode.

The container runs the official image (``livekit/livekit-server``, tag pinned to the version the
plugin is tested with) with host networking: WebRTC media needs the server's UDP port reachable at
the address it advertises, which port mapping on a bridge breaks. The config (with the secret) is
a file in a 0700 folder, mounted read-only, so it is in neither ``docker inspect`` nor the process
list.

Each container carries labels tying it to the test session and the pytest process. Containers of
a pytest process that no longer exists (a crashed or SIGKILLed run) are removed at the next start,
with the config folder the dead run left behind. The owner is known by its pid and its start time
(a reused pid is not the owner), within its boot and pid namespace: a run in another namespace
sharing the engine is not judged from here, so its live containers are never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pytest_livekit.errors import ServerError, ServerStartError, ServerStartTimeoutError
from pytest_livekit.server.binary import DEFAULT_SERVER_VERSION, LivekitServer
from pytest_livekit.server.process import spawn, stop_process_group

#: Image used by ``--livekit-server=docker`` unless ``--livekit-docker-image`` says otherwise.
DEFAULT_IMAGE = f"livekit/livekit-server:v{DEFAULT_SERVER_VERSION}"
LABEL = "io.pytest-livekit.session"
OWNER_LABEL = "io.pytest-livekit.owner-pid"
#: ``<boot id>/<pid namespace>/<start time>`` of the owner pid (Linux; absent elsewhere).
OWNER_ID_LABEL = "io.pytest-livekit.owner-id"
#: Prefix of the temporary folder holding a container's config (the secret).
CONFIG_DIR_PREFIX = "pytest-livekit-docker-"


class DockerUnavailableError(ServerError):
    """No Docker client, or the client cannot reach a Docker engine."""


def _docker(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    if docker is None:
        raise DockerUnavailableError(
            "--livekit-server=docker needs the 'docker' command, which is not on PATH.\n"
            "Hint: install Docker, or use the binary mode (python -m pytest_livekit install-server)."
        )
    proc = subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise DockerUnavailableError(
            f"'docker {' '.join(args[:2])}' failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
            "Hint: is the Docker engine running and reachable (DOCKER_HOST)?"
        )
    return proc


def docker_image_available(image: str) -> bool:
    """True if a Docker engine answers and has ``image`` locally (no pull: CI may be offline)."""
    try:
        _docker("version", "--format", "{{.Server.Version}}", timeout=10)
        return _docker("image", "inspect", image, check=False, timeout=20).returncode == 0
    except (DockerUnavailableError, subprocess.TimeoutExpired):
        return False


def reap_orphans() -> list[str]:
    """Remove pytest-livekit containers whose pytest process is gone, and the config folders
    they mount; returns the ids of the containers removed.

    ``docker rm -f`` returns once the container is deleted; its containerd shim exits with it.
    """
    out = _docker(
        "ps", "-a", "--filter", f"label={LABEL}", "--format",
        f'{{{{.ID}}}}\t{{{{.Label "{OWNER_LABEL}"}}}}\t{{{{.Label "{OWNER_ID_LABEL}"}}}}',
    ).stdout
    removed = []
    for line in out.splitlines():
        cid, owner, identity = ([*line.split("\t"), "", ""])[:3]
        if not cid or not owner or _owner_alive(owner, identity):
            continue
        mounts = _docker(
            "inspect", "--format", '{{range .Mounts}}{{.Source}}{{"\\n"}}{{end}}', cid, check=False
        ).stdout.split()
        if _docker("rm", "-f", cid, check=False).returncode != 0:
            continue  # gone meanwhile (another session reaped it), or the engine refused: not ours
        removed.append(cid)
        for source in mounts:
            _remove_config_dir(Path(source).parent)
    return removed


def _owner_alive(owner: str, identity: str) -> bool:
    """Whether the pytest process a container's labels name may still run."""
    if not owner.isdigit():
        return False
    pid = int(owner)
    if not identity:  # a container labelled by an older version: the pid alone
        return _pid_alive(pid)
    where, _, started = identity.rpartition("/")
    here = _namespace_id()
    if here is None or where != here:
        return True  # another boot, machine or pid namespace: its pids cannot be looked up here
    return _start_time(pid) == started


def _namespace_id() -> str | None:
    """``<boot id>/<pid namespace inode>`` of this process; None where /proc does not tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot); None if there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie has exited: only its pid is left
        return None
    return fields[19]


def _owner_identity() -> str | None:
    """This process's :data:`OWNER_ID_LABEL` value; None where /proc does not tell."""
    here, started = _namespace_id(), _start_time(os.getpid())
    return f"{here}/{started}" if here is not None and started is not None else None


def _remove_config_dir(folder: Path) -> None:
    """Remove a dead run's config folder (it holds the secret) if it is one of ours, here."""
    try:
        if (
            folder.name.startswith(CONFIG_DIR_PREFIX)
            and folder.parent == Path(tempfile.gettempdir())
            and folder.stat().st_uid == os.getuid()
        ):
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass  # not on this machine, or gone already


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DockerLivekitServer(LivekitServer):
    """A livekit-server container with host networking.

    Args:
        image: image reference (default :data:`DEFAULT_IMAGE`).
        session_id: label value tying containers to one test session.
        kwargs: as :class:`~pytest_livekit.server.binary.LivekitServer` (``binary`` is not used).
    """

    #: Polling an HTTP endpoint in a container: there is no event to wait on.
    poll_interval = 0.1

    def __init__(self, image: str = DEFAULT_IMAGE, *, session_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(binary="docker", **kwargs)
        self.image = image
        self.session_id = session_id or uuid.uuid4().hex
        self.container_id: str | None = None
        self.reaped: list[str] = []
        self._config_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_follower: subprocess.Popen[bytes] | None = None
        self._container_gone = False

    def __repr__(self) -> str:
        return f"<DockerLivekitServer {self.image} {self.url if self.ports else 'not started'}>"

    @property
    def pid(self) -> int | None:
        """Containers have no local pid; see :attr:`container_id`."""
        return None

    def start(self) -> DockerLivekitServer:
        """Reap orphans, run the container, wait for ``GET /`` = 200; on failure remove it."""
        if self.container_id is not None:
            return self
        _docker("version", "--format", "{{.Server.Version}}", timeout=20)
        self.reaped = reap_orphans()
        if _docker("image", "inspect", self.image, check=False).returncode != 0:
            raise DockerUnavailableError(
                f"Docker image {self.image!r} is not available locally.\n"
                f"Hint: docker pull {self.image} (or build one: scripts/build-server-image), or pass "
                "--livekit-docker-image."
            )
        self.ports = self._choose_ports()
        self.version = self.image.rsplit(":", 1)[-1].lstrip("v") if ":" in self.image else "unknown"
        self._config_dir = tempfile.TemporaryDirectory(prefix=CONFIG_DIR_PREFIX)
        cfg = Path(self._config_dir.name) / "livekit.json"
        cfg.write_text(json.dumps(self.config()))
        cfg.chmod(0o644)  # read by the container's user; the folder itself is 0700
        if self._log_path is None:
            self._log_path = Path(self._config_dir.name) / "livekit-server.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._container_gone = False
        self._last_answer = "no answer yet"
        self._register()  # from here the safety net removes the container (and its config)
        identity = _owner_identity()
        run = _docker(
            "run", "-d", "--rm", "--network", "host",
            "--label", f"{LABEL}={self.session_id}",
            "--label", f"{OWNER_LABEL}={os.getpid()}",
            *(["--label", f"{OWNER_ID_LABEL}={identity}"] if identity is not None else []),
            "-v", f"{cfg}:/etc/livekit.json:ro",
            self.image, "--config", "/etc/livekit.json",
            check=False,
        )
        if run.returncode != 0:
            self.stop()
            raise ServerStartError(
                f"docker run {self.image} failed (exit {run.returncode}): {run.stderr.strip()}"
            )
        self.container_id = run.stdout.strip()
        try:
            self._follow_logs()
        except BaseException:
            self.stop()
            raise
        self.wait_until_ready()  # removes the container if it is not ready
        return self

    def _follow_logs(self) -> None:
        assert self.container_id is not None and self._log_path is not None
        # `docker logs -f` ends when the container is removed; its own group and the parent-death
        # signal make sure it never outlives pytest either.
        self._log_follower = spawn(
            ["docker", "logs", "-f", self.container_id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self._log_follower.stdout is not None
        self._follow_output(self._log_follower.stdout, log_to=self._log_path, name="pytest-livekit-docker-log")

    def _running(self) -> bool:
        if self.container_id is None:
            return False
        out = _docker("inspect", "-f", "{{.State.Running}}", self.container_id, check=False)
        return out.returncode == 0 and out.stdout.strip() == "true"

    def _check_ready(self) -> bool:
        answer = self._answers_ready()
        # nothing listens yet: one `docker inspect` tells a starting container from a dead one
        if answer is None and not self._running():
            self._container_gone = True
        return answer is True

    def _exit_code(self) -> int | None:
        # -1: the container is gone (--rm), and its exit code with it
        if self._container_gone:
            return -1
        follower = self._log_follower
        if follower is not None and follower.poll() is not None and self.container_id is not None:
            # `docker logs -f` ends when the container does: ask docker once how it ended
            self._container_gone = True
            out = _docker("inspect", "-f", "{{.State.ExitCode}}", self.container_id, check=False)
            text = out.stdout.strip()
            return int(text) if out.returncode == 0 and text.isdigit() else -1
        return None

    def _describe_exit(self, code: int) -> str:
        if code < 0:
            return "container is gone"
        if code > 128:  # docker reports a process killed by signal N as 128 + N
            return f"container exited with code {code} (signal {code - 128})"
        return f"container exited with code {code}"

    def _died_before_ready(self, code: int | None) -> BaseException:
        return ServerStartError(
            f"livekit-server container ({self.image}) exited before it was ready.\n"
            f"Last log lines:\n{self.log_tail()}"
        )

    def _not_ready_in_time(self, timeout: float) -> BaseException:
        return ServerStartTimeoutError(
            f"livekit-server container did not answer GET {self.http_url}/ with 200 within "
            f"{timeout:.0f} s (last: {self._last_answer}).\nLast log lines:\n{self.log_tail()}"
        )

    def is_running(self) -> bool:
        """True while the container runs."""
        return self._running()

    def _terminate(self, timeout: float) -> subprocess.Popen[bytes] | None:
        cid, self.container_id = self.container_id, None
        if cid is not None:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                _docker("rm", "-f", cid, check=False, timeout=30)
        # `docker logs -f` ends with the container; its pipe is closed once its reader is done
        follower, self._log_follower = self._log_follower, None
        if follower is not None:
            try:
                follower.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stop_process_group(follower, 1.0)
        return follower

    def _release(self) -> None:
        super()._release()
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None

    def stop(self, timeout: float | None = None) -> None:
        """Remove the container (``docker rm -f``) and its config file."""
        super().stop(timeout)
