"""Unit tests of :mod:`pytest_livekit.conditions.strategies`: specs drawn, bounds validated eagerly, and
shrinking towards the clean (mildest) condition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_livekit.conditions import strategies as lks
from pytest_livekit.conditions.media import (
    BargeIn,
    Bitrate,
    CodecRoundTrip,
    Conditions,
    FrameLoss,
    Jitter,
    Level,
    Noise,
    Pause,
    Telephony,
)
from pytest_livekit.conditions.network import (
    Bandwidth,
    BurstLoss,
    Duplicate,
    Latency,
    NetworkPath,
    NetworkSpec,
    Outage,
    PacketJitter,
    PacketLoss,
)

# No example database: these tests must not leave a .hypothesis folder behind.
FIND = settings(database=None, max_examples=500)
GIVEN = settings(database=None, max_examples=60, deadline=None)


def _find(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool]) -> Any:
    return find(strategy, condition, settings=FIND)


# -- shrinking to clean ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "clean"),
    [
        (lks.noise(), Noise(snr_db=None)),
        (lks.noise(colors=("babble", "hum")), Noise(snr_db=None)),
        (lks.level(max_clip_depth_db=12), Level()),
        (lks.telephony(), Telephony(enabled=False, mulaw=False)),
        (lks.codec(), CodecRoundTrip(None)),
        (lks.bitrate(), Bitrate(None)),
        (lks.frame_loss(), FrameLoss()),
        (lks.jitter(), Jitter()),
        (lks.barge_in(), BargeIn(None)),
        (lks.pause(), Pause(0, 0.0)),
        (lks.conditions(lks.noise(), lks.frame_loss()), Conditions()),
    ],
    ids=[
        "noise",
        "noise-colors",
        "level",
        "telephony",
        "codec",
        "bitrate",
        "loss",
        "jitter",
        "barge_in",
        "pause",
        "conditions",
    ],
)
def test_minimal_example_is_clean(strategy: st.SearchStrategy[Any], clean: Any) -> None:
    minimal = _find(strategy, lambda s: True)
    assert minimal == clean
    assert minimal.is_clean


def test_noise_shrinks_to_the_mildest_failing_snr() -> None:
    """Failing below 15 dB: the shrunk example is 14 dB, the highest SNR that still fails."""
    found = _find(lks.noise(), lambda s: s.snr_db is not None and s.snr_db < 15)
    assert found == Noise(snr_db=14, color="white")


@pytest.mark.parametrize(
    ("strategy", "fails", "mildest"),
    [
        (lks.frame_loss(), lambda s: s.rate >= 0.05, FrameLoss(0.05)),
        (lks.frame_loss(models=("gilbert",)), lambda s: s.rate > 0.1, FrameLoss(0.105, "gilbert", 1.0)),
        (lks.level(), lambda s: s.gain_db <= -10, Level(-10.0)),
        (lks.level(max_clip_depth_db=20), lambda s: s.clip_dbfs is not None, Level(0.0, -1.0)),
        (lks.telephony(), lambda s: s.mulaw and s.enabled, Telephony(True, True)),
        (lks.codec(), lambda s: s.bitrate_bps is not None and s.bitrate_bps < 20_000, CodecRoundTrip(19_000)),
        (lks.bitrate(step_bps=2_000), lambda s: s.max_bitrate_bps is not None, Bitrate(64_000)),
        (lks.jitter(), lambda s: s.std_ms > 20, Jitter(21.0)),
        (lks.barge_in(), lambda s: s.offset_s is not None and s.offset_s < 1.0, BargeIn(0.9)),
        (lks.pause(), lambda s: s.duration_s >= 1.0, Pause(0, 1.0)),
    ],
)
def test_strategies_shrink_to_the_mildest_failing_condition(
    strategy: st.SearchStrategy[Any], fails: Callable[[Any], bool], mildest: Any
) -> None:
    assert _find(strategy, fails) == mildest


def test_conditions_shrink_to_the_one_item_that_matters() -> None:
    found = _find(lks.conditions(lks.noise(), lks.frame_loss()), lambda c: "loss" in c.kinds())
    assert found == Conditions(items=(FrameLoss(0.005),), seed=0)
    assert found.describe() == "loss random 0.5%, seed 0"


# -- drawn values stay in bounds -------------------------------------------------------------
@GIVEN
@given(lks.noise(min_snr_db=5, max_snr_db=25, colors=("pink", "babble", "hum")))
def test_noise_draws_stay_in_bounds(spec: Noise) -> None:
    assert spec.snr_db is None or 5 <= spec.snr_db <= 24
    assert spec.color in ("pink", "babble", "hum") or spec.is_clean


@GIVEN
@given(lks.noise(colors=("file",), file="rain.wav"))
def test_noise_file_draws_carry_the_file(spec: Noise) -> None:
    assert spec.is_clean or (spec.color == "file" and spec.file == "rain.wav")


@GIVEN
@given(lks.frame_loss(max_rate=0.1, max_burst_length=4, frame_ms=10))
def test_frame_loss_draws_stay_in_bounds(spec: FrameLoss) -> None:
    assert 0 <= spec.rate <= 0.1
    assert round(spec.rate / lks.LOSS_STEP, 9) == round(spec.rate / lks.LOSS_STEP)
    assert 1 <= spec.burst_length <= 4 and spec.frame_ms == 10


@GIVEN
@given(lks.level(min_gain_db=-20, max_gain_db=6, max_clip_depth_db=10))
def test_level_draws_stay_in_bounds(spec: Level) -> None:
    assert -20 <= spec.gain_db <= 6
    assert spec.clip_dbfs is None or -10 <= spec.clip_dbfs <= -1


@GIVEN
@given(lks.codec(min_bitrate_bps=8_000, max_bitrate_bps=32_000, step_bps=4_000))
def test_codec_draws_stay_in_bounds(spec: CodecRoundTrip) -> None:
    assert spec.bitrate_bps is None or spec.bitrate_bps in range(8_000, 32_001, 4_000)


@GIVEN
@given(lks.barge_in(min_offset_s=0.5, max_offset_s=2.0, step_s=0.25))
def test_barge_in_draws_stay_in_bounds(spec: BargeIn) -> None:
    assert spec.offset_s is None or 0.5 <= spec.offset_s <= 2.0


@GIVEN
@given(lks.pause(max_duration_s=2.0, min_word=1, max_word=3))
def test_pause_draws_stay_in_bounds(spec: Pause) -> None:
    assert 0 <= spec.duration_s <= 2.0
    assert spec.is_clean or 1 <= spec.at_word <= 3


@GIVEN
@given(lks.conditions(lks.noise(), lks.frame_loss(), lks.jitter(), seeds=st.integers(10, 20)))
def test_conditions_draws_have_no_clean_items_and_the_seed(bundle: Conditions) -> None:
    assert all(not item.is_clean for item in bundle.items)
    assert 10 <= bundle.seed <= 20
    assert Conditions.from_dict(bundle.to_dict()) == bundle


# -- eager validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: lks.noise(min_snr_db=30, max_snr_db=10), r"min_snr_db=30 must be less than max_snr_db=10"),
        (lambda: lks.noise(max_snr_db=100), r"max_snr_db=100 is outside the valid range \[-20, 80\]"),
        (lambda: lks.noise(colors=("violet",)), r"colors=\('violet',\) contains 'violet'"),
        (lambda: lks.noise(colors=()), r"colors=\(\) must be a non-empty tuple"),
        (lambda: lks.noise(colors="pink"), r"colors='pink' must be a non-empty tuple"),
        (lambda: lks.noise(colors=("file",)), r"colors=\('file',\) includes 'file', which needs file="),
        (lambda: lks.level(min_gain_db=5), r"min_gain_db=5 is outside the valid range \[-60, 0\]"),
        (lambda: lks.level(max_clip_depth_db=-3), r"max_clip_depth_db=-3 is outside"),
        (lambda: lks.codec(min_bitrate_bps=1_000), r"min_bitrate_bps=1000 is outside the valid range"),
        (lambda: lks.codec(64_000, 8_000), r"min_bitrate_bps=64000 must be less than max_bitrate_bps=8000"),
        (lambda: lks.bitrate(step_bps=0), r"step_bps=0 is outside the valid range"),
        (lambda: lks.frame_loss(max_rate=0.9), r"max_rate=0.9 is outside the valid range \[0.005, 0.5\]"),
        (lambda: lks.frame_loss(models=("bursty",)), r"models=\('bursty',\) contains 'bursty'"),
        (lambda: lks.frame_loss(frame_ms=15), r"frame_ms=15 is not valid; valid values: 10, 20, 40, 60"),
        (lambda: lks.frame_loss(max_burst_length=0), r"max_burst_length=0 is outside"),
        (lambda: lks.jitter(max_std_ms=0), r"max_std_ms=0 is outside the valid range \[1, 1000\]"),
        (lambda: lks.barge_in(2.0, 1.0), r"min_offset_s=2.0 must be less than max_offset_s=1.0"),
        (lambda: lks.barge_in(step_s=0.0), r"step_s=0.0 is outside"),
        (lambda: lks.pause(max_duration_s=0), r"max_duration_s=0 is outside"),
        (lambda: lks.pause(min_word=4, max_word=2), r"max_word=2 is outside the valid range \[4, 1000\]"),
        (lambda: lks.conditions(Noise(3)), r"strategies\[0\]=Noise\(.*\) must be a hypothesis strategy"),  # type: ignore[arg-type]
        (lambda: lks.conditions(seeds=7), r"seeds=7 must be a hypothesis strategy"),  # type: ignore[arg-type]
    ],
)
def test_bad_bounds_raise_when_the_strategy_is_built(build: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build()


# -- settings profile ------------------------------------------------------------------------
def test_settings_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    profile = lks.settings_profile()
    assert profile.deadline is None
    assert profile.max_examples == 5
    assert not profile.derandomize
    assert set(profile.suppress_health_check) >= {HealthCheck.function_scoped_fixture, HealthCheck.too_slow}
    monkeypatch.setenv("CI", "true")
    assert lks.settings_profile().derandomize
    assert lks.register_profiles() == ("livekit",)
    assert lks.settings_profile() == settings.get_profile("livekit")
    assert settings.get_profile("livekit").derandomize


# -- network strategies ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "clean"),
    [
        (lks.bandwidth(), Bandwidth()),
        (lks.bandwidth(queue_ms=80), Bandwidth(queue_ms=80)),
        (lks.latency(), Latency()),
        (lks.packet_jitter(), PacketJitter()),
        (lks.packet_loss(), PacketLoss()),
        (lks.burst_loss(), BurstLoss()),
        (lks.duplicate(), Duplicate()),
        (lks.outage(), Outage(at_s=1.0, duration_s=0.0)),
        (lks.network_specs(), ()),
        (lks.network_paths(), NetworkPath()),
    ],
    ids=[
        "bandwidth",
        "bandwidth-queue",
        "latency",
        "packet_jitter",
        "packet_loss",
        "burst_loss",
        "duplicate",
        "outage",
        "network_specs",
        "network_paths",
    ],
)
def test_network_minimal_example_is_clean(strategy: st.SearchStrategy[Any], clean: Any) -> None:
    minimal = _find(strategy, lambda s: True)
    assert minimal == clean
    assert minimal == () or minimal.is_clean


@pytest.mark.parametrize(
    ("strategy", "fails", "mildest"),
    [
        (lks.bandwidth(), lambda s: s.kbps is not None and s.kbps < 100, Bandwidth(96.0)),
        (lks.latency(), lambda s: s.ms > 200, Latency(201.0)),
        (lks.packet_jitter(), lambda s: s.ms > 20, PacketJitter(21.0)),
        (lks.packet_jitter(), lambda s: s.reorder, PacketJitter(1.0, reorder=True)),
        (lks.packet_loss(), lambda s: s.rate >= 0.05, PacketLoss(0.05)),
        (lks.burst_loss(), lambda s: s.rate > 0.1, BurstLoss(0.105, 1.0)),
        (lks.burst_loss(), lambda s: s.mean_burst >= 4, BurstLoss(0.005, 4.0)),
        (lks.duplicate(), lambda s: s.rate >= 0.02, Duplicate(0.02)),
        (lks.outage(), lambda s: s.duration_s >= 1.0, Outage(1.0, 1.0)),
        (lks.outage(), lambda s: s.at_s >= 5.0, Outage(5.0, 0.1)),
    ],
)
def test_network_strategies_shrink_to_the_mildest_failing_spec(
    strategy: st.SearchStrategy[Any], fails: Callable[[Any], bool], mildest: Any
) -> None:
    assert _find(strategy, fails) == mildest


def test_network_paths_shrink_to_the_one_spec_that_matters() -> None:
    found = _find(lks.network_paths(), lambda p: any(s.kind == "packet_loss" for s in p.uplink))
    assert found == NetworkPath(uplink=(PacketLoss(0.005),))
    found = _find(lks.network_paths(), lambda p: any(s.kind == "bandwidth" for s in p.downlink))
    assert found == NetworkPath(downlink=(Bandwidth(512.0),))
    assert found.describe() == "uplink: clean; downlink: bandwidth 512 kbps queue 200 ms; seed 0"


@GIVEN
@given(lks.network_specs())
def test_network_specs_draws_stay_in_mobile_ranges(specs: tuple[NetworkSpec, ...]) -> None:
    kinds = [s.kind for s in specs]
    assert len(kinds) == len(set(kinds))
    for spec in specs:
        assert not spec.is_clean
        if isinstance(spec, Bandwidth):
            assert spec.kbps is not None and 8 <= spec.kbps <= 512 and spec.queue_ms == 200
        elif isinstance(spec, Latency):
            assert 0 < spec.ms <= 400
        elif isinstance(spec, PacketJitter):
            assert 0 < spec.ms <= 100
        elif isinstance(spec, PacketLoss):
            assert 0 < spec.rate <= 0.3
        elif isinstance(spec, BurstLoss):
            assert 0 < spec.rate <= 0.3 and 1 <= spec.mean_burst <= 10
        elif isinstance(spec, Duplicate):
            assert 0 < spec.rate <= 0.1
        else:
            assert isinstance(spec, Outage)
            assert 0 < spec.duration_s <= 3.0 and 1.0 <= spec.at_s <= 20.0


@GIVEN
@given(lks.network_paths(lks.network_specs(lks.latency(50)), seeds=st.integers(10, 20)))
def test_network_paths_draws_round_trip(path: NetworkPath) -> None:
    assert all(isinstance(s, Latency) and s.ms <= 50 for s in path.uplink)
    assert 10 <= path.seed <= 20
    assert NetworkPath.from_dict(path.to_dict()) == path


@GIVEN
@given(
    lks.bandwidth(min_kbps=16, max_kbps=64, step_kbps=16, queue_ms=50),
    lks.packet_jitter(max_ms=30, reorder=True),
    lks.outage(max_duration_s=1.0, min_at_s=2.0, max_at_s=3.0, step_s=0.5),
)
def test_network_draws_stay_in_bounds(bw: Bandwidth, jitter: PacketJitter, out: Outage) -> None:
    assert bw.kbps in (None, 16, 32, 48, 64) and bw.queue_ms == 50
    assert jitter.is_clean or (jitter.reorder and 1 <= jitter.ms <= 30)
    assert out.duration_s in (0.0, 0.5, 1.0) and out.at_s in (2.0, 2.5, 3.0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: lks.bandwidth(min_kbps=600), r"min_kbps=600 must be less than max_kbps=512"),
        (lambda: lks.bandwidth(min_kbps=0), r"min_kbps=0 is outside the valid range"),
        (lambda: lks.bandwidth(step_kbps=0), r"step_kbps=0 is outside the valid range"),
        (lambda: lks.bandwidth(queue_ms=-1), r"queue_ms=-1 is outside the valid range"),
        (lambda: lks.latency(max_ms=0), r"max_ms=0 is outside the valid range \[1, 10000\]"),
        (lambda: lks.packet_jitter(reorder="no"), r"reorder='no' must be True, False or None"),  # type: ignore[arg-type]
        (lambda: lks.packet_loss(max_rate=1.5), r"max_rate=1.5 is outside the valid range \[0.005, 1\]"),
        (lambda: lks.burst_loss(max_rate=0.6), r"max_rate=0.6 is outside the valid range \[0.005, 0.5\]"),
        (lambda: lks.burst_loss(max_burst=0), r"max_burst=0 is outside"),
        (lambda: lks.duplicate(max_rate=0), r"max_rate=0 is outside"),
        (lambda: lks.outage(max_duration_s=0), r"max_duration_s=0 is outside"),
        (lambda: lks.outage(min_at_s=5, max_at_s=2), r"max_at_s=2 is outside the valid range \[5, 86400\]"),
        (
            lambda: lks.network_specs(Latency(5)),  # type: ignore[arg-type]
            r"strategies\[0\]=Latency\(.*\) must be a hypothesis strategy",
        ),
        (lambda: lks.network_paths(uplink=()), r"uplink=\(\) must be a hypothesis strategy"),  # type: ignore[arg-type]
        (lambda: lks.network_paths(seeds=7), r"seeds=7 must be a hypothesis strategy"),  # type: ignore[arg-type]
    ],
)
def test_network_bad_bounds_raise_when_the_strategy_is_built(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build()


def test_network_specs_with_a_repeated_kind_fail_when_drawn() -> None:
    strategy = lks.network_specs(lks.latency(), lks.latency())
    with pytest.raises(InvalidArgument, match=r"network_specs has two 'latency' specs"):
        _find(strategy, lambda specs: len(specs) == 2)
