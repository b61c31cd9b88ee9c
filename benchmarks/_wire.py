"""Where an answer's time goes on the wire: a packet capture beside the calibration calls.

A calibration answer's offset (the caller's TTFA minus the agent's real answer delay) has three
parts, and a capture of every RTP audio packet on the loopback interface (kernel timestamps, on
the same monotonic clock as the caller and the agent) tells them apart:

    agent out   the agent's first loud packet on the wire minus the time its code logged the
                answer: the agent process's own send path (its rtc library's 10 ms audio tick,
                20 ms Opus packets, and whatever CPU the process gets)
    sfu         the caller's first loud packet from the server minus the agent's: livekit-server
                forwarding it
    caller      the time the caller recorded the answer heard minus that packet's arrival: the
                caller's jitter buffer (playout) and its own timestamping

Only the caller part is the caller's doing; the agent-out part is the agent process being late
(real: the caller hears it late), the jitter buffer is what a phone would play. Needs root (a raw
``AF_PACKET`` socket) inside ``scripts/netns-run``, where every packet of a call crosses ``lo``.

Streams are told apart by their (direction, participant port, SSRC); which one is a room's agent
uplink and which its caller's downlink is found by fit: the uplink whose loud onsets follow that
room's logged answers most closely, the downlink whose onsets come last before the caller's
heard times.
"""

from __future__ import annotations

import bisect
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

#: RTP payload types of the audio a LiveKit call carries: RED (redundant Opus, LiveKit's default
#: for audio) and plain Opus.
AUDIO_PAYLOAD_TYPES = (63, 111)
#: Payload bytes above which a packet carries sound (a tone: 150-400 bytes with RED) and at or
#: below which it carries silence (26-41 bytes with DTX off).
LOUD_BYTES = 100
QUIET_BYTES = 60

_ETH_P_ALL = 3
_SO_TIMESTAMPNS = 35
_ETH_P_IP = 0x0800

StreamKey = tuple[str, int, int]
"""``(direction, participant port, ssrc)``: direction ``up`` (to the server) or ``down``."""


class WireCapture:
    """Every RTP audio packet to or from the server's media port, with its kernel time.

    The capture runs in its own process (``python benchmarks/_wire.py PORT FILE``): read in the
    benchmark's process it would take that process's GIL ~1,000 times a second, which the
    in-process agents share.

    Args:
        server_port: livekit-server's single UDP media port.
        folder: where the capture file goes.
    """

    def __init__(self, server_port: int, folder: Path) -> None:
        self.server_port = server_port
        self.path = folder / "wire.bin"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WireCapture:
        """Start the capture process; raises PermissionError when it cannot capture (no root)."""
        self._proc = subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, str(self.server_port), str(self.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "capturing", once the socket is open
        if line.strip() != b"capturing":
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self._proc.wait(timeout=5)
            raise PermissionError(f"the packet capture did not start: {err.strip()[-300:]}")
        return self

    def stop(self) -> None:
        """Stop the capture process."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def streams(self) -> dict[StreamKey, list[tuple[float, int]]]:
        """The packets so far: per stream, ``(monotonic s, payload bytes)`` in order."""
        out: dict[StreamKey, list[tuple[float, int]]] = defaultdict(list)
        data = self.path.read_bytes() if self.path.exists() else b""
        for i in range(0, len(data) - _RECORD.size + 1, _RECORD.size):
            at, up, port, ssrc, size = _RECORD.unpack_from(data, i)
            out[("up" if up else "down", port, ssrc)].append((at, size))
        return dict(out)


#: One captured packet in the capture file: monotonic time, uplink?, port, SSRC, payload bytes.
_RECORD = struct.Struct("<d?HIH")


def capture(server_port: int, path: Path, interface: str = "lo") -> None:
    """Write every RTP audio packet to or from ``server_port`` to ``path`` until SIGTERM."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    # kernel times are wall-clock; the calls time everything on the monotonic clock
    offset = time.time() - time.monotonic()
    print("capturing", flush=True)
    with open(path, "wb", buffering=0) as out:
        while not stop:
            try:
                data, ancillary, _, address = sock.recvmsg(2048, 64)
            except (TimeoutError, InterruptedError):
                continue
            if address[2] == socket.PACKET_OUTGOING:  # lo shows each packet twice
                continue
            stamp = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    stamp = seconds + nanoseconds * 1e-9
            parsed = _parse(data, server_port)
            if parsed is not None:
                (direction, port, ssrc), size = parsed
                out.write(_RECORD.pack(stamp - offset, direction == "up", port, ssrc, size))


def _parse(frame: bytes, server_port: int) -> tuple[StreamKey, int] | None:
    """``(stream, payload bytes)`` of an RTP audio packet to or from ``server_port``, else None."""
    if len(frame) < 14 + 20 + 8 + 12 or struct.unpack("!H", frame[12:14])[0] != _ETH_P_IP:
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    if ip[9] != socket.IPPROTO_UDP:
        return None
    sport, dport = struct.unpack("!HH", ip[header : header + 4])
    payload = ip[header + 8 :]
    if len(payload) < 12 or payload[0] & 0xC0 != 0x80 or payload[1] & 0x7F not in AUDIO_PAYLOAD_TYPES:
        return None
    ssrc = struct.unpack("!I", payload[8:12])[0]
    if dport == server_port:
        return ("up", sport, ssrc), len(payload)
    if sport == server_port:
        return ("down", dport, ssrc), len(payload)
    return None


def onsets(packets: list[tuple[float, int]]) -> list[float]:
    """Times of the packets where sound starts after silence."""
    out, quiet = [], True
    for at, size in packets:
        if size > LOUD_BYTES and quiet:
            out.append(at)
        quiet = size <= QUIET_BYTES
    return out


def _first_at_or_after(times: list[float], at: float, *, slack: float, within: float) -> float | None:
    i = bisect.bisect_left(times, at - slack)
    return times[i] if i < len(times) and times[i] <= at + within else None


def _last_at_or_before(times: list[float], at: float, *, within: float) -> float | None:
    i = bisect.bisect_right(times, at) - 1
    return times[i] if i >= 0 and times[i] >= at - within else None


@dataclass
class WireAnswer:
    """One answer's offset split at the wire (seconds; None where a packet was not found)."""

    agent_out: float | None
    sfu: float | None
    caller: float | None

    @property
    def wire_offset(self) -> float | None:
        """The caller's heard time minus the agent's first packet: the offset with the agent's
        own send path taken out.
        """
        if self.sfu is None or self.caller is None:
            return None
        return self.sfu + self.caller


def split_answers(
    sent: list[float], heard: list[float | None], streams: dict[StreamKey, list[tuple[float, int]]]
) -> list[WireAnswer]:
    """Per answer of one call (``sent``: the agent's logged answer times; ``heard``: the caller's
    heard times, same order), its offset split at the wire.
    """
    found = {k: onsets(v) for k, v in streams.items()}

    def fit_up(key: StreamKey) -> float:
        lags = [(o - s) if (o := _first_at_or_after(found[key], s, slack=0.005, within=0.5)) else 9.0 for s in sent]
        return statistics.median(lags) if lags else 9.0

    def fit_down(key: StreamKey) -> float:
        lags = [(h - o) if (o := _last_at_or_before(found[key], h, within=0.5)) else 9.0 for h in heard if h is not None]
        return statistics.median(lags) if lags else 9.0

    ups = [k for k in found if k[0] == "up"]
    downs = [k for k in found if k[0] == "down"]
    if not ups or not downs:
        return [WireAnswer(None, None, None) for _ in sent]
    up, down = min(ups, key=fit_up), min(downs, key=fit_down)
    out = []
    for s, h in zip(sent, heard, strict=False):
        first_up = _first_at_or_after(found[up], s, slack=0.005, within=0.5)
        first_down = (
            _first_at_or_after(found[down], first_up, slack=0.0, within=0.3) if first_up is not None else None
        )
        out.append(
            WireAnswer(
                agent_out=None if first_up is None else first_up - s,
                sfu=None if first_up is None or first_down is None else first_down - first_up,
                caller=None if first_down is None or h is None else h - first_down,
            )
        )
    return out


if __name__ == "__main__":
    capture(int(sys.argv[1]), Path(sys.argv[2]))
