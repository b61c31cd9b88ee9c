"""Obtain a livekit-server binary: ``python -m pytest_livekit install-server``.

Builds the server from its Go module (the only source reachable on offline CI machines that have
a Go toolchain and the module proxy), caches it in the project's ignored ``.cache/pytest-livekit/bin``
and in the per-user cache so a fresh clone on the same machine does not rebuild.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pytest_livekit.errors import ServerBinaryNotFoundError
from pytest_livekit.server.binary import (
    DEFAULT_SERVER_VERSION,
    cached_binary_name,
    project_cache_dir,
    server_version,
    user_cache_dir,
)

GO_MODULE = "github.com/livekit/livekit-server/cmd/server"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # atomic: a concurrent reader never sees half a binary


def install_server(
    version: str = DEFAULT_SERVER_VERSION, *, dest_dir: Path | None = None, quiet: bool = False
) -> Path:
    """Return a path to a livekit-server ``version`` binary, building it with Go if needed.

    Raises:
        ServerBinaryNotFoundError: no cached binary and no Go toolchain (names the alternatives).
    """
    dest_dir = dest_dir or project_cache_dir() / "bin"
    dest = dest_dir / cached_binary_name(version)
    if dest.is_file() and server_version(dest) == version:
        return dest
    shared = user_cache_dir() / "bin" / cached_binary_name(version)
    if shared.is_file() and server_version(shared) == version:
        _link_or_copy(shared, dest)
        if not quiet:
            print(f"livekit-server {version}: copied from the user cache {shared}")
        return dest
    go = shutil.which("go")
    if go is None:
        raise ServerBinaryNotFoundError(
            f"Cannot build livekit-server {version}: no 'go' on PATH (Go >= 1.26 is needed).\n"
            "Hint: install Go, or install a livekit-server release binary on PATH as "
            "'livekit-server', or run against the Docker image / an existing server "
            "(--livekit-url)."
        )
    with tempfile.TemporaryDirectory(prefix="pytest-livekit-gobin-") as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
        if not quiet:
            print(f"building livekit-server {version} with {go} (a few minutes the first time)...")
        proc = subprocess.run(
            [go, "install", f"{GO_MODULE}@v{version}"],
            env=env,
            capture_output=quiet,
            text=True,
            check=False,
        )
        built = Path(gobin) / "server"
        if proc.returncode != 0 or not built.is_file():
            detail = (proc.stderr or "")[-2000:] if quiet else "see the output above"
            raise ServerBinaryNotFoundError(
                f"'go install {GO_MODULE}@v{version}' failed (exit {proc.returncode}): {detail}\n"
                "Hint: check that the Go module proxy is reachable and Go is >= 1.26."
            )
        _link_or_copy(built, shared)
        _link_or_copy(built, dest)
    if not quiet:
        print(f"livekit-server {version}: {dest}")
    return dest
