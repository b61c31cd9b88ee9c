"""Network impairments for one direction of a UDP packet flow: pure, seeded, deterministic.

The packet relay (:mod:`pytest_livekit.conditions.packet_relay`) sits between a WebRTC participant and
livekit-server and forwards every datagram (RTP, RTCP, STUN) in both directions. For each
direction it asks a :class:`LinkShaper` *when* to forward each packet; the shaper is plain
arithmetic on arrival times and packet sizes, with no sockets, no clock and no asyncio, so a
schedule can be computed, tested and replayed offline.

A *network spec* is a frozen dataclass that acts on one direction:

* :class:`Outage`: everything in a time window is dropped (a handover), then traffic resumes.
* :class:`PacketLoss`: random loss, spread so that the count tracks the rate (one loss at a
  random place in every ``1 / rate`` packets).
* :class:`BurstLoss`: bursts of geometric length (as a Gilbert-Elliott chain's), placed so that
  the count tracks the rate.
* :class:`Bandwidth`: a bottleneck link of ``kbps`` with a FIFO queue and tail drop.
* :class:`Latency`: a fixed one-way delay.
* :class:`PacketJitter`: a random extra delay per packet, in order or reordering.
* :class:`Duplicate`: a packet is forwarded twice.

Every spec has, as the specs of :mod:`pytest_livekit.conditions.media`:

* ``kind``: a short class-level name (``"bandwidth"``, ``"packet_loss"``, ...) used in JSON.
* ``is_clean``: True when the spec changes nothing. Each class documents its *severity*;
  severity 0 is clean.
* ``to_dict()``: plain JSON-able data; :func:`network_spec_from_dict` turns it back into the spec.
* ``describe()``: a short line for reports.

**Application order** within a direction is fixed, whatever the order of the specs
(:data:`APPLICATION_ORDER`): outage -> loss (random, then burst) -> bandwidth queue ->
latency + jitter -> duplicate. So a packet lost on the way never takes queue space, the queue
delays packets before the propagation delay, and a duplicate is made on the far side of the
bottleneck (it costs no bandwidth) and leaves together with its original.

:class:`NetworkPath` bundles the specs of both directions with a seed; :meth:`NetworkPath.shapers`
builds the two :class:`LinkShaper` objects the relay uses.

Only numpy is imported at module import (through :mod:`pytest_livekit.conditions.media`, whose
argument checks are shared); the per-packet work uses :class:`random.Random`, which is several
times faster than numpy for one draw at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from pytest_livekit.units import ms_to_seconds, seconds_to_ms
from pytest_livekit.validation import check_bool, check_int, check_number, format_number

__all__ = [
    "APPLICATION_ORDER",
    "NETWORK_PATH_FORMAT_VERSION",
    "STATS_SAMPLE_CAP",
    "Bandwidth",
    "BaseNetworkSpec",
    "BurstLoss",
    "Duplicate",
    "Latency",
    "LinkShaper",
    "LinkStats",
    "NetworkPath",
    "NetworkSpec",
    "Outage",
    "PacketJitter",
    "PacketLoss",
    "derive_seed",
    "network_spec_from_dict",
]

STATS_SAMPLE_CAP = 100_000
"""Most delay samples a :class:`LinkShaper` keeps per statistic (a reservoir sample beyond it),
so memory stays bounded on a long call: 100k samples is over 8 minutes at 200 packets/s."""

_MAX_SEED = 2**63 - 1
_EPS_S = 1e-9  # float slack, in seconds, when comparing a queue wait with the queue limit


# -- specs -----------------------------------------------------------------------------------
class BaseNetworkSpec:
    """Behaviour shared by every network spec (each subclass is a frozen dataclass).

    Attributes:
        kind: Short name of the spec class, used in JSON and :meth:`describe`.
    """

    kind: ClassVar[str] = ""

    @property
    def is_clean(self) -> bool:
        """True when this spec changes nothing (severity 0)."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data, with its ``kind``; :func:`network_spec_from_dict` reverses it.

        Returns:
            ``{"kind": ..., <field>: <value>, ...}``.
        """
        data: dict[str, Any] = {"kind": self.kind}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            data[field.name] = getattr(self, field.name)
        return data

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"latency 80 ms"``."""
        return self.kind


@dataclass(frozen=True)
class Bandwidth(BaseNetworkSpec):
    """A bottleneck link: packets are serialised at ``kbps`` through a FIFO queue with tail drop.

    A packet of ``size`` bytes occupies the link for ``size * 8 / (kbps * 1000)`` seconds (the
    size the relay passes, i.e. the UDP payload; IP/UDP headers are not added). It waits until
    the packets ahead of it are sent, then is forwarded when its own last bit is sent. It is
    dropped (tail drop) when its *wait* would exceed ``queue_ms`` milliseconds, i.e. when the
    backlog ahead of it holds more than ``queue_ms`` of transmission time; with
    ``queue_packets`` the limit is instead a count: it is dropped when ``queue_packets``
    packets are already waiting (not counting the one being sent). An idle link always accepts
    a packet, so one larger than the queue still gets through.

    Severity: lower ``kbps`` is worse; ``kbps=None`` (unlimited) is clean.

    Attributes:
        kbps: Link rate in kilobits per second (1 kbit = 1000 bits), 1 to 10,000,000, or
            ``None`` for an unlimited link.
        queue_ms: Longest queue wait in milliseconds, 0 to 60,000 (200 ms by default, a
            typical mobile bearer buffer). Leave it at 200 when ``queue_packets`` is given.
        queue_packets: Queue limit in packets, 0 to 1,000,000, replacing ``queue_ms``; ``None``
            to limit by time.
    """

    kind: ClassVar[str] = "bandwidth"

    kbps: float | None = None
    queue_ms: float = 200.0
    queue_packets: int | None = None

    def __post_init__(self) -> None:
        if self.kbps is not None:
            check_number("kbps", self.kbps, 1.0, 10_000_000.0)
        check_number("queue_ms", self.queue_ms, 0.0, 60_000.0)
        if self.queue_packets is not None:
            check_int("queue_packets", self.queue_packets, 0, 1_000_000)
            if self.queue_ms != 200.0:
                raise ValueError(
                    f"queue_ms={self.queue_ms!r} conflicts with queue_packets={self.queue_packets!r}: "
                    "give one queue limit, time (queue_ms) or packets (queue_packets)"
                )

    @property
    def is_clean(self) -> bool:
        """True when the link is unlimited (``kbps`` is None)."""
        return self.kbps is None

    @property
    def bits_per_second(self) -> float | None:
        """The link rate in bits per second, or ``None`` when unlimited."""
        return None if self.kbps is None else self.kbps * 1000.0

    def describe(self) -> str:
        """E.g. ``"bandwidth 24 kbps queue 200 ms"`` or ``"bandwidth 64 kbps queue 20 packets"``."""
        if self.kbps is None:
            return "bandwidth unlimited"
        if self.queue_packets is not None:
            return f"bandwidth {format_number(self.kbps)} kbps queue {self.queue_packets} packets"
        return f"bandwidth {format_number(self.kbps)} kbps queue {format_number(self.queue_ms)} ms"


@dataclass(frozen=True)
class Latency(BaseNetworkSpec):
    """A fixed one-way delay added to every packet.

    Severity: ``ms``; 0 is clean.

    Attributes:
        ms: Delay in milliseconds, 0 to 10,000.
    """

    kind: ClassVar[str] = "latency"

    ms: float = 0.0

    def __post_init__(self) -> None:
        check_number("ms", self.ms, 0.0, 10_000.0)

    @property
    def is_clean(self) -> bool:
        """True when ``ms`` is 0."""
        return self.ms == 0

    def describe(self) -> str:
        """E.g. ``"latency 80 ms"``."""
        return f"latency {format_number(self.ms)} ms"


@dataclass(frozen=True)
class PacketJitter(BaseNetworkSpec):
    """A random extra delay per packet, drawn uniformly from ``[0, ms)`` milliseconds.

    Uniform, so the mean extra delay is ``ms / 2`` and the worst is ``ms`` (a known bound for
    timeouts). With ``reorder=False`` a packet never leaves before the packet that arrived
    before it: its delay is raised to the previous packet's departure when it would overtake
    (so some delays exceed the draw, but order is kept, as on one path). With
    ``reorder=True`` delays are independent and packets may overtake each other (multipath,
    radio retransmissions). (Named so as not to clash with
    :class:`pytest_livekit.conditions.media.Jitter`, which delays the caller's audio frames.)

    Severity: ``ms``; 0 is clean.

    Attributes:
        ms: Upper bound of the extra delay in milliseconds, 0 to 10,000.
        reorder: Whether packets may overtake each other.
    """

    kind: ClassVar[str] = "packet_jitter"

    ms: float = 0.0
    reorder: bool = False

    def __post_init__(self) -> None:
        check_number("ms", self.ms, 0.0, 10_000.0)
        check_bool("reorder", self.reorder)

    @property
    def is_clean(self) -> bool:
        """True when ``ms`` is 0."""
        return self.ms == 0

    def describe(self) -> str:
        """E.g. ``"jitter 30 ms"`` or ``"jitter 30 ms reordering"``."""
        return f"jitter {format_number(self.ms)} ms" + (" reordering" if self.reorder else "")


def _percent(rate: float) -> str:
    """A fraction as a percentage for :meth:`describe`, e.g. ``0.05`` -> ``"5%"``."""
    return f"{format_number(round(rate * 100, 6))}%"


@dataclass(frozen=True)
class PacketLoss(BaseNetworkSpec):
    """Random loss that delivers its rate: each packet is lost with probability ``rate``, and
    the losses are spread so that any call loses ``rate`` of its packets, not a random amount
    around it.

    How: the packets are cut into consecutive stretches of ``1 / rate`` packets (stretch ``k``
    is packets ``ceil(k / rate)`` to ``ceil((k + 1) / rate) - 1``) and exactly one packet of
    each stretch, chosen uniformly at random (seeded), is lost. So over the first ``n``
    packets of a flow the losses number ``floor(rate * n)`` or one more: within one packet of
    ``rate * n`` at every ``n`` (a Bernoulli process, by contrast, strays by
    ``sqrt(n * rate * (1 - rate))``: +-2.6 points at 10 % over a 500-packet call). Losses are
    never more than ``2 / rate`` packets apart and, below 50 %, never more than two in a row;
    ``rate=1`` loses every packet. The relay realises the loss per RTP stream (see
    :meth:`LinkShaper.schedule`), so each receiver measures the rate.

    Severity: ``rate``; 0 is clean.

    Attributes:
        rate: Fraction of packets lost, from 0 to 1.
    """

    kind: ClassVar[str] = "packet_loss"

    rate: float = 0.0

    def __post_init__(self) -> None:
        check_number("rate", self.rate, 0.0, 1.0)

    @property
    def is_clean(self) -> bool:
        """True when ``rate`` is 0."""
        return self.rate == 0

    def describe(self) -> str:
        """E.g. ``"loss 2%"``."""
        return f"loss {_percent(self.rate)}"


@dataclass(frozen=True)
class BurstLoss(BaseNetworkSpec):
    """Bursty loss: losses come in runs of geometric length, and the runs are placed so that
    a call loses ``rate`` of its packets.

    Burst lengths are those of a Gilbert-Elliott chain's bad state: geometric with mean
    ``L = mean_burst`` packets (``P(B = b) = (1 - 1/L)**(b - 1) / L``, drawn seeded). Each
    burst of ``B`` packets is given a stretch of ``B / rate`` packets (so the stretches tile
    the flow and hold exactly ``rate`` of it as losses), and starts at a random place in the
    middle half of the room its stretch leaves around it; a burst never starts right where the
    last one ended when there is room, so bursts keep their lengths. The good runs between
    bursts have the chain's mean length, ``L * (1 - rate) / rate``, but are steered: over the
    first ``n`` packets of a flow the losses are within ``0.75 * B * (1 - rate) + 1`` of
    ``rate * n``, ``B`` being the burst in play (a Gilbert-Elliott chain strays by several
    bursts over a call). The relay realises the loss per RTP stream (see
    :meth:`LinkShaper.schedule`).

    The equivalent chain's transition probabilities (:attr:`p_bad_to_good`,
    :attr:`p_good_to_bad`) are kept for reference; ``L`` must be at least ``r / (1 - r)``, as
    for the chain.

    Severity: ``rate``; 0 is clean.

    Attributes:
        rate: Long-run loss, a fraction from 0 to below 1.
        mean_burst: Mean number of consecutive lost packets in a burst, 1 to 1000.
    """

    kind: ClassVar[str] = "burst_loss"

    rate: float = 0.0
    mean_burst: float = 3.0

    def __post_init__(self) -> None:
        check_number("rate", self.rate, 0.0, 1.0)
        if self.rate == 1:
            raise ValueError(
                "rate=1 leaves the chain no good state; use PacketLoss(rate=1.0) to drop everything, "
                "or a BurstLoss rate below 1"
            )
        check_number("mean_burst", self.mean_burst, 1.0, 1000.0)
        if self.p_good_to_bad > 1.0:
            raise ValueError(
                f"rate={self.rate!r} with mean_burst={self.mean_burst!r} is impossible for a "
                f"Gilbert-Elliott chain: mean_burst must be at least rate / (1 - rate) = "
                f"{self.rate / (1 - self.rate):.3g}"
            )

    @property
    def is_clean(self) -> bool:
        """True when ``rate`` is 0."""
        return self.rate == 0

    @property
    def p_bad_to_good(self) -> float:
        """The equivalent chain's probability per packet of leaving a burst: ``1 / mean_burst``."""
        return 1.0 / self.mean_burst

    @property
    def p_good_to_bad(self) -> float:
        """The equivalent chain's probability per packet of starting a burst:
        ``rate / (mean_burst * (1 - rate))``.
        """
        return self.rate / (self.mean_burst * (1.0 - self.rate))

    def describe(self) -> str:
        """E.g. ``"burst loss 5% burst 3"``."""
        return f"burst loss {_percent(self.rate)} burst {format_number(self.mean_burst)}"


@dataclass(frozen=True)
class Duplicate(BaseNetworkSpec):
    """Duplicated packets: each packet is forwarded twice with probability ``rate``.

    The second copy is scheduled at the same time as the first (the relay sends it right
    after); it is made after the bandwidth queue, so it costs no bandwidth.

    Severity: ``rate``; 0 is clean.

    Attributes:
        rate: Duplication probability per packet, a fraction from 0 to 1.
    """

    kind: ClassVar[str] = "duplicate"

    rate: float = 0.0

    def __post_init__(self) -> None:
        check_number("rate", self.rate, 0.0, 1.0)

    @property
    def is_clean(self) -> bool:
        """True when ``rate`` is 0."""
        return self.rate == 0

    def describe(self) -> str:
        """E.g. ``"duplicate 1%"``."""
        return f"duplicate {_percent(self.rate)}"


@dataclass(frozen=True)
class Outage(BaseNetworkSpec):
    """A scheduled outage (a handover): every packet arriving in ``[at_s, at_s + duration_s)``
    seconds after the shaper's start is dropped; traffic then resumes unchanged.

    :meth:`LinkShaper.start_outage` triggers one live instead.

    Severity: ``duration_s``; 0 is clean.

    Attributes:
        at_s: Start of the outage in seconds after the shaper's start, 0 to 86,400.
        duration_s: Length of the outage in seconds, 0 to 3600.
    """

    kind: ClassVar[str] = "outage"

    at_s: float = 0.0
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        check_number("at_s", self.at_s, 0.0, 86_400.0)
        check_number("duration_s", self.duration_s, 0.0, 3600.0)

    @property
    def is_clean(self) -> bool:
        """True when ``duration_s`` is 0."""
        return self.duration_s == 0

    def describe(self) -> str:
        """E.g. ``"outage 2 s at 10 s"``."""
        return f"outage {format_number(self.duration_s)} s at {format_number(self.at_s)} s"


NetworkSpec: TypeAlias = Bandwidth | Latency | PacketJitter | PacketLoss | BurstLoss | Duplicate | Outage
"""Any network spec."""

_SPEC_CLASSES = (Outage, PacketLoss, BurstLoss, Bandwidth, Latency, PacketJitter, Duplicate)
_SPEC_TYPES: dict[str, type[NetworkSpec]] = {cls.kind: cls for cls in _SPEC_CLASSES}
APPLICATION_ORDER: tuple[str, ...] = tuple(_SPEC_TYPES)
"""Order in which a :class:`LinkShaper` applies the spec kinds to each packet: ``("outage",
"packet_loss", "burst_loss", "bandwidth", "latency", "packet_jitter", "duplicate")`` (see the
module docstring); also the order of :meth:`NetworkPath.describe`."""
_ORDER = {kind: i for i, kind in enumerate(APPLICATION_ORDER)}


def network_spec_from_dict(data: Mapping[str, Any]) -> NetworkSpec:
    """Rebuild a network spec from :meth:`BaseNetworkSpec.to_dict` output (e.g. read from JSON).

    Args:
        data: ``{"kind": ..., <field>: <value>, ...}``; missing fields take their defaults.

    Returns:
        The spec, validated.

    Raises:
        ValueError: If the kind or a field is unknown, or a value is invalid.
    """
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = _SPEC_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"kind={kind!r} is not a network spec; valid kinds: {', '.join(_SPEC_TYPES)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} for kind={kind!r}; valid fields: "
            f"{', '.join(sorted(names))}"
        )
    try:
        return cls(**fields)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"kind={kind!r}: {exc}") from None


def check_direction(name: str, specs: object) -> tuple[NetworkSpec, ...]:
    """Check one direction's specs: network specs, each kind at most once.

    Args:
        name: Argument name, repeated in the message (``"uplink"``, ``"conditions"``, ...).
        specs: A tuple or list of specs.

    Returns:
        The specs as a tuple, in the given order.

    Raises:
        ValueError: If it is not a sequence of network specs or repeats a kind.
    """
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ValueError(f"{name}={specs!r} must be a tuple of network specs")
    items = tuple(specs)
    seen: dict[str, NetworkSpec] = {}
    for item in items:
        if not isinstance(item, _SPEC_CLASSES):
            raise ValueError(
                f"{name} contains {item!r}, which is not a network spec; valid kinds: "
                f"{', '.join(_SPEC_TYPES)}"
            )
        if item.kind in seen:
            raise ValueError(
                f"{name} has two {item.kind!r} specs ({seen[item.kind]!r} and {item!r}); "
                "give each kind at most once per direction"
            )
        seen[item.kind] = item
    return items


def _describe_direction(specs: Sequence[NetworkSpec]) -> str:
    """The non-clean specs of one direction in application order, or ``"clean"``."""
    parts = [s.describe() for s in sorted(specs, key=lambda s: _ORDER[s.kind]) if not s.is_clean]
    return ", ".join(parts) or "clean"


def derive_seed(seed: int, *labels: str) -> int:
    """A seed for a sub-stream, derived from ``seed`` and ``labels``: stable across processes,
    platforms and Python versions (BLAKE2b of the text ``"seed/label/label..."``).

    Args:
        seed: The parent seed, a non-negative int.
        *labels: Names of the sub-stream, e.g. ``"uplink"`` or a spec kind.

    Returns:
        A seed in ``0 .. 2**63 - 1``.
    """
    text = "/".join([str(seed), *labels]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") & _MAX_SEED


NETWORK_PATH_FORMAT_VERSION = 1
"""Version of the :meth:`NetworkPath.to_dict` layout."""


@dataclass(frozen=True)
class NetworkPath:
    """The network between a participant and livekit-server: specs for each direction and a seed.

    Seeds: the uplink shaper gets ``derive_seed(seed, "uplink")`` and the downlink shaper
    ``derive_seed(seed, "downlink")`` (see :func:`derive_seed`), so the two directions draw
    independent losses and delays from one path seed.

    Attributes:
        uplink: Specs for participant -> server packets (a list is accepted and stored as a
            tuple); each kind at most once.
        downlink: Specs for server -> participant packets; each kind at most once.
        seed: Non-negative integer seed.
    """

    uplink: tuple[NetworkSpec, ...] = ()
    downlink: tuple[NetworkSpec, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "uplink", check_direction("uplink", self.uplink))
        object.__setattr__(self, "downlink", check_direction("downlink", self.downlink))
        check_int("seed", self.seed, 0, _MAX_SEED)

    @property
    def is_clean(self) -> bool:
        """True when every spec of both directions is clean (or there are none)."""
        return all(s.is_clean for s in (*self.uplink, *self.downlink))

    def describe(self) -> str:
        """One line for reports, e.g. ``"uplink: loss 2%, latency 80 ms; downlink: clean; seed 3"``.

        Each direction's non-clean specs in :data:`APPLICATION_ORDER`.
        """
        return (
            f"uplink: {_describe_direction(self.uplink)}; "
            f"downlink: {_describe_direction(self.downlink)}; seed {self.seed}"
        )

    def shapers(self, start: float) -> tuple[LinkShaper, LinkShaper]:
        """The two shapers the relay uses, with seeds derived as in the class docstring.

        Args:
            start: The relay's start time in monotonic seconds (:class:`Outage` windows count
                from it).

        Returns:
            ``(uplink_shaper, downlink_shaper)``.
        """
        return (
            LinkShaper(self.uplink, seed=derive_seed(self.seed, "uplink"), start=start),
            LinkShaper(self.downlink, seed=derive_seed(self.seed, "downlink"), start=start),
        )

    def to_dict(self) -> dict[str, Any]:
        """The path as JSON-able data; :meth:`from_dict` reverses it.

        Returns:
            ``{"format_version": 1, "seed": ..., "uplink": [<spec dict>, ...], "downlink": [...]}``.
        """
        return {
            "format_version": NETWORK_PATH_FORMAT_VERSION,
            "seed": self.seed,
            "uplink": [s.to_dict() for s in self.uplink],
            "downlink": [s.to_dict() for s in self.downlink],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkPath:
        """Rebuild a path from :meth:`to_dict` output.

        Args:
            data: ``{"format_version": 1, "seed": ..., "uplink": [...], "downlink": [...]}``
                (any key may be absent).

        Returns:
            The path, validated.

        Raises:
            ValueError: If the version or a field is unknown or a spec is invalid.
        """
        version = data.get("format_version", NETWORK_PATH_FORMAT_VERSION)
        if version != NETWORK_PATH_FORMAT_VERSION:
            raise ValueError(
                f"format_version={version!r} is not supported; this pytest-livekit reads "
                f"version {NETWORK_PATH_FORMAT_VERSION}"
            )
        unknown = sorted(set(data) - {"format_version", "seed", "uplink", "downlink"})
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; valid fields: downlink, format_version, seed, uplink"
            )
        return cls(
            uplink=tuple(network_spec_from_dict(s) for s in data.get("uplink", ())),
            downlink=tuple(network_spec_from_dict(s) for s in data.get("downlink", ())),
            seed=data.get("seed", 0),
        )


# -- the shaper ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkStats:
    """What a :class:`LinkShaper` did so far.

    Delay percentiles are over a reservoir sample of at most :data:`STATS_SAMPLE_CAP` packets
    (exact below that), linearly interpolated; maxima are exact.

    Attributes:
        packets_in: Packets offered to :meth:`LinkShaper.schedule`.
        forwarded: Copies scheduled for sending, duplicates included.
        dropped_loss: Packets dropped by :class:`PacketLoss` or :class:`BurstLoss`.
        dropped_queue: Packets tail-dropped by the :class:`Bandwidth` queue.
        dropped_outage: Packets dropped by an :class:`Outage` or :meth:`LinkShaper.start_outage`.
        duplicated: Packets sent twice (each adds one to ``forwarded`` beyond the original).
        reordered: Packets scheduled to leave before a packet that arrived earlier.
        queue_delay_p50_ms: Median wait in the bandwidth queue, in ms (0 without
            :class:`Bandwidth`).
        queue_delay_p95_ms: 95th percentile of that wait, in ms.
        queue_delay_max_ms: Longest wait in the bandwidth queue, in ms.
        added_delay_p50_ms: Median of (scheduled time - arrival time) over forwarded packets
            (first copies), in ms.
        added_delay_p95_ms: 95th percentile of that delay, in ms.
        added_delay_max_ms: Largest added delay, in ms.
        bytes_in: Bytes offered.
        bytes_forwarded: Bytes scheduled for sending, duplicates included.
    """

    packets_in: int = 0
    forwarded: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_outage: int = 0
    duplicated: int = 0
    reordered: int = 0
    queue_delay_p50_ms: float = 0.0
    queue_delay_p95_ms: float = 0.0
    queue_delay_max_ms: float = 0.0
    added_delay_p50_ms: float = 0.0
    added_delay_p95_ms: float = 0.0
    added_delay_max_ms: float = 0.0
    bytes_in: int = 0
    bytes_forwarded: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The stats as JSON-able data (field name -> value)."""
        return dataclasses.asdict(self)


class _Reservoir:
    """A uniform sample of at most ``cap`` values (Vitter's algorithm R) and the exact maximum."""

    __slots__ = ("cap", "count", "max", "rng", "samples")

    def __init__(self, cap: int, rng: random.Random) -> None:
        self.cap = cap
        self.rng = rng
        self.samples: list[float] = []
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        if value > self.max:
            self.max = value
        if len(self.samples) < self.cap:
            self.samples.append(value)
        else:
            j = self.rng.randrange(self.count)
            if j < self.cap:
                self.samples[j] = value

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the sample, linearly interpolated; 0 when empty."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        pos = (len(ordered) - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _boundary(position: float) -> int:
    """The first packet index at or after a real ``position`` (in packets), ignoring float noise:
    ``ceil`` of the position rounded to 1e-9, so that ``9 / 0.03`` is 300, not 301.
    """
    return math.ceil(round(position, 9))


class _SpreadLoss:
    """One flow's :class:`PacketLoss`: exactly one loss, uniformly placed, per stretch of
    ``1 / rate`` packets (see the class docstring).
    """

    __slots__ = ("end", "index", "lost_at", "rate", "rng", "stretch")

    def __init__(self, rate: float, rng: random.Random) -> None:
        self.rate = rate
        self.rng = rng
        self.index = 0  # the next packet's index in its flow
        self.stretch = -1
        self.end = 0  # first packet of the next stretch
        self.lost_at = -1

    def lost(self) -> bool:
        i = self.index
        self.index += 1
        if i >= self.end:
            self.stretch += 1
            begin = _boundary(self.stretch / self.rate)
            self.end = max(begin + 1, _boundary((self.stretch + 1) / self.rate))
            self.lost_at = begin + self.rng.randrange(self.end - begin)
        return i == self.lost_at


class _BurstPlan:
    """One flow's :class:`BurstLoss`: geometric bursts, each in a stretch of ``B / rate``
    packets, placed at random in the middle half of the room the stretch leaves (see the class
    docstring).
    """

    __slots__ = ("burst_from", "burst_to", "end", "index", "log_stay", "position", "rate", "rng")

    def __init__(self, spec: BurstLoss, rng: random.Random) -> None:
        self.rate = spec.rate
        self.rng = rng
        # geometric burst lengths by inversion: B = 1 + floor(log(U) / log(1 - 1/L))
        self.log_stay = math.log(1.0 - 1.0 / spec.mean_burst) if spec.mean_burst > 1 else None
        self.index = 0
        self.position = 0.0  # real start of the next stretch, in packets
        self.end = 0
        self.burst_from = self.burst_to = 0

    def _burst_length(self) -> int:
        if self.log_stay is None:
            return 1
        u = 1.0 - self.rng.random()  # in (0, 1]
        return 1 + int(math.log(u) / self.log_stay)

    def lost(self) -> bool:
        i = self.index
        self.index += 1
        if i >= self.end:
            length = self._burst_length()
            begin = self.end
            self.position += length / self.rate
            self.end = max(begin + length, _boundary(self.position))
            room = self.end - begin - length  # packets of the stretch outside the burst
            lo, hi = room // 4, room - room // 4  # the middle half of the room (rounded out)
            if lo == 0 and room and begin and begin == self.burst_to:
                lo = 1  # not right after the last burst: the two would make one longer burst
            start = begin + self.rng.randint(lo, max(lo, hi))
            self.burst_from, self.burst_to = start, start + length
        return self.burst_from <= i < self.burst_to


def _check_time(name: str, value: object) -> float:
    """Check a monotonic time in seconds: a finite number (not a bool).

    Raises:
        ValueError: If it is not one.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite time in monotonic seconds")
    return float(value)


class LinkShaper:
    """Decides when to forward each packet of one direction: stateful and deterministic.

    Applies its specs in :data:`APPLICATION_ORDER`; clean specs are ignored. Randomness: each
    spec kind has its own :class:`random.Random` seeded with ``derive_seed(seed, kind)``.
    Jitter and duplication draw once per arriving packet (dropped or not); the loss specs keep
    one process per flow (see :meth:`schedule`), stepped by every packet of that flow (dropped
    or not) and seeded by the flow's order of appearance. So the decision for packet *n* (of a
    flow, for loss) depends only on the seed, its kind and *n*: adding, removing or changing a
    spec of another kind never changes a spec's draws. The same specs, seed, start and
    sequence of calls give the same schedule.

    Cost: O(1) per packet (amortised, for the queue's bookkeeping); memory is bounded (the
    delay statistics keep at most ``max_samples`` samples each; the loss keeps a few numbers
    per flow, and a call has a handful of flows).

    The relay must send copies scheduled for the same time in the order it was given them
    (a stable sort by time), or it reorders packets the shaper kept in order.

    Args:
        conditions: The direction's specs, each kind at most once.
        seed: Non-negative seed (:meth:`NetworkPath.shapers` derives one per direction).
        start: Start time in monotonic seconds; :class:`Outage` windows count from it.
        max_samples: Cap on the delay samples kept per statistic (reservoir sampling beyond
            it), at least 1.

    Raises:
        ValueError: If a spec is invalid or repeated, or an argument is out of range.
    """

    def __init__(
        self,
        conditions: Sequence[NetworkSpec],
        *,
        seed: int,
        start: float,
        max_samples: int = STATS_SAMPLE_CAP,
    ) -> None:
        specs = check_direction("conditions", conditions)
        self.conditions: tuple[NetworkSpec, ...] = specs
        """The specs, as given."""
        self.seed: int = check_int("seed", seed, 0, _MAX_SEED)
        """The seed."""
        self.start: float = _check_time("start", start)
        """Start time, monotonic seconds."""
        check_int("max_samples", max_samples, 1, 100_000_000)
        active = {s.kind: s for s in specs if not s.is_clean}

        def rng(kind: str) -> random.Random:
            return random.Random(derive_seed(seed, kind))

        # outage
        outage = active.get("outage")
        self._outage_from = math.inf
        self._outage_until = -math.inf
        if isinstance(outage, Outage):
            self._outage_from = self.start + outage.at_s
            self._outage_until = self._outage_from + outage.duration_s
        self._live_from = math.inf
        self._live_until = -math.inf
        # loss
        loss = active.get("packet_loss")
        self._loss: PacketLoss | None = loss if isinstance(loss, PacketLoss) else None
        burst = active.get("burst_loss")
        self._burst: BurstLoss | None = burst if isinstance(burst, BurstLoss) else None
        # per flow (see schedule): (_SpreadLoss | None, _BurstPlan | None), in order of appearance
        self._loss_flows: dict[Hashable, tuple[_SpreadLoss | None, _BurstPlan | None]] = {}
        # bandwidth
        bandwidth = active.get("bandwidth")
        self._bytes_per_s = 0.0
        self._queue_limit_s = math.inf
        self._queue_packets: int | None = None
        if isinstance(bandwidth, Bandwidth) and bandwidth.kbps is not None:
            self._bytes_per_s = bandwidth.kbps * 1000.0 / 8.0
            self._queue_packets = bandwidth.queue_packets
            if bandwidth.queue_packets is None:
                self._queue_limit_s = ms_to_seconds(bandwidth.queue_ms)
        self._busy_until = -math.inf  # when the link finishes sending what it has accepted
        self._waiting: deque[float] = deque()  # send-start times of queued packets (queue_packets)
        # latency and jitter
        latency = active.get("latency")
        self._latency_s = ms_to_seconds(latency.ms) if isinstance(latency, Latency) else 0.0
        jitter = active.get("packet_jitter")
        self._jitter_s = ms_to_seconds(jitter.ms) if isinstance(jitter, PacketJitter) else 0.0
        self._reorder = isinstance(jitter, PacketJitter) and jitter.reorder
        self._jitter_rng = rng("packet_jitter")
        self._last_delayed = -math.inf
        # duplicate
        duplicate = active.get("duplicate")
        self._dup_rate = duplicate.rate if isinstance(duplicate, Duplicate) else 0.0
        self._dup_rng = rng("duplicate")
        # stats
        self._clean = not active
        self._latest_out = -math.inf
        self._packets_in = 0
        self._forwarded = 0
        self._dropped_loss = 0
        self._dropped_queue = 0
        self._dropped_outage = 0
        self._duplicated = 0
        self._reordered = 0
        self._bytes_in = 0
        self._bytes_forwarded = 0
        self._queue_delays = _Reservoir(max_samples, rng("stats/queue"))
        self._added_delays = _Reservoir(max_samples, rng("stats/added"))

    @property
    def is_clean(self) -> bool:
        """True when every spec is clean: each packet is forwarded once, on arrival (unless
        :meth:`start_outage` is called).
        """
        return self._clean

    def _flow_loss(self, flow: Hashable) -> tuple[_SpreadLoss | None, _BurstPlan | None]:
        """The loss processes of ``flow``, made on its first packet: the *k*-th flow seen
        (from 0) draws from ``derive_seed(seed, kind)`` for ``k = 0``, else
        ``derive_seed(seed, kind, "flow", str(k))``.
        """
        state = self._loss_flows.get(flow)
        if state is None:
            k = len(self._loss_flows)

            def rng(kind: str) -> random.Random:
                labels = (kind,) if k == 0 else (kind, "flow", str(k))
                return random.Random(derive_seed(self.seed, *labels))

            state = (
                _SpreadLoss(self._loss.rate, rng("packet_loss")) if self._loss is not None else None,
                _BurstPlan(self._burst, rng("burst_loss")) if self._burst is not None else None,
            )
            self._loss_flows[flow] = state
        return state

    def schedule(self, now: float, size: int, flow: Hashable = None) -> list[float]:
        """Decide the fate of one packet.

        Loss (:class:`PacketLoss`, :class:`BurstLoss`) is realised per *flow*: each distinct
        ``flow`` key has its own loss processes, stepped by its own packets, so each flow loses
        the spec's rate of its packets (the relay passes the SSRC of an RTP packet, so every
        RTP stream's receiver measures the rate, and ``None`` for everything else: RTCP, STUN,
        DTLS, TURN). Delay, jitter, duplication, queue and outage act on the link as a whole.

        Args:
            now: Arrival time in monotonic seconds; must not decrease from call to call.
            size: Packet size in bytes (the UDP payload), at least 0.
            flow: Any hashable key naming the packet's stream; ``None`` (the default) is one
                flow like any other.

        Returns:
            The absolute times (monotonic seconds, each ``>= now``) at which to forward it:
            ``[]`` when it is dropped, one entry normally, two (equal) entries when duplicated.

        Raises:
            ValueError: If ``size`` is negative.
        """
        if size < 0:
            raise ValueError(f"size={size!r} must be a packet size in bytes, at least 0")
        self._packets_in += 1
        self._bytes_in += size
        # One draw per random spec and packet, whatever happens to the packet (see class doc).
        lost = False
        if self._loss is not None or self._burst is not None:
            spread, plan = self._flow_loss(flow)
            if spread is not None:
                lost = spread.lost()
            if plan is not None:
                lost = plan.lost() or lost
        delay = self._latency_s
        if self._jitter_s:
            delay += self._jitter_rng.random() * self._jitter_s
        copies = 1
        if self._dup_rate and self._dup_rng.random() < self._dup_rate:
            copies = 2

        # outage -> loss -> bandwidth -> latency + jitter -> duplicate
        if self._outage_from <= now < self._outage_until or self._live_from <= now < self._live_until:
            self._dropped_outage += 1
            return []
        if lost:
            self._dropped_loss += 1
            return []
        t = now
        if self._bytes_per_s:
            wait = self._busy_until - now
            if wait < 0.0:
                wait = 0.0
            if self._queue_packets is None:
                if wait > self._queue_limit_s + _EPS_S:
                    self._dropped_queue += 1
                    return []
            else:
                waiting = self._waiting
                while waiting and waiting[0] <= now:
                    waiting.popleft()
                if len(waiting) >= self._queue_packets:
                    self._dropped_queue += 1
                    return []
                waiting.append(now + wait)
            t = now + wait + size / self._bytes_per_s
            self._busy_until = t
            self._queue_delays.add(wait)
        t += delay
        if self._jitter_s and not self._reorder:
            if t < self._last_delayed:
                t = self._last_delayed
            self._last_delayed = t
        if t < self._latest_out:
            self._reordered += 1
        else:
            self._latest_out = t
        self._added_delays.add(t - now)
        self._forwarded += copies
        self._bytes_forwarded += size * copies
        if copies == 2:
            self._duplicated += 1
            return [t, t]
        return [t]

    def start_outage(self, now: float, duration_s: float) -> None:
        """Drop every packet arriving from ``now`` for ``duration_s`` seconds (triggered live).

        A call while a live outage is still running extends it to the later end.

        Args:
            now: Start of the outage in monotonic seconds.
            duration_s: Length of the outage in seconds, 0 to 3600.

        Raises:
            ValueError: If an argument is out of range.
        """
        now = _check_time("now", now)
        check_number("duration_s", duration_s, 0.0, 3600.0)
        if self._live_from <= now < self._live_until:
            self._live_until = max(self._live_until, now + duration_s)
        else:
            self._live_from = now
            self._live_until = now + duration_s

    def stats(self) -> LinkStats:
        """A snapshot of what the shaper did so far (see :class:`LinkStats`).

        Returns:
            The counts and delay percentiles; cost grows with the samples kept (a sort).
        """
        queue, added = self._queue_delays, self._added_delays
        return LinkStats(
            packets_in=self._packets_in,
            forwarded=self._forwarded,
            dropped_loss=self._dropped_loss,
            dropped_queue=self._dropped_queue,
            dropped_outage=self._dropped_outage,
            duplicated=self._duplicated,
            reordered=self._reordered,
            queue_delay_p50_ms=seconds_to_ms(queue.percentile(50)),
            queue_delay_p95_ms=seconds_to_ms(queue.percentile(95)),
            queue_delay_max_ms=seconds_to_ms(queue.max),
            added_delay_p50_ms=seconds_to_ms(added.percentile(50)),
            added_delay_p95_ms=seconds_to_ms(added.percentile(95)),
            added_delay_max_ms=seconds_to_ms(added.max),
            bytes_in=self._bytes_in,
            bytes_forwarded=self._bytes_forwarded,
        )
