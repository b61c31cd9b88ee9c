"""Real network conditions: calls through the packet relay, which shapes the RTP between a
participant and a real livekit-server (see :mod:`pytest_livekit.conditions.packet_relay`).

The module runs its own server behind the relay (the session's server runs without one), inside
the test network namespace's two private addresses. Every check reads what the receiving end's
WebRTC stack reported (its RTC stats) or what the caller recorded, and compares it with what the
relay did on the wire.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_livekit.agent.in_process import resolve_agent_target
from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio
from pytest_livekit.call.caller import caller_host
from pytest_livekit.call.livekit_call import LivekitCall
from pytest_livekit.conditions.network import (
    Bandwidth,
    Duplicate,
    Latency,
    NetworkPath,
    PacketJitter,
    PacketLoss,
)
from pytest_livekit.metrics.turns import jitter_buffer_delay, time_to_first_audio
from pytest_livekit.server.binary import LivekitServer, find_server_binary
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
    link: dict[str, Any] = call.record.network["links"][f"{call.room_name}:{who}"]
    return link


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


#: As in test_calibration: answers not scored at the start of a call (the jitter buffer settles),
#: then rounds of the calibration agent's four answer delays.
WARMUP, ROUNDS = 2, 3


async def test_a_clean_relay_changes_no_answers_timing(
    relayed_server: LivekitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same call twice at once (so that both see the same machine), direct and through the
    clean relay. The relay itself adds under 1 ms (its own wire stats, every packet forwarded);
    what the caller measures agrees: the floor of TTFA minus the agent's real answer delay (from
    its send log, as test_calibration scores it) is the same within the calibration's goal for a
    busy machine (20 ms), per answer the two calls differ only by their receivers' own
    jitter-buffer plateaus (two independent 10-30 ms steps, seen on a loaded 2-core CI machine
    with and without the relay; printed), and the raw TTFA's median agrees within the floor's
    bound plus two 10 ms frames.

    Run one after the other, two calls' downlink floors differ by 20-50 ms whatever the relay
    does (the receiver's jitter buffer settles at 40 ms in one call and 70 ms in the next, with
    the machine's load; seen here in both orders), so the two calls run at once. Each call
    still has a constant of its own, under 10 ms, in how TTFA splits into the part before the
    agent's logged send and the part after it (measured: uplink part +5 ms and downlink part
    -5 ms relayed, the sum equal), and the raw TTFA is read on two 10 ms frame grids (see below).
    """
    from tests.agents.calibration_agent import DELAYS_S, LOG_ENV, answer_offsets

    log = tmp_path / "answers.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    turns = range(WARMUP, WARMUP + ROUNDS * len(DELAYS_S))

    async def one(name: str, network: NetworkPath | None) -> tuple[list[float | None], list[float | None]]:
        call = _call(relayed_server, tmp_path, f"ttfa-{name}", network=network)
        async with call:
            for _ in range(WARMUP + ROUNDS * len(DELAYS_S)):
                await call.speak(_tone())
                await call.wait_for_agent_audio(timeout=10)
            assert call.caller is not None
            t0 = call.caller.t0
        rec = call.record
        print(f"\n{name}: rtc {rec.rtc}; jitter buffer ms "
              f"{[round((jitter_buffer_delay(rec, k) or 0) * 1000, 1) for k in turns]}; "
              f"clock misses {len(rec.clock_misses)}")
        if network is not None:  # it went through the relay, untouched and not delayed
            wire = _link(call)
            for direction in ("uplink", "downlink"):
                stats = wire[direction]
                assert stats["packets_in"] > 300 and stats["forwarded"] == stats["packets_in"], wire
                assert stats["added_delay_p95_ms"] <= 1.0, wire  # the relay's own goal
        else:
            assert not rec.network.get("links"), rec.network
        return [time_to_first_audio(rec, k) for k in turns], answer_offsets(rec, t0, log)[WARMUP:]

    results = await asyncio.gather(one("direct", None), one("relayed", NetworkPath()))
    ttfa: dict[str, list[float]] = {}
    offsets: dict[str, list[float]] = {}
    for name, (measured, offs) in zip(("direct", "relayed"), results, strict=True):
        assert all(t is not None for t in measured) and all(o is not None for o in offs), (name, measured, offs)
        ttfa[name] = [t for t in measured if t is not None]
        offsets[name] = [o for o in offs if o is not None]

    ttfa_diff = [r - d for r, d in zip(ttfa["relayed"], ttfa["direct"], strict=True)]
    offset_diff = [r - d for r, d in zip(offsets["relayed"], offsets["direct"], strict=True)]
    # the rest of TTFA: from the caller's speech end to the agent's send, minus its set delay
    # (the uplink, the agent's jitter buffer and its 80 ms end-of-speech detection)
    uplink = {
        name: [t - o - DELAYS_S[k % len(DELAYS_S)] for k, t, o in zip(turns, ttfa[name], offsets[name], strict=True)]
        for name in ttfa
    }
    print(f"\nuplink part ms: direct {[round(u * 1000, 1) for u in uplink['direct']]}, relayed "
          f"{[round(u * 1000, 1) for u in uplink['relayed']]}")
    print(f"\nclean relay vs direct, {len(ttfa_diff)} answers: TTFA ms direct "
          f"{[round(t * 1000) for t in ttfa['direct']]}, relayed {[round(t * 1000) for t in ttfa['relayed']]} "
          f"(difference {[round(d * 1000) for d in ttfa_diff]}); TTFA minus the real answer delay, ms: direct "
          f"{[round(o * 1000, 1) for o in offsets['direct']]}, relayed {[round(o * 1000, 1) for o in offsets['relayed']]} "
          f"(difference {[round(d * 1000, 1) for d in offset_diff]})")
    # TTFA minus the agent's real answer delay (what test_calibration scores: the agent's own
    # timing, which differs between two rooms by its detection and its event loop, is taken out).
    # Each call's receiver settles its jitter buffer in 10 ms steps and re-settles mid-call, on its
    # own (plateaus of 10-30 ms, seen in direct and relayed calls alike on a loaded machine), so
    # the relay's effect is read off the floors: the best each path delivered.
    # Within the calibration's goal for a busy machine (p95 <= 20 ms): this runs inside a full CI
    # run on 2 cores. The per-answer differences are printed, not asserted: they are the two
    # receivers' plateaus, whatever the relay does.
    floor_diff = min(offsets["relayed"]) - min(offsets["direct"])
    assert abs(floor_diff) <= 0.020, f"floors differ by {floor_diff * 1000:.1f} ms: {offsets}"
    # The TTFA the caller measured has the uplink and the agent's own timing in it, read on two
    # 10 ms frame grids (the agent's ears and the caller's) that line up differently in each call:
    # a constant of -10, 0 or +10 ms per call whatever the relay does (seen: all of them, with
    # the parts above agreeing to 1-5 ms). So: within the floor's bound plus those two frames.
    frames = 0.020 + 1e-6
    assert abs(statistics.median(ttfa_diff)) <= 0.020 + frames, ttfa_diff


def _audio_stream(call: LivekitCall, direction: str) -> dict[str, int]:
    """The relay's counts of the call's audio RTP stream in ``direction`` (the stream with the
    most packets: the caller's microphone up, the agent's answers down)."""
    streams = _link(call)["rtp"][direction]
    assert streams, _link(call)
    return max(streams.values(), key=lambda counts: counts["packets_in"])


@pytest.mark.parametrize("direction", ["uplink", "downlink"])
async def test_packet_loss_reaches_the_receiver_at_its_rate(relayed_server: LivekitServer, tmp_path: Path, direction: str) -> None:
    lossy = (PacketLoss(rate=0.10),)
    path = NetworkPath(uplink=lossy, seed=7) if direction == "uplink" else NetworkPath(downlink=lossy, seed=7)
    call = _call(relayed_server, tmp_path, f"loss-{direction}", network=path)
    async with call:
        for _ in range(4):
            await call.speak(_tone(1.0))
            await call.wait_for_agent_audio(timeout=10)
    wire = _link(call)[direction]
    audio = _audio_stream(call, direction)
    # the receiver: the caller for the downlink, the agent for the uplink
    rtc = call.record.rtc if direction == "downlink" else call.record.network["agent_rtc"]
    measured = _loss(rtc)
    print(f"\n{direction}: spec 10 %, relay dropped {wire['dropped_loss']} of {wire['packets_in']} packets, "
          f"{audio['dropped']} of the {audio['packets_in']} audio RTP packets; receiver measured {measured:.4f} ({rtc})")
    # the relay realises the loss per RTP stream: the audio lost 10 % of its packets, to one packet
    assert abs(audio["dropped"] - 0.10 * audio["packets_in"]) < 1 + 1e-9, audio
    assert audio["packets_in"] > 300, audio  # a call's worth: ~8 s of 20 ms frames
    # and the receiver measured that rate from its RTP sequence numbers, within +-10 % (relative)
    assert measured == pytest.approx(0.10, rel=0.10), (measured, rtc, audio)


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


async def test_duplicates_reach_the_callers_receiver_and_are_discarded_there(relayed_server: LivekitServer, tmp_path: Path) -> None:
    """Both directions duplicate 30 % of packets. Downlink: the caller's WebRTC transport counts
    every copy the relay sent (duplicates included) while its RTP stream counts each packet once
    (SRTP's replay check drops the copies), and the answers are heard. Uplink: the receiver is
    the SFU, which drops the copies too; the agent gets each of the caller's packets once."""
    path = NetworkPath(uplink=(Duplicate(0.3),), downlink=(Duplicate(0.3),), seed=3)
    call = _call(relayed_server, tmp_path, "duplicate", network=path)
    async with call:
        for _ in range(4):
            await call.speak(_tone(1.0))
            await call.wait_for_agent_audio(timeout=10)
    link = _link(call)
    down, up = _audio_stream(call, "downlink"), _audio_stream(call, "uplink")
    caller, agent = call.record.rtc, call.record.network["agent_rtc"]
    print(f"\nduplicate 30 %: downlink audio {down}, media forwarded {link['media_forwarded']}; caller rtc {caller}; "
          f"uplink audio {up}; agent rtc {agent}")
    for audio in (down, up):  # the relay duplicated about 30 % of each audio stream
        assert audio["packets_in"] > 300 and 0.2 <= audio["duplicated"] / audio["packets_in"] <= 0.4, audio
        assert audio["forwarded"] == audio["packets_in"] + audio["duplicated"], audio
    # downlink: the caller's transports received what the relay sent them, copies included (the
    # relay's counts are final, the caller's read just before it hung up: a few packets of slack)
    assert 0 <= link["media_forwarded"]["downlink"] - caller["transport_packets_received"] <= 10, (caller, link)
    # its RTP stream counted each audio packet once, none lost: the copies reached the receiver
    # and were dropped there (SRTP replay protection), not by the network
    assert 0 <= down["packets_in"] - caller["packets_received"] <= 10, (caller, down)
    assert caller["packets_lost"] == 0, caller
    # so the transport's surplus over the RTP stream is the relay's duplicates plus the non-RTP
    # media (RTCP, DTLS): it grew by the duplicates
    surplus = caller["transport_packets_received"] - caller["packets_received"]
    assert abs(surplus - (link["media_forwarded"]["downlink"] - down["packets_in"])) <= 10, (surplus, link)
    assert surplus >= down["duplicated"], (surplus, down)
    # uplink: the agent got each of the caller's packets once and lost none (its stats are read
    # while the caller still speaks: the relay counts a few packets more); no copy reached it
    assert 0 <= up["packets_in"] - agent["packets_received"] <= 10 and agent["packets_lost"] == 0, (agent, up)
    assert agent["transport_packets_received"] < agent["packets_received"] + up["duplicated"] / 2, agent
    # and both ways the conversation went on: every utterance answered, every answer heard
    assert all(time_to_first_audio(call.record, k) is not None for k in range(4))


async def test_reordering_reaches_the_receivers_as_jitter_without_loss(relayed_server: LivekitServer, tmp_path: Path) -> None:
    """Both directions delay each packet by 0-60 ms, independently, so about a quarter of the
    audio packets leave the relay after a later one. The receivers (the caller for the
    downlink, through the SFU the agent for the uplink) accept every reordered packet, losing
    none, and measure the RFC 3550 jitter of it; the answers are heard."""
    reorder = (PacketJitter(60, reorder=True),)
    call = _call(relayed_server, tmp_path, "reorder", network=NetworkPath(uplink=reorder, downlink=reorder, seed=3))
    async with call:
        for _ in range(4):
            await call.speak(_tone(1.0))
            await call.wait_for_agent_audio(timeout=10)
    down, up = _audio_stream(call, "downlink"), _audio_stream(call, "uplink")
    caller, agent = call.record.rtc, call.record.network["agent_rtc"]
    print(f"\nreorder 0-60 ms: downlink audio {down}; caller rtc {caller}; uplink audio {up}; agent rtc {agent}")
    for audio, rtc in ((down, caller), (up, agent)):
        # on the wire: a fifth or more of the audio packets left after a later packet of the stream
        assert audio["packets_in"] > 300 and audio["reordered"] >= 0.15 * audio["packets_in"], audio
        # the receiver took every one of them: none counted lost (a packet still delayed when the
        # stats are read counts as lost; the agent's are read while the caller still speaks, so
        # the relay counts some packets more than it had received then: 8-12 on a busy machine,
        # 20 ms each; the bound is half a second of them)
        assert rtc["packets_lost"] <= 2, (rtc, audio)
        assert 0 <= audio["forwarded"] - rtc["packets_received"] <= 25, (rtc, audio)
        # and measured their jitter: 13-18 ms (a clean call: 0-1 ms)
        assert rtc["jitter"] >= 0.005, rtc
    assert all(time_to_first_audio(call.record, k) is not None for k in range(4))


_SHAPED_TEST = """
from pytest_livekit.conditions.network import NetworkPath, PacketLoss

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


