"""Integration: livekit-server in Docker (image built locally FROM scratch around our binary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"


def _labelled_containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.pytest-livekit.session"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split()


def test_docker_mode_runs_a_call_and_removes_its_container(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    pytester.makepyfile(
        test_docker_call="""
        import subprocess
        import pytest
        from pytest_livekit import assert_time_to_first_audio, assert_tool_called

        async def test_escalation(livekit_call, livekit_server):
            assert livekit_server.mode == "docker"
            inspect = subprocess.run(["docker", "inspect", "--format", "{{json .}}",
                                      *subprocess.run(["docker", "ps", "-q", "--filter",
                                      "label=io.pytest-livekit.session"], capture_output=True,
                                      text=True).stdout.split()], capture_output=True, text=True).stdout
            assert livekit_server.api_secret not in inspect   # config is a mounted file
            await livekit_call.say("Can I speak to a human please")
            await livekit_call.wait_for_agent_reply()
            assert_time_to_first_audio(livekit_call, max_ms=3000)
            assert_tool_called(livekit_call, "transfer_to_human")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--livekit-server=docker"],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "livekit: server=docker livekit/livekit-server:v1.13.5 (cli; image default)" in proc.stdout
    assert _labelled_containers() == []


def test_containers_of_a_dead_run_are_reaped(tmp_path: Path) -> None:
    """Reaped at the next start: a container whose owner pid is gone (labelled by this version or
    an older one), one whose owner pid now belongs to a later process, and the config folder a
    reaped container mounts. Kept: one of a live owner, one of an owner in another boot or pid
    namespace (its pids cannot be looked up here). The end-to-end case: test_docker_kill.py."""
    import tempfile

    from pytest_livekit.server.docker import (
        CONFIG_DIR_PREFIX,
        DEFAULT_IMAGE,
        DockerLivekitServer,
        _namespace_id,
        _owner_identity,
    )

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists: the "crashed pytest" that owned the container
    here = _namespace_id()
    assert here is not None
    config_dir = Path(tempfile.mkdtemp(prefix=CONFIG_DIR_PREFIX))  # as the dead run left it
    (config_dir / "livekit.json").write_text("{}")

    def create(session: str, owner: int, identity: str | None, *options: str) -> str:
        labels = ["--label", f"io.pytest-livekit.session={session}"]
        labels += ["--label", f"io.pytest-livekit.owner-pid={owner}"]
        if identity is not None:
            labels += ["--label", f"io.pytest-livekit.owner-id={identity}"]
        return subprocess.run(
            ["docker", "create", "--network", "host", *labels, *options, DEFAULT_IMAGE, "--version"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    orphans = [
        create("crashed-run", dead.pid, f"{here}/1", "-v", f"{config_dir}/livekit.json:/etc/livekit.json:ro"),
        create("crashed-run-of-an-older-version", dead.pid, None),
        create("pid-reused", os.getpid(), f"{here}/1"),  # this pid, but the owner started at tick 1
    ]
    kept = [
        create("live-run", os.getpid(), _owner_identity()),
        create("other-namespace", dead.pid, "another-boot/4026531836/1"),
    ]
    try:
        with DockerLivekitServer(log_path=tmp_path / "server.log") as server:
            reaped = {cid[:12] for cid in server.reaped}
            assert {cid[:12] for cid in orphans} <= reaped
            assert not {cid[:12] for cid in kept} & reaped
            assert not config_dir.exists()
            assert server.is_running()
            assert server.url.startswith("ws://127.0.0.1:")
        assert sorted(_labelled_containers()) == sorted(cid[:12] for cid in kept)
    finally:
        subprocess.run(["docker", "rm", "-f", *kept], capture_output=True, check=False)
    assert _labelled_containers() == []


def test_docker_server_that_exits_shows_its_log(tmp_path: Path) -> None:
    from pytest_livekit.errors import ServerStartError
    from pytest_livekit.server.docker import DockerLivekitServer

    bad = DockerLivekitServer(log_path=tmp_path / "server.log", extra_config={"no_such_key": 1})
    with pytest.raises(ServerStartError, match="exited before it was ready"):
        bad.start()
    assert _labelled_containers() == []
