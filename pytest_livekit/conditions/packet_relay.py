"""A UDP packet relay between WebRTC participants and livekit-server that shapes real RTP.

A shaped participant connects with relay-only ICE through livekit-server's embedded TURN server,
and its TURN server address is the relay's: every datagram it exchanges with the server (TURN
allocations, and inside them ICE, DTLS, SRTP and SRTCP) passes through the relay, in both
directions, and nothing else can carry its media. For each client address the relay opens one
upstream socket towards the TURN port.

Why TURN and not the server's media port: with the relay's address advertised as the server's
media address (``rtc.node_ip``), every STUN answer tells the client a mapped address that is not
its own, and libwebrtc (the rtc SDK's WebRTC) never nominated such a pair, with ICE-lite or full
ICE (measured: checks answered for 15 s, no USE-CANDIDATE, no DTLS). Through TURN the client's
candidate is the TURN allocation, whose mapped address is what TURN says; it connects in ~0.15 s.

Flows are told apart by the USERNAME of their TURN requests: each participant gets credentials
for an identity of its own (:func:`~pytest_livekit.conditions.turn_credentials.turn_credentials`), and a
link registered under that username claims every client address that authenticates with it. A
link has an uplink and a downlink :class:`~pytest_livekit.conditions.network.LinkShaper` shared by all its
flows (a participant's publisher and subscriber connections share its one network link). Flows
of no link pass untouched.

RTP streams: SRTP leaves the RTP header in the clear, so the relay reads the SSRC and sequence
number of every RTP packet a TURN message carries (:func:`turn_payload`, :func:`rtp_header`). It
runs the loss of each RTP stream on its own (the shaper's ``flow``; everything else, RTCP, DTLS
and STUN, shares one more), so that each receiver measures the spec's loss rate, and counts per
direction and SSRC what it did (:class:`RtpCounts`: reordering as the packets really left) and
how many media datagrams (DTLS, SRTP, SRTCP: what the receiving transport counts) it sent on.

Timing: shaped packets wait in one heap ordered by (send time, arrival) and leave from an
``asyncio`` timer (the loop's clock is ``time.monotonic``, the caller's clock). The relay runs in
the caller's process (see :mod:`pytest_livekit.call._caller_main`), which no agent code runs in and
which has real-time priority where the machine allows it, so an agent that stalls its own loop
cannot stall the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from pytest_livekit.conditions.network import LinkShaper, NetworkPath

__all__ = ["PacketRelay", "RelayLink", "RtpCounts", "rtp_header", "stun_username", "turn_payload"]

Address = tuple[str, int]


_STUN_MAGIC = b"\x21\x12\xa4\x42"


def stun_username(data: bytes) -> str | None:
    """The USERNAME attribute of a STUN/TURN message (``None`` for anything else: ChannelData,
    RTP, a request without one).
    """
    if len(data) < 20 or data[0] & 0xC0 or data[4:8] != _STUN_MAGIC:
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind = int.from_bytes(data[pos : pos + 2], "big")
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if kind == 0x0006:
            return data[pos + 4 : pos + 4 + size].decode("utf-8", "replace")
        pos += 4 + size + (-size % 4)  # attributes are padded to 4 bytes
    return None


def turn_payload(data: bytes) -> bytes | None:
    """The datagram a TURN message carries between the client and its peer: the payload of a
    ChannelData message, or the DATA attribute of a Send or Data indication; ``None`` for
    anything else (TURN requests and answers: allocations, refreshes, permissions).
    """
    if len(data) >= 4 and 0x40 <= data[0] <= 0x7F:  # ChannelData: channel 0x4000-0x7FFF, length
        return data[4 : 4 + int.from_bytes(data[2:4], "big")]
    if len(data) < 20 or data[0] & 0xC0 or data[4:8] != _STUN_MAGIC:
        return None
    if int.from_bytes(data[0:2], "big") not in (0x0016, 0x0017):  # Send / Data indication
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind = int.from_bytes(data[pos : pos + 2], "big")
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if kind == 0x0013:  # DATA
            return data[pos + 4 : pos + 4 + size]
        pos += 4 + size + (-size % 4)
    return None


def rtp_header(payload: bytes) -> tuple[int, int] | None:
    """``(ssrc, sequence number)`` of an RTP packet (SRTP leaves the header in the clear);
    ``None`` for RTCP (RFC 5761 payload types 192-223), DTLS, STUN and anything else
    (RFC 7983: RTP and RTCP start with a byte of 128-191).
    """
    if len(payload) < 12 or not 128 <= payload[0] <= 191 or 192 <= payload[1] <= 223:
        return None
    return int.from_bytes(payload[8:12], "big"), int.from_bytes(payload[2:4], "big")


@dataclass
class RtpCounts:
    """One RTP stream (SSRC) in one direction of a link, as the relay saw and sent it.

    Attributes:
        packets_in: RTP packets of the stream that reached the relay.
        forwarded: Copies sent on, duplicates included.
        dropped: Packets dropped (loss, queue or outage).
        duplicated: Packets sent twice.
        reordered: Packets sent after a packet of the stream with a higher sequence number
            (counted when they really left the relay).
        sent_seq_max: Highest sequence number sent so far (extended past 16-bit wrap), -1 before.
    """

    packets_in: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    sent_seq_max: int = -1

    def sent(self, seq: int) -> None:
        """Count one copy leaving the relay with 16-bit sequence number ``seq``."""
        if self.sent_seq_max < 0:
            self.sent_seq_max = seq
            return
        # extend seq to the one nearest the highest sent (RFC 3550 serial arithmetic)
        delta = (seq - self.sent_seq_max) & 0xFFFF
        extended = self.sent_seq_max + delta if delta < 0x8000 else self.sent_seq_max + delta - 0x10000
        if extended < self.sent_seq_max:
            self.reordered += 1
        else:
            self.sent_seq_max = extended

    def to_dict(self) -> dict[str, int]:
        """The counts (``sent_seq_max`` left out) as JSON-able data."""
        return {
            "packets_in": self.packets_in,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
        }


@dataclass
class RelayLink:
    """One participant's network link: its flows, the two shapers and, per direction, what the
    relay forwarded of the media (every datagram TURN carries that is not STUN: DTLS, SRTP,
    SRTCP, which is what the receiving WebRTC transport counts) and of each RTP stream.
    """

    name: str
    path: NetworkPath
    uplink: LinkShaper
    downlink: LinkShaper
    addresses: set[Address] = field(default_factory=set)
    usernames: set[str] = field(default_factory=set)
    media_forwarded: dict[str, int] = field(default_factory=lambda: {"uplink": 0, "downlink": 0})
    rtp: dict[str, dict[int, RtpCounts]] = field(default_factory=lambda: {"uplink": {}, "downlink": {}})

    def stats(self) -> dict[str, Any]:
        """What happened on the wire, per direction (see :class:`~pytest_livekit.conditions.network.LinkStats`),
        with ``media_forwarded`` (per direction: copies of DTLS / SRTP / SRTCP datagrams sent on)
        and ``rtp`` (per direction, per SSRC as a string: :class:`RtpCounts`).
        """
        return {
            "flows": len(self.addresses),
            "uplink": self.uplink.stats().to_dict(),
            "downlink": self.downlink.stats().to_dict(),
            "media_forwarded": dict(self.media_forwarded),
            "rtp": {
                direction: {str(ssrc): counts.to_dict() for ssrc, counts in streams.items()}
                for direction, streams in self.rtp.items()
            },
        }


class _Upstream(asyncio.DatagramProtocol):
    """The relay's socket towards the server for one client address."""

    def __init__(self, relay: PacketRelay, client: Address) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_server(self.client, data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like: UDP goes on
        self.relay.errors += 1


class _Listener(asyncio.DatagramProtocol):
    """The relay's advertised media address: clients send here."""

    def __init__(self, relay: PacketRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_client((addr[0], addr[1]), data)

    def error_received(self, exc: Exception) -> None:
        self.relay.errors += 1


class PacketRelay:
    """Forward UDP between clients and one server media port, shaping registered links.

    Args:
        listen: the address the server advertises (``(relay_ip, server_udp_port)``).
        upstream: the server's real media address (``(server_ip, server_udp_port)``).
    """

    def __init__(self, listen: Address, upstream: Address) -> None:
        self.listen = listen
        self.upstream = upstream
        self.links: dict[str, RelayLink] = {}
        self._flows: dict[Address, _Upstream] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self._link_of: dict[Address, RelayLink] = {}
        self._link_of_username: dict[str, RelayLink] = {}
        self._listener: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: list[tuple[float, int, Any, bytes, RtpCounts | None, int]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self.errors = 0
        #: packets forwarded unshaped (flows of no link), both directions
        self.passed = 0
        #: every packet the relay received, per direction (diagnostics)
        self.received = {"uplink": 0, "downlink": 0}

    async def start(self) -> PacketRelay:
        """Bind the advertised address (raises ``OSError`` when it is not free)."""
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=self.listen, family=socket.AF_INET
        )
        self._listener = transport
        return self

    def close(self) -> None:
        """Stop forwarding and close every socket."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        for flow in self._flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self._flows.clear()

    def flows(self) -> list[Address]:
        """Client addresses the relay has seen (one upstream socket each)."""
        return list(self._flows)

    # -- links ------------------------------------------------------------------------------
    def add_link(
        self, name: str, path: NetworkPath, *, usernames: Iterable[str] = (), addresses: Iterable[Address] = ()
    ) -> RelayLink:
        """Shape, by ``path`` from now on, the flows that authenticate to TURN with one of
        ``usernames`` and the flows from ``addresses``; replaces a link of the same name.
        """
        self.remove_link(name)
        up, down = path.shapers(time.monotonic())
        link = RelayLink(name=name, path=path, uplink=up, downlink=down)
        self.links[name] = link
        for username in usernames:
            self._link_of_username[username] = link
            link.usernames.add(username)
        for host, port in addresses:
            self._claim((host, int(port)), link)
        return link

    def _claim(self, address: Address, link: RelayLink) -> None:
        link.addresses.add(address)
        self._link_of[address] = link

    def remove_link(self, name: str) -> dict[str, Any] | None:
        """Stop shaping a link; returns its final stats (``None`` if there was none)."""
        link = self.links.pop(name, None)
        if link is None:
            return None
        for address in link.addresses:
            if self._link_of.get(address) is link:
                del self._link_of[address]
        for username in link.usernames:
            if self._link_of_username.get(username) is link:
                del self._link_of_username[username]
        return link.stats()

    def outage(self, name: str, direction: str, seconds: float) -> None:
        """Drop every packet of a link in ``direction`` (``uplink``, ``downlink`` or ``both``)
        for ``seconds`` from now: a handover.
        """
        link = self.links[name]
        now = time.monotonic()
        if direction in ("uplink", "both"):
            link.uplink.start_outage(now, seconds)
        if direction in ("downlink", "both"):
            link.downlink.start_outage(now, seconds)

    # -- forwarding -------------------------------------------------------------------------
    def _from_client(self, client: Address, data: bytes) -> None:
        self.received["uplink"] += 1
        flow = self._flows.get(client)
        if flow is None:
            self._open_flow(client, data)
            return
        if flow.transport is None or client in self._pending:  # still opening: keep order
            self._pending.setdefault(client, []).append(data)
            return
        link = self._link_of.get(client)
        if link is None and self._link_of_username:
            username = stun_username(data)
            link = self._link_of_username.get(username) if username else None
            if link is not None:
                self._claim(client, link)
        if link is None:
            self.passed += 1
            flow.transport.sendto(data)
            return
        self._schedule(link, "uplink", data, flow.transport.sendto)

    def _from_server(self, client: Address, data: bytes) -> None:
        self.received["downlink"] += 1
        listener = self._listener
        if listener is None:
            return
        link = self._link_of.get(client)
        if link is None:
            self.passed += 1
            listener.sendto(data, client)
            return
        self._schedule(link, "downlink", data, lambda d: listener.sendto(d, client))

    def _schedule(self, link: RelayLink, direction: str, data: bytes, send: Any) -> None:
        shaper: LinkShaper = getattr(link, direction)
        payload = turn_payload(data)
        header = rtp_header(payload) if payload is not None else None
        counts: RtpCounts | None = None
        seq = 0
        if header is not None:
            ssrc, seq = header
            counts = link.rtp[direction].get(ssrc)
            if counts is None:
                counts = link.rtp[direction][ssrc] = RtpCounts()
            counts.packets_in += 1
        now = time.monotonic()
        # loss is realised per RTP stream, so that each receiver measures the spec's rate
        times = shaper.schedule(now, len(data), ("rtp", header[0]) if header is not None else None)
        if payload is not None and payload[:1] and payload[0] > 3:  # not STUN (RFC 7983)
            link.media_forwarded[direction] += len(times)
        if counts is not None:
            counts.forwarded += len(times)
            counts.dropped += not times
            counts.duplicated += len(times) == 2
        for at in times:
            # under half a millisecond with nothing waiting: send now
            if at - now < 0.0005 and not self._due:
                send(data)
                if counts is not None:
                    counts.sent(seq)
                continue
            # one heap ordered by (time, arrival): packets the shaper gave one time leave in the
            # order they came (asyncio's timers give no such promise for equal times)
            self._seq += 1
            heapq.heappush(self._due, (at, self._seq, send, data, counts, seq))
            if self._due[0][1] == self._seq:  # the new packet is the earliest: re-arm
                self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        # asyncio's clock is time.monotonic (its loop.time()), the shaper's clock
        self._timer = self._loop.call_at(self._due[0][0], self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._due and self._due[0][0] <= now + 0.0005:
            _, _, send, data, counts, seq = heapq.heappop(self._due)
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    send(data)
                if counts is not None:
                    counts.sent(seq)
        if self._due:
            self._arm()

    def _open_flow(self, client: Address, first: bytes) -> None:
        assert self._loop is not None
        flow = _Upstream(self, client)
        self._flows[client] = flow
        self._pending[client] = [first]
        self._loop.create_task(self._connect_flow(flow), name="pytest-livekit-relay-flow")

    async def _connect_flow(self, flow: _Upstream) -> None:
        assert self._loop is not None
        try:
            await self._loop.create_datagram_endpoint(
                lambda: flow, local_addr=(self.listen[0], 0), remote_addr=self.upstream
            )
        except OSError:
            self.errors += 1
            self._flows.pop(flow.client, None)
            self._pending.pop(flow.client, None)
            return
        for data in self._pending.pop(flow.client, []):
            self._from_client(flow.client, data)
