"""Unit tests of :mod:`pytest_livekit.conditions.network`: network specs, paths and the per-direction shaper."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from pytest_livekit.conditions import media as conditions
from pytest_livekit.conditions.network import (
    APPLICATION_ORDER,
    Bandwidth,
    BurstLoss,
    Duplicate,
    Latency,
    LinkShaper,
    LinkStats,
    NetworkPath,
    NetworkSpec,
    Outage,
    PacketJitter,
    PacketLoss,
    derive_seed,
    network_spec_from_dict,
)

START = 1000.0  # a monotonic clock rarely starts at 0


def _run(
    shaper: LinkShaper, n: int, *, interval: float = 0.02, size: int = 100
) -> list[tuple[float, list[float]]]:
    """Feed ``n`` packets of ``size`` bytes every ``interval`` seconds from START."""
    out = []
    for i in range(n):
        now = START + i * interval
        out.append((now, shaper.schedule(now, size)))
    return out


def _shaper(*specs: NetworkSpec, seed: int = 7) -> LinkShaper:
    return LinkShaper(specs, seed=seed, start=START)


# -- clean -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "specs",
    [
        (),
        (
            PacketLoss(0.0),
            BurstLoss(0.0),
            Bandwidth(),
            Latency(0),
            PacketJitter(0),
            Duplicate(0),
            Outage(1, 0),
        ),
    ],
    ids=["empty", "all-clean"],
)
def test_clean_shaper_forwards_every_packet_once_on_arrival(specs: tuple[NetworkSpec, ...]) -> None:
    shaper = _shaper(*specs)
    assert shaper.is_clean
    for now, times in _run(shaper, 500, size=160):
        assert times == [now]
    assert shaper.stats() == LinkStats(packets_in=500, forwarded=500, bytes_in=80_000, bytes_forwarded=80_000)


def test_clean_path_gives_two_clean_shapers() -> None:
    path = NetworkPath(uplink=(Latency(0),), seed=3)
    assert path.is_clean
    up, down = path.shapers(START)
    for shaper in (up, down):
        assert all(times == [now] for now, times in _run(shaper, 100))


# -- loss ------------------------------------------------------------------------------------
def _losses(results: list[tuple[float, list[float]]]) -> list[bool]:
    return [not times for _, times in results]


def _bursts(lost: list[bool]) -> list[int]:
    runs, current = [], 0
    for flag in lost:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


RATES = [0.03, 0.05, 0.1, 0.15, 0.2, 0.3]
CALL_LENGTHS = (300, 500, 1000)  # packets: a short call, a typical one, a long one
SEEDS = range(200)


def _loss_counts(spec: NetworkSpec, n: int, seed: int) -> list[int]:
    """Cumulative losses after each of ``n`` packets."""
    counts, total = [], 0
    for lost in _losses(_run(_shaper(spec, seed=seed), n)):
        total += lost
        counts.append(total)
    return counts


@pytest.mark.parametrize("rate", RATES)
def test_packet_loss_delivers_its_rate_over_every_call_length_and_seed(rate: float) -> None:
    for seed in SEEDS:
        counts = _loss_counts(PacketLoss(rate), max(CALL_LENGTHS), seed)
        for n in CALL_LENGTHS:
            assert counts[n - 1] / n == pytest.approx(rate, rel=0.1), (seed, n, counts[n - 1])
        # at every point of the call, within one packet of rate * n
        assert all(abs(c - rate * n) < 1 + 1e-9 for n, c in enumerate(counts, 1)), seed


@pytest.mark.parametrize("rate", [0.001, 0.0333, 0.07, 0.123, 0.5, 0.9, 0.999])
def test_packet_loss_stays_within_one_packet_of_its_rate_at_odd_rates(rate: float) -> None:
    for seed in range(20):
        counts = _loss_counts(PacketLoss(rate), 3000, seed)
        assert all(math.floor(rate * n + 1e-9) <= c <= math.floor(rate * n + 1e-9) + 1 for n, c in enumerate(counts, 1))


def test_packet_loss_is_random_and_seeded() -> None:
    rate = 0.1
    patterns = {tuple(_losses(_run(_shaper(PacketLoss(rate), seed=seed), 1000))) for seed in range(50)}
    assert len(patterns) == 50  # every seed its own pattern
    assert _losses(_run(_shaper(PacketLoss(rate), seed=3), 1000)) == _losses(_run(_shaper(PacketLoss(rate), seed=3), 1000))
    # one loss per stretch of 10 packets, at any of its 10 places with equal chance
    lost = _losses(_run(_shaper(PacketLoss(rate), seed=9), 20_000))
    places = [i % 10 for i, flag in enumerate(lost) if flag]
    assert len(places) == 2000
    for place in range(10):
        assert places.count(place) == pytest.approx(200, abs=4 * math.sqrt(200 * 0.9))  # 4 sigma
    losses_at = [i for i, flag in enumerate(lost) if flag]
    gaps = [b - a for a, b in zip(losses_at, losses_at[1:], strict=False)]
    assert min(gaps) == 1 and max(gaps) == 19  # from back to back to nearly two stretches apart
    assert sum(gaps) / len(gaps) == pytest.approx(10, rel=0.01)


def test_packet_loss_stats_count_the_losses() -> None:
    shaper = _shaper(PacketLoss(0.2))
    lost = _losses(_run(shaper, 20_000))
    stats = shaper.stats()
    assert stats.dropped_loss == sum(lost) == 4000
    assert stats.forwarded == 20_000 - 4000
    assert stats.dropped_queue == stats.dropped_outage == stats.duplicated == 0


def test_loss_is_realised_per_flow() -> None:
    """Each flow (an RTP stream, for the relay) loses the rate of its own packets, whatever the
    other flows do; the first flow's pattern does not depend on the others."""
    rng = random.Random(5)
    flows = ["a"] + [rng.choice(["a", "a", "a", "b", None]) for _ in range(4999)]
    for spec in (PacketLoss(0.1), BurstLoss(0.1, 3.0)):
        shaper = _shaper(spec, seed=2)
        per_flow: dict[Any, list[bool]] = {}
        for i, flow in enumerate(flows):
            per_flow.setdefault(flow, []).append(not shaper.schedule(START + i * 0.01, 100, flow))
        alone = _losses(_run(_shaper(spec, seed=2), len(per_flow["a"])))
        assert per_flow["a"] == alone  # "a" came first: the stream of a one-flow shaper
        for flow, lost in per_flow.items():
            assert abs(sum(lost) - 0.1 * len(lost)) <= 0.75 * 20 + 1, flow  # bursts: see the bound test
        if isinstance(spec, PacketLoss):
            assert all(abs(sum(lost) - 0.1 * len(lost)) < 1 for lost in per_flow.values())
        assert per_flow["b"] != per_flow[None][: len(per_flow["b"])]  # own draws per flow
        assert shaper.stats().dropped_loss == sum(sum(lost) for lost in per_flow.values())


@pytest.mark.parametrize(("rate", "mean_burst"), [(0.05, 3.0), (0.1, 3.0), (0.2, 6.0), (0.3, 2.0)])
def test_burst_loss_rate_and_burst_length_over_20k_packets(rate: float, mean_burst: float) -> None:
    shaper = _shaper(BurstLoss(rate, mean_burst))
    lost = _losses(_run(shaper, 20_000))
    assert sum(lost) / len(lost) == pytest.approx(rate, rel=0.01)
    bursts = _bursts(lost)
    assert sum(bursts) / len(bursts) == pytest.approx(mean_burst, rel=0.1)
    # geometric lengths: the share of single-packet bursts is 1 / mean_burst
    assert bursts.count(1) / len(bursts) == pytest.approx(1 / mean_burst, abs=0.06)
    assert max(bursts) >= 3 * mean_burst
    assert shaper.stats().dropped_loss == sum(lost)


@pytest.mark.parametrize(("rate", "mean_burst"), [(0.03, 3.0), (0.1, 3.0), (0.2, 6.0), (0.3, 3.0), (0.5, 2.0)])
def test_burst_loss_tracks_its_rate_within_the_burst_in_play(rate: float, mean_burst: float) -> None:
    """Over the first n packets the losses are within 0.75 * B * (1 - rate) + 1 of rate * n, B
    the burst of the stretch packet n is in: only the burst being lost can put the count off."""
    for seed in range(50):
        shaper = _shaper(BurstLoss(rate, mean_burst), seed=seed)
        count = 0
        for i in range(3000):
            count += not shaper.schedule(START + i * 0.02, 100)
            plan = shaper._loss_flows[None][1]
            assert plan is not None
            burst = plan.burst_to - plan.burst_from
            assert abs(count - rate * (i + 1)) <= 0.75 * burst * (1 - rate) + 1, (seed, i)


@pytest.mark.parametrize("rate", RATES)
def test_burst_loss_delivers_its_rate_over_a_call(rate: float) -> None:
    """Over 300, 500 and 1000 packets at mean_burst 3: the partial burst at the call's end is
    what can put it off, so +-10 % holds in most calls once the call holds 50 losses (~17
    bursts) and in nearly all from 100 (a Gilbert-Elliott chain missed +-10 % in 72 % of
    500-packet calls at 10 %); on average over seeds within 2 %."""
    fractions = []
    within: dict[int, list[bool]] = {}
    for seed in SEEDS:
        counts = _loss_counts(BurstLoss(rate, 3.0), max(CALL_LENGTHS), seed)
        for n in CALL_LENGTHS:
            fractions.append(counts[n - 1] / n)
            within.setdefault(n, []).append(abs(counts[n - 1] / n - rate) <= 0.1 * rate)
    assert sum(fractions) / len(fractions) == pytest.approx(rate, rel=0.02)
    for n, hits in within.items():
        share = sum(hits) / len(hits)
        if rate * n >= 100:
            assert share >= 0.98, (n, share)
        elif rate * n >= 50:
            assert share >= 0.9, (n, share)


def test_burst_loss_transition_probabilities() -> None:
    spec = BurstLoss(0.1, 4.0)
    assert spec.p_bad_to_good == 0.25
    assert spec.p_good_to_bad == pytest.approx(0.1 / (4 * 0.9))
    stationary = spec.p_good_to_bad / (spec.p_good_to_bad + spec.p_bad_to_good)
    assert stationary == pytest.approx(0.1)


def test_total_loss_drops_everything() -> None:
    shaper = _shaper(PacketLoss(1.0))
    assert all(times == [] for _, times in _run(shaper, 200))
    assert shaper.stats().forwarded == 0


# -- bandwidth -------------------------------------------------------------------------------
def test_bandwidth_over_capacity_caps_throughput_and_fills_the_queue_then_tail_drops() -> None:
    # 100-byte packets every 20 ms = 40 kbps offered into a 24 kbps link with a 200 ms queue.
    shaper = _shaper(Bandwidth(24, queue_ms=200))
    results = _run(shaper, 1500)  # 30 s
    sent = [(now, times[0]) for now, times in results if times]
    waits = [t - now - 100 * 8 / 24_000 for now, t in sent]  # minus the 33.3 ms serialisation
    assert min(waits) >= -1e-9
    stats = shaper.stats()
    assert stats.dropped_queue > 0
    assert stats.dropped_queue + stats.forwarded == 1500
    # The wait grows by 13.3 ms a packet up to the 200 ms limit, then stays there.
    assert waits[0] == pytest.approx(0.0, abs=1e-9)
    assert waits[1] == pytest.approx(0.0133333, abs=1e-6)
    first_drop = next(i for i, (_, times) in enumerate(results) if not times)
    assert 14 <= first_drop <= 17  # 200 ms / 13.3 ms per packet
    assert max(waits) <= 0.200 + 1e-9
    assert max(waits) > 0.200 - 0.034
    assert stats.queue_delay_max_ms == pytest.approx(max(waits) * 1000)
    assert 160 <= stats.queue_delay_p50_ms <= 200
    # Forwarded throughput is the link rate: 24 kbps (over the busy period after the first packet).
    last_departure = sent[-1][1]
    throughput_bps = (len(sent) - 1) * 100 * 8 / (last_departure - sent[0][1])
    assert throughput_bps == pytest.approx(24_000, rel=0.01)
    # Departures are FIFO and spaced by at least one serialisation time.
    departures = [t for _, t in sent]
    assert all(b - a >= 100 * 8 / 24_000 - 1e-9 for a, b in zip(departures, departures[1:], strict=False))
    assert stats.reordered == 0


def test_bandwidth_under_capacity_adds_only_serialisation() -> None:
    shaper = _shaper(Bandwidth(64))  # 12.5 ms per 100-byte packet, one every 20 ms
    for now, times in _run(shaper, 1000):
        assert times == [pytest.approx(now + 0.0125, abs=1e-9)]
    stats = shaper.stats()
    assert stats.queue_delay_p50_ms == stats.queue_delay_p95_ms == stats.queue_delay_max_ms == 0.0
    assert stats.added_delay_p50_ms == pytest.approx(12.5)
    assert stats.dropped_queue == 0


def test_bandwidth_packet_limit() -> None:
    # At most 3 packets wait: the wait stays below 3 serialisation times (100 ms at 24 kbps).
    shaper = _shaper(Bandwidth(24, queue_packets=3))
    _run(shaper, 1000)
    stats = shaper.stats()
    assert stats.dropped_queue > 0
    assert 3 * 100 * 8 / 24 - 34 < stats.queue_delay_max_ms <= 3 * 100 * 8 / 24 + 1e-6


def test_bandwidth_idle_link_accepts_a_packet_larger_than_the_queue() -> None:
    shaper = _shaper(Bandwidth(8, queue_ms=10))  # 1200 bytes take 1.2 s at 8 kbps
    assert shaper.schedule(START, 1200) == [pytest.approx(START + 1.2)]
    assert shaper.schedule(START + 0.5, 100) == []  # would wait 0.7 s > 10 ms
    assert shaper.schedule(START + 1.195, 10) == [pytest.approx(START + 1.21)]  # waits 5 ms


def test_loss_happens_before_the_queue() -> None:
    """Half of a 40 kbps flow lost leaves 20 kbps, under a 24 kbps link: the queue never fills
    (were loss after the queue, 40 % would be tail-dropped)."""
    shaper = _shaper(Bandwidth(24, queue_ms=1000), PacketLoss(0.5))
    _run(shaper, 3000)
    stats = shaper.stats()
    assert stats.dropped_loss == pytest.approx(1500, rel=0.1)
    assert stats.dropped_queue == 0
    assert stats.forwarded == 3000 - stats.dropped_loss


# -- delay -----------------------------------------------------------------------------------
def test_latency_adds_exactly_its_delay() -> None:
    shaper = _shaper(Latency(80))
    for now, times in _run(shaper, 500):
        assert times == [pytest.approx(now + 0.080, abs=1e-9)]
    stats = shaper.stats()
    assert stats.added_delay_p50_ms == pytest.approx(80)
    assert stats.added_delay_p95_ms == pytest.approx(80)


def test_latency_after_the_queue() -> None:
    shaper = _shaper(Latency(50), Bandwidth(64))
    assert shaper.schedule(START, 100) == [pytest.approx(START + 0.0125 + 0.050)]


def test_jitter_without_reorder_keeps_order_and_its_bound() -> None:
    shaper = _shaper(Latency(40), PacketJitter(100))  # 100 ms jitter on 20 ms spacing: would reorder
    results = _run(shaper, 5000)
    times = [t[0] for _, t in results]
    assert times == sorted(times)
    delays = [t[0] - now for now, t in results]
    assert min(delays) >= 0.040 - 1e-9
    assert max(delays) <= 0.140 + 1e-9
    assert len({round(d, 6) for d in delays}) > 1000  # really random
    assert shaper.stats().reordered == 0


def test_jitter_with_reorder_reorders() -> None:
    shaper = _shaper(PacketJitter(100, reorder=True))
    results = _run(shaper, 5000)
    delays = [t[0] - now for now, t in results]
    assert 0 <= min(delays) and max(delays) < 0.100
    assert sum(delays) / len(delays) == pytest.approx(0.050, rel=0.05)  # uniform: mean ms / 2
    times = [t[0] for _, t in results]
    expected = sum(1 for i, t in enumerate(times) if t < max(times[:i], default=-math.inf))
    stats = shaper.stats()
    assert stats.reordered == expected > 0


def test_added_delay_percentiles_of_jitter() -> None:
    shaper = _shaper(PacketJitter(100, reorder=True))
    _run(shaper, 20_000)
    stats = shaper.stats()
    assert stats.added_delay_p50_ms == pytest.approx(50, abs=3)
    assert stats.added_delay_p95_ms == pytest.approx(95, abs=3)
    assert stats.added_delay_max_ms < 100


# -- duplicate -------------------------------------------------------------------------------
def test_duplicate_rate_and_copies() -> None:
    shaper = _shaper(Duplicate(0.05), Latency(10))
    results = _run(shaper, 20_000)
    doubled = [times for _, times in results if len(times) == 2]
    assert all(a == b for a, b in doubled)
    assert all(len(times) in (1, 2) for _, times in results)
    assert len(doubled) / 20_000 == pytest.approx(0.05, rel=0.1)
    stats = shaper.stats()
    assert stats.duplicated == len(doubled)
    assert stats.forwarded == 20_000 + len(doubled)
    assert stats.bytes_forwarded == 100 * stats.forwarded
    assert stats.reordered == 0


def test_duplicates_cost_no_bandwidth() -> None:
    shaper = _shaper(Bandwidth(64), Duplicate(1.0))
    for now, times in _run(shaper, 100):
        assert times == [pytest.approx(now + 0.0125)] * 2
    assert shaper.stats().queue_delay_max_ms == 0.0


# -- outage ----------------------------------------------------------------------------------
def test_outage_drops_exactly_the_packets_in_its_window() -> None:
    shaper = _shaper(Outage(at_s=1.0, duration_s=0.5), Latency(20))
    results = _run(shaper, 300, interval=0.01)  # 3 s, one packet every 10 ms
    for now, times in results:
        in_window = START + 1.0 <= now < START + 1.5
        assert (times == []) == in_window, now
    stats = shaper.stats()
    assert stats.dropped_outage == 50
    assert stats.forwarded == 250
    assert stats.dropped_loss == 0


def test_outage_comes_before_loss() -> None:
    shaper = _shaper(Outage(at_s=0.0, duration_s=1.0), PacketLoss(1.0))
    _run(shaper, 100, interval=0.02)  # 2 s
    stats = shaper.stats()
    assert stats.dropped_outage == 50
    assert stats.dropped_loss == 50


def test_start_outage_drops_live_and_can_be_extended() -> None:
    shaper = _shaper()
    assert shaper.schedule(START, 100) == [START]
    shaper.start_outage(START + 1.0, 0.5)
    assert shaper.schedule(START + 0.99, 100) == [START + 0.99]
    assert shaper.schedule(START + 1.0, 100) == []
    assert shaper.schedule(START + 1.49, 100) == []
    shaper.start_outage(START + 1.4, 0.5)  # while running: extended to 1.9 s
    assert shaper.schedule(START + 1.6, 100) == []
    assert shaper.schedule(START + 1.9, 100) == [START + 1.9]
    shaper.start_outage(START + 3.0, 0.1)  # after it ended: a new window
    assert shaper.schedule(START + 2.5, 100) == [START + 2.5]
    assert shaper.schedule(START + 3.05, 100) == []
    assert shaper.schedule(START + 3.1, 100) == [START + 3.1]
    assert shaper.stats().dropped_outage == 4


# -- determinism and seeds -------------------------------------------------------------------
FULL: tuple[NetworkSpec, ...] = (
    Outage(5, 1),
    PacketLoss(0.05),
    BurstLoss(0.05, 3),
    Bandwidth(32),
    Latency(60),
    PacketJitter(40, reorder=True),
    Duplicate(0.02),
)


def test_same_seed_gives_the_same_schedule() -> None:
    a = _run(_shaper(*FULL, seed=11), 2000)
    b = _run(_shaper(*reversed(FULL), seed=11), 2000)  # the specs' order does not matter
    c = _run(_shaper(*FULL, seed=12), 2000)
    assert a == b
    assert a != c


def test_a_specs_draws_do_not_depend_on_other_kinds() -> None:
    """Adding latency and duplicates leaves the loss pattern as it was."""
    alone = _losses(_run(_shaper(PacketLoss(0.1), BurstLoss(0.05), seed=5), 3000))
    mixed = _losses(
        _run(_shaper(PacketLoss(0.1), BurstLoss(0.05), Latency(30), Duplicate(0.2), seed=5), 3000)
    )
    assert alone == mixed


def test_path_shapers_use_derived_seeds_per_direction() -> None:
    path = NetworkPath(uplink=FULL, downlink=FULL, seed=42)
    up, down = path.shapers(START)
    assert up.seed == derive_seed(42, "uplink")
    assert down.seed == derive_seed(42, "downlink")
    assert up.seed != down.seed
    assert _run(up, 2000) != _run(down, 2000)
    up2, _ = path.shapers(START)
    assert _run(up2, 2000) == _run(path.shapers(START)[0], 2000)


def test_derive_seed_is_stable() -> None:
    """A saved path replays the same in another process: the derivation must never change."""
    assert derive_seed(0, "uplink") == 2008929116112006347
    assert derive_seed(42, "downlink") == 3803718021522225200
    assert 0 <= derive_seed(2**63 - 1, "downlink", "packet_loss") < 2**63


def test_stats_memory_is_bounded() -> None:
    shaper = LinkShaper((PacketJitter(100, reorder=True),), seed=1, start=START, max_samples=500)
    _run(shaper, 20_000)
    assert len(shaper._added_delays.samples) == 500
    stats = shaper.stats()
    assert stats.packets_in == 20_000
    assert stats.added_delay_p50_ms == pytest.approx(50, abs=8)  # a uniform sample of the whole run
    assert stats.to_dict()["packets_in"] == 20_000


# -- data: round trip, describe, order -------------------------------------------------------
def test_application_order() -> None:
    assert APPLICATION_ORDER == (
        "outage",
        "packet_loss",
        "burst_loss",
        "bandwidth",
        "latency",
        "packet_jitter",
        "duplicate",
    )


@pytest.mark.parametrize("spec", FULL + (Bandwidth(24, queue_packets=10), Bandwidth(), PacketJitter(5)))
def test_spec_round_trip(spec: NetworkSpec) -> None:
    assert network_spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_path_round_trip_and_describe() -> None:
    uplink: Any = [Latency(80), PacketLoss(0.02)]
    path = NetworkPath(uplink=uplink, downlink=(Bandwidth(24),), seed=3)
    assert path.uplink == (Latency(80), PacketLoss(0.02))  # a list is stored as a tuple
    assert not path.is_clean
    assert NetworkPath.from_dict(json.loads(json.dumps(path.to_dict()))) == path
    assert path.to_dict()["format_version"] == 1
    assert path.describe() == (
        "uplink: loss 2%, latency 80 ms; downlink: bandwidth 24 kbps queue 200 ms; seed 3"
    )
    assert NetworkPath().describe() == "uplink: clean; downlink: clean; seed 0"
    assert NetworkPath.from_dict({}) == NetworkPath()


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (Bandwidth(24), "bandwidth 24 kbps queue 200 ms"),
        (Bandwidth(64, queue_packets=20), "bandwidth 64 kbps queue 20 packets"),
        (Bandwidth(), "bandwidth unlimited"),
        (Latency(80), "latency 80 ms"),
        (PacketJitter(30), "jitter 30 ms"),
        (PacketJitter(30, reorder=True), "jitter 30 ms reordering"),
        (PacketLoss(0.015), "loss 1.5%"),
        (BurstLoss(0.05, 3), "burst loss 5% burst 3"),
        (Duplicate(0.01), "duplicate 1%"),
        (Outage(10, 2), "outage 2 s at 10 s"),
    ],
)
def test_describe(spec: NetworkSpec, text: str) -> None:
    assert spec.describe() == text


# -- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PacketLoss(-0.1), r"rate=-0.1 is outside the valid range \[0, 1\]"),
        (lambda: PacketLoss(1.5), r"rate=1.5 is outside the valid range \[0, 1\]"),
        (lambda: PacketLoss(math.nan), r"rate=nan must be a finite number"),
        (lambda: BurstLoss(1.0), r"rate=1 leaves the chain no good state; use PacketLoss\(rate=1.0\)"),
        (lambda: BurstLoss(0.9, 1.0), r"mean_burst must be at least rate / \(1 - rate\) = 9"),
        (lambda: BurstLoss(0.1, 0.5), r"mean_burst=0.5 is outside the valid range \[1, 1000\]"),
        (lambda: Duplicate(2), r"rate=2 is outside the valid range"),
        (lambda: Bandwidth(0), r"kbps=0 is outside the valid range \[1, 1e\+07\]"),
        (lambda: Bandwidth(24, queue_ms=100, queue_packets=5), r"give one queue limit"),
        (lambda: Bandwidth(24, queue_packets=2.5), r"queue_packets=2.5 must be an int"),  # type: ignore[arg-type]
        (lambda: Latency(-5), r"ms=-5 is outside the valid range"),
        (lambda: PacketJitter(10, reorder="yes"), r"reorder='yes' must be True or False"),  # type: ignore[arg-type]
        (lambda: Outage(-1, 2), r"at_s=-1 is outside the valid range"),
        (
            lambda: NetworkPath(uplink=(PacketLoss(0.1), Latency(5), PacketLoss(0.2))),
            r"uplink has two 'packet_loss' specs .*give each kind at most once per direction",
        ),
        (
            lambda: NetworkPath(downlink=(conditions.Jitter(10),)),  # type: ignore[arg-type]
            r"downlink contains Jitter\(.*\), which is not a network spec; valid kinds: outage, ",
        ),
        (lambda: NetworkPath(uplink=PacketLoss(0.1)), r"uplink=PacketLoss\(.*\) must be a tuple"),  # type: ignore[arg-type]
        (lambda: NetworkPath(seed=-1), r"seed=-1 is outside the valid range"),
        (lambda: network_spec_from_dict({"kind": "warp"}), r"kind='warp' is not a network spec; valid kinds"),
        (lambda: network_spec_from_dict({"rate": 0.1}), r"kind=None is not a network spec"),
        (
            lambda: network_spec_from_dict({"kind": "latency", "delay": 3}),
            r"unknown field\(s\) delay for kind='latency'; valid fields: ms",
        ),
        (lambda: NetworkPath.from_dict({"format_version": 2}), r"format_version=2 is not supported"),
        (lambda: NetworkPath.from_dict({"up": []}), r"unknown field\(s\) up; valid fields"),
        (
            lambda: LinkShaper((Latency(1), Latency(2)), seed=0, start=0.0),
            r"conditions has two 'latency' specs",
        ),
        (lambda: LinkShaper((), seed=0, start=math.inf), r"start=inf must be a finite time"),
        (lambda: LinkShaper((), seed=0, start=0.0).schedule(0.0, -1), r"size=-1 must be a packet size"),
        (lambda: LinkShaper((), seed=0, start=0.0).start_outage(0.0, -1), r"duration_s=-1 is outside"),
    ],
)
def test_bad_arguments_say_what_to_fix(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
