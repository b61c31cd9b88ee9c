"""livekit-server starting and stopping: stopped right after its start it stops at once (issue 15);
a port taken between our pick and its bind is picked again.

livekit-server answers ``GET /`` about 100 ms before it counts itself as running and ignores a
SIGTERM in that window; :class:`~pytest_livekit.server.binary.LivekitServer` sends SIGTERM again every
0.2 s (``term_repeat``), so the stop does not wait its whole timeout for the SIGKILL.
"""

from __future__ import annotations

import os
import socket
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


def test_a_port_taken_before_the_server_binds_it_is_picked_again(
    server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race seen in CI: a port picked free is taken before the server binds it. Here a
    running server holds the media port the second one is first given; the second one starts
    on new ports instead of failing the session.
    """
    from pytest_livekit.server import binary

    holder = LivekitServer(server_binary)
    second = LivekitServer(server_binary)
    try:
        holder.start()
        assert holder.ports is not None
        taken = holder.ports.rtc_udp
        media_picks: list[int] = []  # the UDP ports handed to the second server, in order
        real_free_port = binary.free_port

        def first_media_port_taken(host: str, kind: int) -> int:
            port = taken if kind == socket.SOCK_DGRAM and not media_picks else real_free_port(host, kind)
            if kind == socket.SOCK_DGRAM:
                media_picks.append(port)
            return port

        monkeypatch.setattr(binary, "free_port", first_media_port_taken)
        second.start()
        assert second.ports is not None and second.ports.rtc_udp != taken
        assert media_picks[0] == taken and media_picks[-1] == second.ports.rtc_udp  # tried again
        assert second.is_running()
    finally:
        second.stop()
        second.cleanup_files()
        holder.stop()
        holder.cleanup_files()
