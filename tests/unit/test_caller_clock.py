"""The caller's 10 ms slot clock and the recording laid by it (pure: no server, no process)."""

from __future__ import annotations

import numpy as np

from pytest_livekit.call._caller_wire import FRAME_SAMPLES, SlotClock
from pytest_livekit.call.caller import Recording


def test_frames_on_time_fill_consecutive_slots() -> None:
    clock = SlotClock()
    assert [clock.place(k * 0.010 + 0.0004) for k in range(5)] == [0, 1, 2, 3, 4]


def test_scheduling_jitter_keeps_the_audio_continuous() -> None:
    clock = SlotClock()
    # the 2nd frame left 6 ms late and rounds into slot 2; the 3rd, on time, is moved next to it
    starts = [0.100, 0.116, 0.120, 0.130]
    assert [clock.place(t) for t in starts] == [10, 12, 13, 14]


def test_a_late_frame_stays_late_and_a_gap_stays_a_gap() -> None:
    clock = SlotClock()
    assert clock.place(0.100) == 10
    assert clock.place(0.160) == 16  # 50 ms late: slots 11-15 stay empty
    assert clock.place(0.170) == 17


def test_a_burst_after_a_stall_overlaps_instead_of_drifting() -> None:
    clock = SlotClock()
    slots = [clock.place(0.100)] + [clock.place(0.200) for _ in range(6)]
    # the first three burst frames take the next free slots (within 20 ms of their time),
    # the rest stay at their real time (mixed in): no cursor runs ahead of the clock
    assert slots == [10, 20, 21, 22, 20, 20, 20]
    assert clock.place(0.230) == 23


def _frame(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16).tobytes()


def test_recording_lays_frames_by_slot() -> None:
    rec = Recording()
    rec.add("sent", [2, 3], _frame(100) + _frame(200))
    rec.add("heard", [5], _frame(300))
    stereo = rec.stereo()
    assert stereo.shape == (6 * FRAME_SAMPLES, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    assert not left[: 2 * FRAME_SAMPLES].any()  # nothing sent before slot 2
    assert (left[2 * FRAME_SAMPLES : 3 * FRAME_SAMPLES] == 100).all()
    assert (left[3 * FRAME_SAMPLES : 4 * FRAME_SAMPLES] == 200).all()
    assert not right[: 5 * FRAME_SAMPLES].any()
    assert (right[5 * FRAME_SAMPLES :] == 300).all()


def test_two_frames_in_one_slot_are_mixed_and_clipped() -> None:
    rec = Recording()
    rec.add("heard", [1, 1], _frame(30000) + _frame(10000))
    right = rec.heard_track()
    assert (right[FRAME_SAMPLES : 2 * FRAME_SAMPLES] == 32767).all()
