"""The packet relay on loopback UDP sockets, with an echo socket standing in for the server's media
port (the relay only forwards datagrams; the real server is in tests/integration/test_network.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from pytest_livekit.netem import Latency, NetworkPath, Outage, PacketJitter, PacketLoss
from pytest_livekit.packet_relay import PacketRelay, stun_username
from pytest_livekit.turn_credentials import base62_encode, turn_credentials


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


async def _drain(r: PacketRelay, transport: asyncio.DatagramTransport, client: _Client, link: str) -> dict:
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
    assert 60 < up["dropped_loss"] < 140
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
