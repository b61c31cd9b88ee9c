"""Calibration: TTFA measured at the caller against an agent that answers at known delays."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pytest

from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio
from pytest_livekit.metrics import time_to_first_audio

pytestmark = pytest.mark.integration

ROUNDS = 3
#: Answers at the start of a call that are not scored: the receiver's jitter buffer starts with a
#: larger delay and settles within ~2 s (measured: +70-80 ms on the first two answers, then flat).
WARMUP = 2


def _tone_clip() -> CallerAudio:
    t = np.arange(int(0.4 * CALL_SAMPLE_RATE)) / CALL_SAMPLE_RATE
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return CallerAudio(pcm=pcm, source="tone:440Hz")


@pytest.mark.livekit(agent="tests.agents.calibration_agent:entrypoint")
async def test_ttfa_matches_known_answer_delays(livekit_call: Any, record_property: Any) -> None:
    from tests.agents.calibration_agent import DELAYS_S

    delays: list[float] = []
    for k in range(WARMUP + ROUNDS * len(DELAYS_S)):
        await livekit_call.speak(_tone_clip())
        await livekit_call.wait_for_agent_audio(timeout=10)
        delays.append(DELAYS_S[k % len(DELAYS_S)])
    rec = livekit_call.record
    measured = [time_to_first_audio(rec, i) for i in range(len(delays))]
    assert all(m is not None for m in measured), rec.timeline()
    all_offsets = [m - d for m, d in zip(measured, delays, strict=True)]  # type: ignore[operator]
    offsets = all_offsets[WARMUP:]
    floor = statistics.median(offsets)
    errors = sorted(abs(o - floor) for o in offsets)
    p50 = statistics.median(errors)
    p95 = errors[min(len(errors) - 1, int(round(0.95 * (len(errors) - 1))))]
    for key, value in (("floor_ms", floor), ("error_p50_ms", p50), ("error_p95_ms", p95)):
        record_property(key, round(value * 1000, 1))
    print(f"\ncalibration: floor {floor * 1000:.1f} ms, |error| p50 {p50 * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms over {len(offsets)} answers; offsets ms (first {WARMUP} = "
          f"warm-up, not scored): {[round(o * 1000, 1) for o in all_offsets]}")
    # The floor is transport + codec + detection; it must be positive and small on loopback.
    assert 0.0 < floor < 0.25
    # Measured on a quiet 2-core machine: p50 0.1 ms, p95 0.4 ms (goal: 10 ms at p95). The
    # receiver's jitter buffer re-adapts in 10 ms steps when the machine is busy (seen: p95
    # 80 ms with another CPU-heavy process running), so the guard here is looser than the goal;
    # the achieved figures are recorded as JUnit properties on every run.
    assert p50 <= 0.010, f"p50 error {p50 * 1000:.1f} ms"
    assert p95 <= 0.100, f"p95 error {p95 * 1000:.1f} ms"
