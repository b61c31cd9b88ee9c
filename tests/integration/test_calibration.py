"""Calibration: TTFA measured at the caller against agents that answer at known delays.

The agent logs the real send time of each answer on the machine's monotonic clock, the caller
times the end of its speech on the same clock (in its own process), so each answer's real delay is
known whatever the agent's stalls cost. TTFA minus that delay is the downlink (the floor); its
spread is the measuring error. The working agent stalls its event loop and holds the GIL from a
thread while answering: in-process it shares the test process, and the caller (in its own process)
must not notice.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio
from pytest_livekit.metrics.turns import jitter_buffer_delay

pytestmark = pytest.mark.integration

ROUNDS = 3
#: Answers at the start of a call that are not scored: the receiver's jitter buffer starts with a
#: larger delay and settles within ~2 s (measured: +70-80 ms on the first two answers, then flat).
WARMUP = 2


def _tone_clip() -> CallerAudio:
    t = np.arange(int(0.4 * CALL_SAMPLE_RATE)) / CALL_SAMPLE_RATE
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return CallerAudio(pcm=pcm, source="tone:440Hz")


@pytest.mark.parametrize(
    ("agent", "max_p95"),
    [
        # the downlink re-settles in 10-60 ms steps now and then (seen in CI: plateaus of 45, 37,
        # 97 and 67 ms in one call): real latency changes, which answer_errors does not count
        pytest.param("tests.agents.calibration_agent:entrypoint", 0.030, id="idle-agent"),
        # its own stalls jolt its sending and the caller's jitter buffer: real latency the caller
        # hears, not a measuring error; one or two answers in twelve show it
        pytest.param("tests.agents.calibration_agent:working_entrypoint", 0.150, id="working-agent"),
    ],
)
async def test_ttfa_matches_real_answer_delays(
    agent: str, max_p95: float, make_livekit_call: Any, record_property: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.agents.calibration_agent import DELAYS_S, LOG_ENV, answer_errors, answer_offsets

    log = tmp_path / "answers.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    async with make_livekit_call(agent=agent) as call:
        for _ in range(WARMUP + ROUNDS * len(DELAYS_S)):
            await call.speak(_tone_clip())
            await call.wait_for_agent_audio(timeout=10)
        rec = call.record
        t0 = call.caller.t0
    all_offsets = answer_offsets(rec, t0, log)
    assert all(o is not None for o in all_offsets), (all_offsets, rec.timeline())
    offsets = [o for o in all_offsets[WARMUP:] if o is not None]
    floor = statistics.median(offsets)
    errors = sorted(answer_errors(offsets))
    p50 = statistics.median(errors)
    p95 = errors[min(len(errors) - 1, int(round(0.95 * (len(errors) - 1))))]
    for key, value in (("floor_ms", floor), ("error_p50_ms", p50), ("error_p95_ms", p95)):
        record_property(key, round(value * 1000, 1))
    buffered = [jitter_buffer_delay(rec, k) for k in range(len(rec.caller_turns))]
    print(f"\ncalibration ({agent}): floor {floor * 1000:.1f} ms, |error| p50 {p50 * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms over {len(offsets)} answers; offsets ms (first {WARMUP} = "
          f"warm-up, not scored): {[round(o * 1000, 1) if o is not None else None for o in all_offsets]}; "
          f"clock misses {len(rec.clock_misses)}; jitter buffer ms per answer: "
          f"{[round(b * 1000, 1) if b is not None else None for b in buffered]}")
    # The floor is the downlink (agent's send to the caller's ears): positive and small on loopback,
    # and so is every answer's, plateaus included.
    assert 0.0 < floor < 0.25
    assert all(0.0 < o < 0.25 for o in offsets), offsets
    # the caller saw its receive jitter buffer for each answer (a part of the downlink)
    assert all(b is not None and 0.0 <= b < 0.25 for b in buffered), buffered
    # The caller kept real time beside the working agent. On a loaded 2-core CI runner its process
    # still sees an odd 20-40 ms stall now and then (flagged in the trace); a caller the agent
    # could stall missed hundreds of frames by 40-300 ms.
    # (seen in CI: 11 misses of 20-30 ms in one call, error p50 1.9 ms, p95 5.8 ms); the error
    # guards below are what a stalled caller fails.
    assert all(m["late_ms"] <= 100 for m in rec.clock_misses), rec.clock_misses
    # Figures on the 2-core machine: see benchmarks/calibration.py (goal: p95 <= 10 ms quiet, 20 ms
    # busy). The guards leave room for a busy CI runner; a caller the agent could stall fails the
    # clock check above and the p50 here (it cost 15-30 ms at p50 when the caller shared the
    # agent's process).
    # (errors are against each answer's nearest neighbour: see answer_errors)
    assert p50 <= 0.010, f"p50 error {p50 * 1000:.1f} ms"
    assert p95 <= max_p95, f"p95 error {p95 * 1000:.1f} ms"
