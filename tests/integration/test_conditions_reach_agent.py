"""Integration: each sender-side condition reaches the agent through the real server, seen in
the agent's own receive statistics (in-process agent, real rtc Room)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio

pytestmark = pytest.mark.integration

LISTENER = "tests.agents.listener_agent:entrypoint"


def _speechlike(seconds: float = 4.0) -> CallerAudio:
    t = np.arange(int(seconds * CALL_SAMPLE_RATE)) / CALL_SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))  # syllable-rate loudness changes
    pcm = (0.3 * 32767 * envelope * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    return CallerAudio(pcm=pcm, source="synthetic", text=None)


async def _agent_inbound(call: Any, timeout: float = 5.0) -> dict[str, float]:
    import asyncio

    # libwebrtc publishes an inbound-rtp report some time after the first decoded frame (seen in
    # a loaded CI run: the frame was there, the report not yet) and has no event for it, so the
    # stats are asked again until the report exists, within a deadline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await call.agent.room.get_rtc_stats()
        for item in [*stats.publisher_stats, *stats.subscriber_stats]:
            if item.WhichOneof("stats") == "inbound_rtp" and item.inbound_rtp.stream.kind == "audio":
                rtp = item.inbound_rtp
                return {
                    "packets": float(rtp.received.packets_received),
                    "bytes": float(rtp.inbound.bytes_received),
                    "concealed": float(rtp.inbound.concealed_samples),
                    "samples": float(rtp.inbound.total_samples_received),
                    "jitter": float(rtp.received.jitter),
                }
        if loop.time() >= deadline:
            raise AssertionError(f"the agent has no inbound audio stats {timeout:.0f} s after its first frame")
        await asyncio.sleep(0.05)  # the next stats request, not a synchronisation: no event exists


async def _send(make_livekit_call: Any, conditions: Any) -> dict[str, float]:
    import asyncio

    from tests.agents import listener_agent

    async with make_livekit_call(agent=LISTENER, conditions=conditions) as call:
        # the agent's inbound stats exist once its first frame arrived (the caller sends silence)
        await asyncio.wait_for(listener_agent.first_frame[call.room_name].wait(), timeout=10)
        before = await _agent_inbound(call)
        await call.speak(_speechlike())
        after = await _agent_inbound(call)
    return {k: after[k] - before[k] for k in after if k != "jitter"} | {"jitter": after["jitter"]}


async def test_bitrate_limits_the_published_encoder(make_livekit_call: Any) -> None:
    from pytest_livekit.conditions.media import Bitrate, Conditions

    clean = await _send(make_livekit_call, None)
    low = await _send(make_livekit_call, Conditions((Bitrate(max_bitrate_bps=8_000),), seed=1))
    # 4 s of audio: bytes at the agent reflect the caller's Opus encoder setting
    assert low["bytes"] < 0.6 * clean["bytes"], (clean, low)


async def test_frame_loss_is_concealed_at_the_agent(make_livekit_call: Any) -> None:
    from pytest_livekit.conditions.media import Conditions, FrameLoss

    clean = await _send(make_livekit_call, None)
    lossy = await _send(make_livekit_call, Conditions((FrameLoss(rate=0.2, model="random"),), seed=3))
    assert lossy["packets"] < 0.9 * clean["packets"], (clean, lossy)
    assert lossy["concealed"] > clean["concealed"], (clean, lossy)


async def test_noise_reaches_the_agent(make_livekit_call: Any) -> None:
    """The audio the agent decoded carries the added noise: more energy than the clean clip."""
    from pytest_livekit.conditions.media import Conditions, Noise
    from tests.agents import listener_agent

    energies = []
    for conditions in (None, Conditions((Noise(snr_db=3, color="white"),), seed=5)):
        async with make_livekit_call(agent=LISTENER, conditions=conditions) as call:
            frames = listener_agent.received[call.room_name]
            start = len(frames)
            await call.speak(_speechlike())
            got = np.concatenate(frames[start:]).astype(np.float64)
        energies.append(float(np.sum(got * got)))
    clean, noisy = energies
    # SNR 3 dB adds half the speech power again; Opus keeps most of it
    assert noisy > 1.2 * clean, (clean, noisy)


async def _received(make_livekit_call: Any, conditions: Any, audio: CallerAudio) -> np.ndarray:
    from tests.agents import listener_agent

    async with make_livekit_call(agent=LISTENER, conditions=conditions) as call:
        frames = listener_agent.received[call.room_name]
        start = len(frames)
        await call.speak(audio)
        return np.concatenate(frames[start:]).astype(np.float64)


def _wideband(seconds: float = 3.0) -> CallerAudio:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(seconds * CALL_SAMPLE_RATE)) * 0.1 * 32767).astype(np.int16)
    return CallerAudio(pcm=pcm, source="white noise")


def _band_share(x: np.ndarray, lo_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / CALL_SAMPLE_RATE)
    return float(spectrum[freqs >= lo_hz].sum() / spectrum.sum())


async def test_level_reaches_the_agent(make_livekit_call: Any) -> None:
    from pytest_livekit.conditions.media import Conditions, Level

    loud = await _received(make_livekit_call, None, _speechlike())
    quiet = await _received(make_livekit_call, Conditions((Level(gain_db=-20.0),), seed=1), _speechlike())
    ratio_db = 10 * np.log10(np.sum(quiet * quiet) / np.sum(loud * loud))
    assert -24 < ratio_db < -16, ratio_db  # -20 dB through Opus and the server


async def test_telephony_band_reaches_the_agent(make_livekit_call: Any) -> None:
    from pytest_livekit.conditions.media import Conditions, Telephony

    wide = await _received(make_livekit_call, None, _wideband())
    phone = await _received(make_livekit_call, Conditions((Telephony(),), seed=1), _wideband())
    assert _band_share(wide, 4500) > 0.3
    assert _band_share(phone, 4500) < 0.01


async def test_jitter_reaches_the_agent(make_livekit_call: Any) -> None:
    from pytest_livekit.conditions.media import Conditions, Jitter

    clean = await _send(make_livekit_call, None)
    jittery = await _send(make_livekit_call, Conditions((Jitter(std_ms=40.0),), seed=2))
    assert jittery["jitter"] > clean["jitter"] + 0.005, (clean, jittery)
