"""A livekit-server stopped right after its start stops at once (issue 15).

livekit-server answers ``GET /`` about 100 ms before it counts itself as running and ignores a
SIGTERM in that window; :class:`~pytest_livekit.server.binary.LivekitServer` sends SIGTERM again every
0.2 s (``term_repeat``), so the stop does not wait its whole timeout for the SIGKILL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_livekit.server.binary import LivekitServer

pytestmark = pytest.mark.integration


def test_a_server_stopped_right_after_start_stops_in_well_under_a_second(server_binary: Path) -> None:
    for _ in range(3):
        server = LivekitServer(server_binary)
        try:
            server.start()
            pid = server.pid
            started = time.monotonic()
            server.stop()
            took = time.monotonic() - started
        finally:
            server.stop()
            server.cleanup_files()
        assert pid is not None and not os.path.exists(f"/proc/{pid}")
        # not the SIGKILL after the 5 s stop timeout: a repeated SIGTERM ended it
        assert took < 1.5, f"stop took {took:.2f} s"
