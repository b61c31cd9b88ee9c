"""Real network conditions: calls through the packet relay, which shapes the RTP between a
participant and a real livekit-server (see :mod:`pytest_livekit.packet_relay`).

The module runs its own server behind the relay (the session's server runs without one), inside
the test network namespace's two private addresses. Every check reads what the receiving end's
WebRTC stack reported (its RTC stats) or what the caller recorded, and compares it with what the
relay did on the wire.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_livekit.agent_runner import resolve_agent_target
from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio
from pytest_livekit.call import LivekitCall
from pytest_livekit.caller import caller_host
from pytest_livekit.metrics import time_to_first_audio
from pytest_livekit.netem import Bandwidth, Latency, NetworkPath, PacketJitter, PacketLoss
from pytest_livekit.server import LivekitServer, find_server_binary
from pytest_livekit.session import relay_addresses

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AGENT = "tests.agents.calibration_agent:entrypoint"


@pytest.fixture(scope="module")
def relayed_server() -> Iterator[LivekitServer]:
    """A livekit-server behind this process's packet relay (stopped after the module)."""
    node_ip, relay_ip = relay_addresses()
    server = LivekitServer(find_server_binary(None, root=ROOT), node_ip=node_ip, relay_ip=relay_ip)
    server.start()
    try:
        assert server.relay_addresses is not None
        caller_host().start_relay(*server.relay_addresses)
        yield server
    finally:
        server.stop()
        server.cleanup_files()  # its log folder: left to the garbage collector it warns later


def _tone(seconds: float = 0.4) -> CallerAudio:
    t = np.arange(int(seconds * CALL_SAMPLE_RATE)) / CALL_SAMPLE_RATE
    return CallerAudio(pcm=(0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), source="tone:440Hz")


def _call(server: LivekitServer, tmp_path: Path, name: str, **kwargs: Any) -> LivekitCall:
    return LivekitCall(
        server.url, server.api_key, server.api_secret,
        agent=resolve_agent_target(AGENT, rootdir=ROOT), name=name, artifacts_dir=tmp_path / name,
        relay=server.relay_addresses[0] if server.relay_addresses else None, **kwargs,
    )


def _link(call: LivekitCall, who: str = "caller") -> dict[str, Any]:
    return call.record.network["links"][f"{call.room_name}:{who}"]


def _loss(rtc: dict[str, float]) -> float:
    received, lost = rtc.get("packets_received", 0.0), rtc.get("packets_lost", 0.0)
    return lost / (received + lost) if received + lost else 0.0


async def test_a_clean_relay_forwards_every_packet_of_the_call_both_ways(relayed_server: LivekitServer, tmp_path: Path) -> None:
    call = _call(relayed_server, tmp_path, "clean-relay", network=NetworkPath())
    async with call:
        for _ in range(4):
            await call.speak(_tone())
            await call.wait_for_agent_audio(timeout=10)
    link = _link(call)
    up, down = link["uplink"], link["downlink"]
    # 20 ms Opus frames for ~8 s each way, plus RTCP: hundreds of packets, all forwarded once
    assert up["packets_in"] > 200 and down["packets_in"] > 200, link
    assert up["forwarded"] == up["packets_in"] and down["forwarded"] == down["packets_in"], link
    assert up["reordered"] == down["reordered"] == 0
    # forwarding adds well under a millisecond when clean
    assert up["added_delay_p95_ms"] < 1.0 and down["added_delay_p95_ms"] < 1.0, link
    assert _loss(call.record.rtc) == 0.0
    assert all(time_to_first_audio(call.record, k) is not None for k in range(4))


@pytest.mark.parametrize("direction", ["uplink", "downlink"])
async def test_packet_loss_reaches_the_receiver(relayed_server: LivekitServer, tmp_path: Path, direction: str) -> None:
    lossy = (PacketLoss(rate=0.10),)
    path = NetworkPath(uplink=lossy, seed=7) if direction == "uplink" else NetworkPath(downlink=lossy, seed=7)
    call = _call(relayed_server, tmp_path, f"loss-{direction}", network=path)
    async with call:
        for _ in range(4):
            await call.speak(_tone(1.0))
            await call.wait_for_agent_audio(timeout=10)
    wire = _link(call)[direction]
    dropped = wire["dropped_loss"] / wire["packets_in"]
    # the receiver: the caller for the downlink, the agent for the uplink
    rtc = call.record.rtc if direction == "downlink" else call.record.network["agent_rtc"]
    measured = _loss(rtc)
    print(f"\n{direction}: spec 10 %, relay dropped {dropped:.3f} of {wire['packets_in']}, receiver measured "
          f"{measured:.3f} ({rtc})")
    # the relay's draws are a seeded Bernoulli process: within 4 sigma of the spec over n packets
    assert abs(dropped - 0.10) <= 4 * math.sqrt(0.10 * 0.90 / wire["packets_in"]), wire
    # and the receiver saw that loss: its RTP sequence numbers count the drops among the RTP
    # packets (the relay's count also has TURN, STUN and RTCP packets), within 2 points
    assert abs(measured - dropped) <= 0.02, (measured, dropped, rtc)
    assert measured > 0.03


async def test_latency_and_jitter_reach_both_ends(relayed_server: LivekitServer, tmp_path: Path) -> None:
    path = NetworkPath(uplink=(Latency(ms=100),), downlink=(Latency(ms=100), PacketJitter(ms=40)), seed=4)
    call = _call(relayed_server, tmp_path, "latency", network=path)
    async with call:
        for _ in range(3):
            await call.speak(_tone(1.0))
            await call.wait_for_agent_audio(timeout=10)
    rtc = call.record.rtc
    print(f"\nlatency 100+100 ms, downlink jitter 40 ms: caller rtc {rtc}")
    # RTCP round trip between the caller and the server crosses both delays
    assert 0.19 <= rtc["round_trip_time"] <= 0.35, rtc
    # the caller's receiver sees the downlink's jitter (RFC 3550 interarrival jitter, s)
    assert rtc["jitter"] >= 0.005, rtc
    down = _link(call)["downlink"]
    assert down["added_delay_p50_ms"] >= 100 and down["reordered"] == 0, down


async def test_a_downlink_outage_is_a_gap_the_caller_hears_then_audio_resumes(relayed_server: LivekitServer, tmp_path: Path) -> None:
    call = _call(relayed_server, tmp_path, "outage", network=NetworkPath())
    async with call:
        await call.speak(_tone())
        await call.wait_for_agent_audio(timeout=10)
        await call.network_outage(2.0, direction="downlink")
        for _ in range(2):  # answers during the cut are lost; the next ones arrive
            await call.speak(_tone())
        await call.speak(_tone())
        await call.wait_for_agent_audio(timeout=10)
    wire = _link(call)["downlink"]
    assert wire["dropped_outage"] >= 50, wire  # 2 s of 20 ms packets and RTCP
    assert call.record.network["outages"][0]["seconds"] == 2.0


async def test_a_narrow_uplink_queues_then_drops(relayed_server: LivekitServer, tmp_path: Path) -> None:
    # Opus speech at the default ~32 kbit/s plus headers does not fit 16 kbit/s
    path = NetworkPath(uplink=(Bandwidth(kbps=16.0, queue_ms=300.0),))
    call = _call(relayed_server, tmp_path, "narrow", network=path)
    async with call:
        for _ in range(2):
            await call.speak(_tone(2.0))
            await call.wait_for_agent_audio(timeout=15)
    wire = _link(call)["uplink"]
    print(f"\nnarrow uplink: {wire}")
    assert wire["dropped_queue"] > 0, wire
    assert wire["queue_delay_p95_ms"] > 100.0, wire
    assert call.record.network["agent_rtc"].get("packets_lost", 0) > 0


_SHAPED_TEST = """
from pytest_livekit.netem import NetworkPath, PacketLoss

async def test_shaped(make_livekit_call, livekit_server):
    assert livekit_server.mode == "{mode}"
    async with make_livekit_call(network=NetworkPath(downlink=(PacketLoss(rate=0.2),), seed=2)) as call:
        await call.say("Can I speak to a human please")
        await call.wait_for_agent_reply()
    down = call.wire()["downlink"]
    assert down["dropped_loss"] > 0.1 * down["packets_in"], down
    assert call.record.rtc["packets_lost"] > 0, call.record.rtc
    print("WIRE", down["packets_in"], down["dropped_loss"], call.record.rtc["packets_lost"])
"""


def _run_plugin(pytester: pytest.Pytester, mode: str, *extra: str) -> subprocess.CompletedProcess[str]:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "livekit_agent = example_suite.support_agent:server\nlivekit_packet_relay = on\n"
    )
    pytester.makepyfile(test_shaped=_SHAPED_TEST.format(mode=mode))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", f"--livekit-server={mode}", *extra],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.docker
def test_the_relay_shapes_calls_to_a_docker_server(pytester: pytest.Pytester) -> None:
    proc = _run_plugin(pytester, "docker")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "WIRE" in proc.stdout


def test_an_external_server_says_it_cannot_be_shaped(pytester: pytest.Pytester) -> None:
    proc = _run_plugin(pytester, "external", "--livekit-url=ws://127.0.0.1:9", "--livekit-api-key=k",
                       "--livekit-api-secret=" + "s" * 40)
    assert proc.returncode != 0
    assert "cannot shape an external server's calls" in proc.stdout, proc.stdout[-3000:]
