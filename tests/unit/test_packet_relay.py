"""The packet relay on loopback UDP sockets, with an echo socket standing in for the server's media
port (the relay only forwards datagrams; the real server is in tests/integration/test_network.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from pytest_livekit.conditions.network import (
    Duplicate,
    Latency,
    NetworkPath,
    Outage,
    PacketJitter,
    PacketLoss,
)
from pytest_livekit.conditions.packet_relay import (
    PacketRelay,
    RtpCounts,
    rtp_header,
    stun_username,
    turn_payload,
)
from pytest_livekit.conditions.turn_credentials import base62_encode, turn_credentials


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[int, float]] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((struct.unpack(">I", data[:4])[0], time.monotonic()))
        self.changed.set()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def relay() -> AsyncIterator[tuple[PacketRelay, asyncio.DatagramTransport, _Client]]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    upstream = echo.get_extra_info("sockname")
    relay = await PacketRelay(("127.0.0.1", _free_udp_port()), ("127.0.0.1", upstream[1])).start()
    client = _Client()
    transport, _ = await loop.create_datagram_endpoint(lambda: client, remote_addr=relay.listen)
    yield relay, transport, client
    transport.close()
    relay.close()
    echo.close()


async def _send(transport: asyncio.DatagramTransport, count: int, every: float = 0.002) -> list[float]:
    sent = []
    for i in range(count):
        transport.sendto(struct.pack(">I", i) + b"x" * 96)
        sent.append(time.monotonic())
        await asyncio.sleep(every)
    return sent


async def _wait_for(client: _Client, count: int, timeout: float = 5.0) -> None:
    async def enough() -> None:
        while len(client.got) < count:
            client.changed.clear()
            await client.changed.wait()

    await asyncio.wait_for(enough(), timeout)


async def _drain(r: PacketRelay, transport: asyncio.DatagramTransport, client: _Client, link: str) -> dict[str, Any]:
    """Stop shaping ``link`` and send a marker through: once it is back, every earlier packet
    that was going to arrive has (loopback UDP keeps order; nothing was delayed)."""
    stats = r.remove_link(link)
    transport.sendto(struct.pack(">I", 999_999))
    async def marker() -> None:
        while not client.got or client.got[-1][0] != 999_999:
            client.changed.clear()
            await client.changed.wait()
    await asyncio.wait_for(marker(), 5.0)
    client.got.pop()
    assert stats is not None
    return stats


async def test_unregistered_flows_pass_untouched(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    await _send(transport, 20)
    await _wait_for(client, 20)
    assert [n for n, _ in client.got] == list(range(20))
    assert r.passed == 40  # there and back


async def test_a_link_delays_both_directions_by_its_latency(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    local = transport.get_extra_info("sockname")
    r.add_link("c", NetworkPath(uplink=(Latency(ms=30),), downlink=(Latency(ms=20),)), addresses=[local])
    sent = await _send(transport, 10, every=0.01)
    await _wait_for(client, 10)
    rtt = [got - sent[n] for n, got in client.got]
    assert min(rtt) >= 0.049 and max(rtt) < 0.080, rtt
    stats = r.remove_link("c")
    assert stats is not None and stats["uplink"]["packets_in"] == 10 and stats["downlink"]["forwarded"] == 10


async def test_jitter_without_reordering_keeps_order_on_the_wire(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    local = transport.get_extra_info("sockname")
    r.add_link("c", NetworkPath(uplink=(PacketJitter(ms=40),), seed=3), addresses=[local])
    await _send(transport, 100, every=0.001)
    await _wait_for(client, 100)
    assert [n for n, _ in client.got] == list(range(100))


async def test_jitter_with_reordering_reorders_on_the_wire(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    local = transport.get_extra_info("sockname")
    r.add_link("c", NetworkPath(uplink=(PacketJitter(ms=40, reorder=True),), seed=3), addresses=[local])
    await _send(transport, 100, every=0.001)
    await _wait_for(client, 100)
    order = [n for n, _ in client.got]
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert r.links["c"].uplink.stats().reordered > 0


async def test_loss_and_a_live_outage_drop_what_the_link_says(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    local = transport.get_extra_info("sockname")
    r.add_link("c", NetworkPath(uplink=(PacketLoss(rate=0.5),), seed=1), addresses=[local])
    await _send(transport, 200, every=0.0005)
    up = (await _drain(r, transport, client, "c"))["uplink"]
    assert up["dropped_loss"] == 100  # exactly the rate (see netem.PacketLoss)
    assert len(client.got) == up["forwarded"] == up["packets_in"] - up["dropped_loss"]
    r.add_link("c", NetworkPath(), addresses=[local])
    r.outage("c", "downlink", 10.0)
    before = len(client.got)
    await _send(transport, 20)
    down = (await _drain(r, transport, client, "c"))["downlink"]
    assert len(client.got) == before
    assert down["dropped_outage"] == 20


async def test_an_outage_spec_counts_from_the_links_start(relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client]) -> None:
    r, transport, client = relay
    local = transport.get_extra_info("sockname")
    r.add_link("c", NetworkPath(uplink=(Outage(at_s=0.0, duration_s=0.05),)), addresses=[local])
    await _send(transport, 10, every=0.001)  # all inside the first 50 ms
    up = (await _drain(r, transport, client, "c"))["uplink"]
    assert client.got == [] and up["dropped_outage"] == 10


def _stun(attributes: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">HH", kind, len(v)) + v + b"\0" * (-len(v) % 4) for kind, v in attributes)
    return struct.pack(">HH", 0x0003, len(body)) + b"\x21\x12\xa4\x42" + b"t" * 12 + body


def test_stun_username_reads_a_turn_requests_username_and_nothing_else() -> None:
    assert stun_username(_stun([(0x0019, b"\x11\0\0\0"), (0x0006, b"user-1")])) == "user-1"
    assert stun_username(_stun([(0x0019, b"\x11\0\0\0")])) is None  # the first, unauthenticated Allocate
    assert stun_username(b"\x40\x00\x00\x04abcd") is None  # ChannelData (media)
    assert stun_username(b"\x80" + b"\0" * 30) is None  # RTP


def test_turn_credentials_match_livekit_servers_encoding() -> None:
    # vectors from github.com/jxskiss/base62 (the encoding livekit-server's TURN auth uses)
    assert base62_encode(b"APIpytestlivekit|room-1:caller|1796108000") == (
        "wADM4ATM2kzNxwnclxGbhNmOx0Sbv9mc8RXarVmdpxGdzVGd5BXSQFE"
    )
    assert base62_encode(b"ab|c") == "jxnYhB" and base62_encode(b"\xff\xfe\x00\x01") == "BAgffP"
    user, password = turn_credentials("APIkey", "s" * 48, "room:caller")
    assert user and password and "room" not in user
    with pytest.raises(ValueError, match="cannot contain"):
        turn_credentials("APIkey", "secret", "a|b")


async def test_a_link_claims_the_flows_that_authenticate_with_its_username(
    relay: tuple[PacketRelay, asyncio.DatagramTransport, _Client],
) -> None:
    r, transport, client = relay
    r.add_link("c", NetworkPath(uplink=(PacketLoss(rate=1.0),)), usernames=["user-1"])
    transport.sendto(_stun([(0x0019, b"\x11\0\0\0")]))  # no username yet: passes
    await _wait_for(client, 1)
    transport.sendto(_stun([(0x0006, b"user-1")]))  # claims the flow: dropped from now on
    await _send(transport, 5)
    stats = await _drain(r, transport, client, "c")
    assert stats["uplink"]["packets_in"] == 6 and stats["uplink"]["dropped_loss"] == 6
    assert len(client.got) == 1


# -- media inside TURN: RTP streams ------------------------------------------------------------
def _rtp(ssrc: int, seq: int, payload_type: int = 111) -> bytes:
    return struct.pack(">BBHII", 0x80, payload_type, seq & 0xFFFF, seq * 960, ssrc) + b"o" * 80


def _channel_data(payload: bytes, channel: int = 0x4001) -> bytes:
    return struct.pack(">HH", channel, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def _indication(method: int, payload: bytes) -> bytes:
    peer = struct.pack(">HH", 0x0012, 8) + b"\0\x01\x12\x34" + b"\x5e\x12\xa4\x43"
    data = struct.pack(">HH", 0x0013, len(payload)) + payload + b"\0" * (-len(payload) % 4)
    body = peer + data
    return struct.pack(">HH", method, len(body)) + b"\x21\x12\xa4\x42" + b"t" * 12 + body


def test_turn_payload_and_rtp_header_find_the_rtp_stream_inside_turn() -> None:
    rtp = _rtp(0xDEADBEEF, 4242)
    assert turn_payload(_channel_data(rtp)) == rtp
    assert turn_payload(_indication(0x0016, rtp)) == rtp  # Send indication (client to peer)
    assert turn_payload(_indication(0x0017, rtp)) == rtp  # Data indication (peer to client)
    assert turn_payload(_stun([(0x0006, b"user-1")])) is None  # a TURN request carries no media
    assert turn_payload(b"\x80" + b"\0" * 30) is None  # bare RTP is not TURN
    assert rtp_header(rtp) == (0xDEADBEEF, 4242)
    assert rtp_header(_rtp(1, 2, payload_type=200)) is None  # RTCP sender report
    assert rtp_header(_rtp(1, 2, payload_type=0x80 | 111)) == (1, 2)  # marker bit set
    assert rtp_header(b"\x16\xfe\xfd" + b"\0" * 20) is None  # DTLS
    assert rtp_header(b"\x00\x01" + b"\0" * 18) is None  # STUN (an ICE check)
    assert rtp_header(rtp[:11]) is None


def test_rtp_counts_count_packets_sent_after_a_later_one_across_the_wrap() -> None:
    counts = RtpCounts()
    for seq in (65534, 65535, 1, 0, 2, 65533, 3):
        counts.sent(seq)
    assert counts.reordered == 2  # 0 after 1, 65533 after 2
    assert counts.sent_seq_max == 65536 + 3


class _Raw(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)
        self.changed.set()


async def _raw_relay(path: NetworkPath, packets: list[bytes], expect: int) -> tuple[dict[str, Any], list[bytes]]:
    """Send ``packets`` through a link shaped by ``path`` (uplink; the echo sends them back on a
    clean downlink) and collect ``expect`` echoes."""
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    relay = await PacketRelay(("127.0.0.1", _free_udp_port()), ("127.0.0.1", echo.get_extra_info("sockname")[1])).start()
    client = _Raw()
    transport, _ = await loop.create_datagram_endpoint(lambda: client, remote_addr=relay.listen)
    try:
        relay.add_link("c", path, addresses=[transport.get_extra_info("sockname")])
        for data in packets:
            transport.sendto(data)
            await asyncio.sleep(0.0005)  # pacing the sender (real time), not synchronisation

        async def enough() -> None:
            while len(client.got) < expect:
                client.changed.clear()
                await client.changed.wait()

        await asyncio.wait_for(enough(), 5.0)
        stats = relay.remove_link("c")
        assert stats is not None
        return stats, client.got
    finally:
        transport.close()
        relay.close()
        echo.close()


async def test_the_relay_loses_the_rate_of_each_rtp_stream() -> None:
    """Two RTP streams and other TURN traffic on one link: each stream loses 10 % of its own
    packets, to one packet, whatever the others do."""
    packets, seqs = [], {1: 0, 2: 0}
    for i in range(600):
        if i % 7 == 3:
            packets.append(_channel_data(b"\x16\xfe\xfd" + b"d" * 40))  # DTLS
        elif i % 11 == 5:
            packets.append(_channel_data(_rtp(1, 0, payload_type=201)))  # RTCP receiver report
        else:
            ssrc = 1 if i % 3 else 2
            packets.append(_channel_data(_rtp(ssrc, seqs[ssrc])))
            seqs[ssrc] += 1
    path = NetworkPath(uplink=(PacketLoss(rate=0.1),), seed=4)
    shaper = path.shapers(0.0)[0]
    expect = sum(bool(shaper.schedule(0.0, len(p), ("rtp", h[0]) if (h := rtp_header(p[4:])) else None)) for p in packets)
    stats, got = await _raw_relay(path, packets, expect)
    streams = stats["rtp"]["uplink"]
    assert set(streams) == {"1", "2"}
    for ssrc, sent in seqs.items():
        counts = streams[str(ssrc)]
        assert counts["packets_in"] == sent
        assert abs(counts["dropped"] - 0.1 * sent) < 1, counts
        assert counts["forwarded"] == sent - counts["dropped"]
        received = [h for p in got if (h := rtp_header(p[4:])) and h[0] == ssrc]
        assert len(received) == counts["forwarded"]
    assert stats["uplink"]["forwarded"] == len(got) == expect
    # every forwarded datagram carried media (none is STUN), both ways
    assert stats["media_forwarded"] == {"uplink": expect, "downlink": expect}
    assert stats["rtp"]["downlink"]["1"]["forwarded"] == streams["1"]["forwarded"]


async def test_the_relay_counts_duplicates_and_reordering_per_rtp_stream() -> None:
    packets = [_indication(0x0016, _rtp(7, seq)) for seq in range(200)]
    stats, got = await _raw_relay(NetworkPath(uplink=(Duplicate(rate=1.0),)), packets, 400)
    up = stats["rtp"]["uplink"]["7"]
    assert up == {"packets_in": 200, "forwarded": 400, "dropped": 0, "duplicated": 200, "reordered": 0}
    assert stats["media_forwarded"]["uplink"] == 400
    # a copy sent right after its original is no reordering; the echo's copies come back in order
    assert [rtp_header(turn_payload(p) or b"") for p in got] == [(7, seq) for seq in range(200) for _ in range(2)]

    stats, got = await _raw_relay(NetworkPath(uplink=(PacketJitter(ms=30, reorder=True),), seed=2), packets, 200)
    up = stats["rtp"]["uplink"]["7"]
    arrived = [rtp_header(turn_payload(p) or b"")[1] for p in got]  # type: ignore[index]
    late = sum(1 for i, seq in enumerate(arrived) if seq < max(arrived[:i], default=-1))
    assert up["reordered"] == late > 20  # counted as the packets really left (loopback keeps order)
