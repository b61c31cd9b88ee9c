"""Caller call conditions: seeded, replayable impairments of what the caller sends.

A *condition* is a frozen dataclass (a "spec") that says how a call is degraded: background
noise, a quiet or clipping caller, a telephone line, a low Opus bitrate, lost or late frames, or a
caller behaviour (barge-in, back-channel, pause, silence, reconnect). Specs hold numbers only;
the audio is transformed here and nowhere else.

Every spec has:

* ``kind``: a short class-level name (``"noise"``, ``"loss"``, ...) used in JSON and cohorts.
* ``is_clean``: True when the spec changes nothing. Each class documents its *severity*, the
  parameter that grows as the condition gets worse; severity 0 is clean, and a clean spec's
  :meth:`~BaseCondition.apply` returns a copy equal to its input.
* ``apply(pcm, rng)``: a pure function of the caller's PCM (mono int16 at
  :data:`~pytest_livekit.audio.CALL_SAMPLE_RATE`) and a ``numpy.random.Generator``; the output
  has the input's length. Specs that act on the network or on the caller's script instead of on
  the samples (:class:`Bitrate`, :class:`Jitter`, the behaviour specs) return the input unchanged
  and are interpreted by the caller.
* ``to_dict()``: plain JSON-able data; :func:`spec_from_dict` turns it back into the spec.

:class:`Conditions` bundles specs with a seed. The same bundle and seed give bit-identical audio
on the same machine and library build, so a failing call can be replayed from its saved JSON.

Only numpy is imported at module import; PyAV, the offline TTS and soundfile are imported inside
the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from pytest_livekit.audio import CALL_SAMPLE_RATE, Pcm
from pytest_livekit.errors import AudioInputError
from pytest_livekit.validation import check_bool, check_choice, check_int, check_number, format_number

__all__ = [
    "ACTIVE_FRAME_SECONDS",
    "ACTIVE_THRESHOLD_DBFS",
    "NOISE_COLORS",
    "SIGNAL_ORDER",
    "Backchannel",
    "BargeIn",
    "BaseCondition",
    "Bitrate",
    "CodecRoundTrip",
    "Condition",
    "Conditions",
    "FrameLoss",
    "Jitter",
    "Level",
    "Noise",
    "Pause",
    "Reconnect",
    "Silence",
    "Telephony",
    "active_speech_power",
    "measure_snr_db",
    "measured_loss",
    "mulaw_decode",
    "mulaw_encode",
    "spec_from_dict",
    "split_text_for_pause",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

NoiseColor: TypeAlias = Literal["white", "pink", "brown", "babble", "hum", "file"]
"""Noise sources :class:`Noise` knows (``"file"`` is set automatically when ``file`` is given)."""

NOISE_COLORS: tuple[str, ...] = ("white", "pink", "brown", "babble", "hum", "file")
"""Valid values of :attr:`Noise.color`."""

ACTIVE_FRAME_SECONDS = 0.010
"""Length of the frames, in seconds, over which speech activity is decided for SNR."""

ACTIVE_THRESHOLD_DBFS = -50.0
"""A frame is *active* speech when its RMS level is above this, in dBFS (full scale = 32768)."""

NOMINAL_SPEECH_DBFS = -26.0
"""Speech level, in dBFS, assumed when the input has no active frame (ITU-T P.56's nominal
active speech level), so a silent caller in a noisy room still sends the room's noise."""

SIGNAL_ORDER: tuple[str, ...] = ("level", "noise", "telephony", "codec", "loss")
"""Order in which :meth:`Conditions.apply` applies the signal-level kinds: the caller's own
level first (a quiet talker in a noisy room is quiet, the room is not), then the room's noise,
then the line or codec, and frame loss last because it happens on the network."""

_FRAME_MS_CHOICES = (10, 20, 40, 60)  # Opus/WebRTC packet durations that are whole milliseconds
_FULL_SCALE = 32768.0  # the scale rms_dbfs uses, so levels here match audio.rms_dbfs
_OPUS_MIN_BPS = 6_000  # libopus' accepted bitrate range
_OPUS_MAX_BPS = 510_000
_OPUS_FRAME = 960  # 20 ms at 48 kHz
_OPUS_DEFAULT_PRESKIP = 312  # libopus' lookahead at 48 kHz, used if the header lacks it
_LOSS_MAX_DRAWS = 1_000


# -- shared validation (the checks themselves live in validation.py) ----------------------
def _check_pcm(pcm: object) -> Pcm:
    """Check that ``pcm`` is caller PCM: a 1-D int16 numpy array.

    Args:
        pcm: The samples.

    Returns:
        The same array, typed.

    Raises:
        ValueError: If it is not 1-D int16.
    """
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
        shape = getattr(pcm, "shape", None)
        dtype = getattr(pcm, "dtype", type(pcm).__name__)
        raise ValueError(
            f"pcm must be a 1-D int16 numpy array (mono, {CALL_SAMPLE_RATE} Hz); "
            f"got dtype={dtype!s}, shape={shape!r}"
        )
    return pcm


def _to_float(pcm: Pcm) -> FloatArray:
    """Int16 samples as float relative to full scale (32768)."""
    return pcm.astype(np.float64) / _FULL_SCALE


def _to_pcm(x: FloatArray) -> Pcm:
    """Float samples (full scale 1.0 = 32768) rounded and saturated to int16.

    The same scale as :func:`_to_float`, so a round trip through float is exact.
    """
    return np.clip(np.round(x * _FULL_SCALE), -32768, 32767).astype(np.int16)


# -- levels and SNR --------------------------------------------------------------------------
def active_speech_power(pcm: npt.NDArray[np.int16]) -> float | None:
    """Mean power of the active frames of ``pcm``: the speech power that SNR is measured against.

    The clip is cut into consecutive 10 ms frames (:data:`ACTIVE_FRAME_SECONDS`; the last may be
    shorter). A frame is active when its RMS level is above :data:`ACTIVE_THRESHOLD_DBFS`
    (-50 dBFS, full scale = 32768, as :func:`~pytest_livekit.audio.rms_dbfs`). Measuring over
    active frames only makes the SNR independent of how much silence surrounds the speech.

    Args:
        pcm: Mono int16 samples at 48 kHz.

    Returns:
        Mean of the squared samples (full scale = 1.0) over the active frames, or ``None`` when
        no frame is active.
    """
    x = _to_float(np.asarray(pcm, dtype=np.int16))
    if len(x) == 0:
        return None
    frame = round(ACTIVE_FRAME_SECONDS * CALL_SAMPLE_RATE)
    starts = np.arange(0, len(x), frame)
    sums = np.add.reduceat(x * x, starts)
    counts = np.diff(np.append(starts, len(x)))
    level_db = 10.0 * np.log10(np.maximum(sums / counts, 1e-30))
    active = level_db > ACTIVE_THRESHOLD_DBFS
    if not bool(active.any()):
        return None
    return float(sums[active].sum() / counts[active].sum())


def measure_snr_db(clean: npt.NDArray[np.int16], mixed: npt.NDArray[np.int16]) -> float:
    """Signal-to-noise ratio of ``mixed``, with ``mixed - clean`` as the noise, in dB.

    Speech power is :func:`active_speech_power` of ``clean`` (active 10 ms frames only); noise
    power is the mean over the *whole* clip. This is the definition :class:`Noise` targets.

    Args:
        clean: The speech alone, mono int16.
        mixed: The same speech with noise, same length.

    Returns:
        The SNR in dB (``inf`` when the two are equal).

    Raises:
        ValueError: If the lengths differ or ``clean`` has no active frame.
    """
    if len(clean) != len(mixed):
        raise ValueError(f"clean and mixed differ in length: {len(clean)} != {len(mixed)} samples")
    speech = active_speech_power(clean)
    if speech is None:
        raise ValueError(
            f"clean has no active frame (every 10 ms frame is at or below "
            f"{ACTIVE_THRESHOLD_DBFS:g} dBFS), so its SNR is undefined"
        )
    noise = (mixed.astype(np.float64) - clean.astype(np.float64)) / _FULL_SCALE
    noise_power = float(np.mean(noise * noise))
    if noise_power == 0.0:
        return math.inf
    return 10.0 * math.log10(speech / noise_power)


def _unit_rms(x: FloatArray) -> FloatArray:
    """``x`` scaled to RMS 1 (zeros stay zeros)."""
    power = float(np.mean(x * x)) if len(x) else 0.0
    return x / math.sqrt(power) if power > 0.0 else x


def _loop(source: FloatArray, n: int, start: int) -> FloatArray:
    """``n`` samples of ``source`` repeated end to end, beginning at index ``start``."""
    return source[(start + np.arange(n)) % len(source)]


def fast_fft_length(n: int) -> int:
    """The smallest length >= ``n`` whose only prime factors are 2, 3 and 5, where numpy's FFT is
    fast (what ``scipy.fft.next_fast_len(n, real=True)`` gives, without importing scipy).
    """
    best = 1 << max(n - 1, 0).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            length = three
            while length < n:
                length *= 2
            best = min(best, length)
            three *= 3
        five *= 5
    return best


def _shaped_noise(n: int, rng: np.random.Generator, exponent: float) -> FloatArray:
    """White noise shaped in the frequency domain to a power spectrum of ``1 / f**exponent``.

    Below 20 Hz the spectrum is held flat: a true 1/f (or 1/f**2) spectrum puts most of its power
    below hearing in a long clip, so an SNR target would leave the audible noise far too quiet.
    """
    # Shape a slightly longer block whose length has only small prime factors, then cut it:
    # an FFT of a length with a large prime factor is many times slower.
    size = fast_fft_length(n)
    white = rng.standard_normal(size)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(size, d=1.0 / CALL_SAMPLE_RATE)
    gain = np.maximum(freqs, 20.0) ** (-exponent / 2.0)
    gain[0] = 0.0  # no DC offset
    shaped: FloatArray = np.fft.irfft(spectrum * gain, size)[:n]
    return shaped


# Six talkers (voices, pitches, sentences all different) from espeak-ng variants whose voice
# files set both "flutter 0" and "roughness 0", on non-Scottish English bases. espeak-ng keeps
# hidden state across calls (the flutter table index, and more for rough voices and en-gb-scotland),
# so other voices vary slightly with what the process synthesised before; these were checked to
# give identical samples whatever came before, which keeps babble bit-identical across processes
# (a replay from JSON in another run gives the same audio).
_BABBLE_TALKERS: tuple[tuple[str, int | None, str], ...] = (
    ("en-us+Storm", None, "I told him the parcel would arrive on Tuesday, but it still has not come."),
    ("en+shelby", None, "Could you pass me the menu? I think we should order something warm tonight."),
    (
        "en-us+michel",
        75,
        "The meeting was moved to the afternoon because half the team was stuck in traffic.",
    ),
    (
        "en-gb-x-rp+Denis",
        None,
        "We walked along the river for an hour and then had coffee near the old bridge.",
    ),
    ("en+Hugo", 35, "She said the tickets were sold out, so we are going next weekend instead."),
    ("en-us+miguel", None, "My brother fixed the kitchen tap last night, and now the whole floor is wet."),
)


@functools.lru_cache(maxsize=1)
def _babble_talkers() -> tuple[FloatArray, ...]:
    """The babble talkers at 48 kHz, each at unit active power; synthesised once per process.

    Returns:
        One read-only float array per talker.
    """
    from pytest_livekit.audio import resample, to_mono_float
    from pytest_livekit.offline.tts import synthesize_speech

    talkers = []
    for voice, pitch, text in _BABBLE_TALKERS:
        pcm, rate = synthesize_speech(text, voice=voice, pitch=pitch)
        x = resample(to_mono_float(pcm), rate, CALL_SAMPLE_RATE)
        power = active_speech_power(_to_pcm(x))
        x = x / math.sqrt(power) if power else x
        x.setflags(write=False)  # shared by every caller through the cache
        talkers.append(x)
    return tuple(talkers)


# -- specs -----------------------------------------------------------------------------------
class BaseCondition:
    """Behaviour shared by every condition spec (each subclass is a frozen dataclass).

    Attributes:
        kind: Short name of the spec class, used in JSON, cohorts and :meth:`describe`.
        signal: True when :meth:`apply` transforms samples (the others act on the network or
            the caller's script and return the input unchanged).
    """

    kind: ClassVar[str] = ""
    signal: ClassVar[bool] = False

    @property
    def is_clean(self) -> bool:
        """True when this spec changes nothing (severity 0)."""
        return False

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Return the caller's audio with this condition applied.

        This base version returns a copy: the spec acts elsewhere (see the class docstring).

        Args:
            pcm: Mono int16 samples at 48 kHz.
            rng: Random source; the only randomness used.

        Returns:
            A new int16 array of the same length.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
        """
        return _check_pcm(pcm).copy()

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data, with its ``kind``; :func:`spec_from_dict` reverses it.

        Returns:
            ``{"kind": ..., <field>: <value>, ...}``.
        """
        data: dict[str, Any] = {"kind": self.kind}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            data[field.name] = getattr(self, field.name)
        return data

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"noise pink 12 dB"``."""
        return self.kind


@dataclass(frozen=True)
class Noise(BaseCondition):
    """Background noise mixed into the caller's speech at a target signal-to-noise ratio.

    SNR definition: the speech power is measured over the *active* 10 ms frames of the input
    (frames above -50 dBFS, see :func:`active_speech_power`), the noise power over the whole
    clip. After mixing (and rounding to int16), :func:`measure_snr_db` of the output is within
    0.5 dB of ``snr_db``: the gain is refined up to four times against that measurement, so
    rounding and moderate clipping are accounted for. Very high SNRs on quiet speech are limited
    by int16 resolution (a noise floor near -101 dBFS), and a clip with no active frame is
    mixed against a nominal speech level of -26 dBFS.

    Severity: lower ``snr_db`` is worse; ``snr_db=None`` is clean. Strategies draw
    ``severity = max_snr_db - snr_db``.

    Sources (``color``):

    * ``"white"``: Gaussian white noise.
    * ``"pink"`` / ``"brown"``: white noise shaped in the frequency domain to a 1/f or 1/f**2
      power spectrum (flat below 20 Hz).
    * ``"babble"``: six espeak-ng talkers (different voices, pitches and sentences), each
      looped from a random offset, summed; synthesised once per process.
    * ``"hum"``: mains hum at ``hum_hz`` with its 2nd and 3rd harmonics at -6 and -12 dB,
      random phases.
    * ``"file"``: the audio file ``file`` (any format :func:`~pytest_livekit.audio.load_wav`
      reads), looped from a random offset. Giving ``file`` sets ``color`` to ``"file"``.

    Attributes:
        snr_db: Target SNR in dB, from -20 to 80, or ``None`` for no noise.
        color: Noise source, one of :data:`NOISE_COLORS`.
        file: Path of a noise recording (relative paths resolve against the working directory
            when the noise is applied), or ``None``.
        hum_hz: Mains frequency in Hz for ``"hum"``, from 20 to 1000 (50 or 60 in practice).
    """

    kind: ClassVar[str] = "noise"
    signal: ClassVar[bool] = True

    snr_db: float | None
    color: NoiseColor | str = "white"
    file: str | None = None
    hum_hz: float = 50.0

    def __post_init__(self) -> None:
        if self.snr_db is not None:
            check_number("snr_db", self.snr_db, -20.0, 80.0)
        if self.file is not None:
            if not isinstance(self.file, str) or not self.file:
                raise ValueError(f"file={self.file!r} must be a non-empty path string or None")
            if self.color not in ("white", "file"):
                raise ValueError(
                    f"color={self.color!r} conflicts with file={self.file!r}: a file is its own "
                    "noise source; leave color at its default (or 'file')"
                )
            # Normalise so the spec says what it does and JSON round-trips unchanged.
            object.__setattr__(self, "color", "file")
        check_choice("color", self.color, NOISE_COLORS)
        if self.color == "file" and self.file is None:
            raise ValueError("color='file' needs file=<path of a noise recording>; got file=None")
        check_number("hum_hz", self.hum_hz, 20.0, 1000.0)

    @property
    def is_clean(self) -> bool:
        """True when ``snr_db`` is None."""
        return self.snr_db is None

    def describe(self) -> str:
        """E.g. ``"noise pink 12 dB"``, ``"noise hum 60 Hz 20 dB"``, ``"noise file rain.wav 5 dB"``."""
        if self.snr_db is None:
            return "noise none"
        source = str(self.color)
        if self.color == "hum":
            source = f"hum {format_number(self.hum_hz)} Hz"
        elif self.color == "file":
            source = f"file {self.file}"
        return f"noise {source} {format_number(self.snr_db)} dB"

    def noise(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n`` samples of this spec's noise source at 48 kHz, scaled to RMS 1.0 (full scale).

        Args:
            n: Number of samples.
            rng: Random source.

        Returns:
            Float samples with mean power 1 (unless the source is silent or ``n`` is tiny).

        Raises:
            AudioInputError: If the noise file is missing, unreadable, empty or silent.
        """
        if n == 0:
            return np.zeros(0)
        if self.color == "white":
            raw = rng.standard_normal(n)
        elif self.color == "pink":
            raw = _shaped_noise(n, rng, 1.0)
        elif self.color == "brown":
            raw = _shaped_noise(n, rng, 2.0)
        elif self.color == "hum":
            t = np.arange(n) / CALL_SAMPLE_RATE
            phases = rng.uniform(0.0, 2.0 * math.pi, 3)
            raw = np.zeros(n)
            for harmonic, amplitude, phase in zip((1, 2, 3), (1.0, 0.5, 0.25), phases, strict=True):
                raw += amplitude * np.sin(2.0 * math.pi * harmonic * self.hum_hz * t + phase)
        elif self.color == "babble":
            raw = np.zeros(n)
            for talker in _babble_talkers():
                raw += _loop(talker, n, int(rng.integers(len(talker))))
        else:  # "file"
            raw = self._file_noise(n, rng)
        return _unit_rms(raw)

    def _file_noise(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n`` samples of the noise file, looped from a random offset.

        Raises:
            AudioInputError: If the file is missing, unreadable, empty or silent.
        """
        from pytest_livekit.audio import load_wav

        assert self.file is not None
        source = _to_float(load_wav(self.file).pcm)
        if not bool(np.any(source)):
            raise AudioInputError(
                f"noise file {self.file!r} is digital silence, so it cannot be mixed at an SNR.\n"
                "Hint: give a recording of the noise (rain, street, office), or use a color."
            )
        return _loop(source, n, int(rng.integers(len(source))))

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Mix the noise into ``pcm`` at :attr:`snr_db` (see the class docstring for the SNR).

        Args:
            pcm: Mono int16 speech at 48 kHz.
            rng: Random source for the noise.

        Returns:
            The noisy speech, same length; a copy of ``pcm`` when clean.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
            AudioInputError: If the noise file is missing, unreadable, empty or silent.
        """
        pcm = _check_pcm(pcm)
        if self.snr_db is None or len(pcm) == 0:
            return pcm.copy()
        noise = self.noise(len(pcm), rng)
        if not bool(np.any(noise)):
            return pcm.copy()  # a clip too short to carry this noise (e.g. one sample of pink)
        measured_speech = active_speech_power(pcm)
        speech = measured_speech if measured_speech is not None else 10 ** (NOMINAL_SPEECH_DBFS / 10)
        clean = _to_float(pcm)
        gain = math.sqrt(speech / 10 ** (self.snr_db / 10))
        mixed = _to_pcm(clean + gain * noise)
        if measured_speech is None:
            return mixed
        # Rounding to int16 and clipping change the noise actually added; correct the gain
        # against the documented measurement so the promised SNR is the one delivered.
        for _ in range(4):
            error_db = measure_snr_db(pcm, mixed) - self.snr_db
            if abs(error_db) <= 0.05 or not math.isfinite(error_db):
                break
            gain *= 10 ** (error_db / 20)
            mixed = _to_pcm(clean + gain * noise)
        return mixed


@dataclass(frozen=True)
class Level(BaseCondition):
    """The caller's level: a quiet or loud talker, and hard clipping.

    The samples are multiplied by ``10 ** (gain_db / 20)``, rounded, then limited to
    ``+-round(32767 * 10 ** (clip_dbfs / 20))`` when ``clip_dbfs`` is set, and always to the
    int16 range (so a large gain also clips at full scale, as a real A/D converter would).

    Severity: ``|gain_db|`` and how far below 0 dBFS the clipping sits; ``gain_db=0`` with
    ``clip_dbfs=None`` is clean.

    Attributes:
        gain_db: Gain in dB, from -60 (very quiet) to +40 (very loud).
        clip_dbfs: Clipping level in dBFS (peak amplitude relative to full scale), from -40
            to 0, e.g. -6 limits ``|x|`` to half of full scale; ``None`` for no extra clipping.
    """

    kind: ClassVar[str] = "level"
    signal: ClassVar[bool] = True

    gain_db: float = 0.0
    clip_dbfs: float | None = None

    def __post_init__(self) -> None:
        check_number("gain_db", self.gain_db, -60.0, 40.0)
        if self.clip_dbfs is not None:
            check_number("clip_dbfs", self.clip_dbfs, -40.0, 0.0)

    @property
    def is_clean(self) -> bool:
        """True when the gain is 0 dB and there is no clipping."""
        return self.gain_db == 0 and self.clip_dbfs is None

    @property
    def clip_limit(self) -> int | None:
        """The clipping limit as an int16 magnitude, or ``None``."""
        if self.clip_dbfs is None:
            return None
        return round(32767 * 10 ** (self.clip_dbfs / 20))

    def describe(self) -> str:
        """E.g. ``"level -12 dB"`` or ``"level +6 dB clip -6 dBFS"``."""
        text = f"level {self.gain_db:+g} dB"
        if self.clip_dbfs is not None:
            text += f" clip {format_number(self.clip_dbfs)} dBFS"
        return text

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Scale and clip ``pcm`` (no randomness).

        Args:
            pcm: Mono int16 samples at 48 kHz.
            rng: Unused; accepted for a uniform signature.

        Returns:
            The scaled samples, same length; a copy of ``pcm`` when clean.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
        """
        pcm = _check_pcm(pcm)
        if self.is_clean:
            return pcm.copy()
        y = np.round(pcm.astype(np.float64) * 10 ** (self.gain_db / 20))
        limit = self.clip_limit
        if limit is not None:
            y = np.clip(y, -limit, limit)
        return np.clip(y, -32768, 32767).astype(np.int16)


# G.711 mu-law, as in the CCITT/Sun reference implementation (g711.c) that sox and most
# telephony stacks use: 16-bit input truncated to 14 bits, bias 33, segment end points below.
_MULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_MULAW_CLIP = 8159
_MULAW_BIAS = 0x84


def mulaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """Encode 16-bit linear PCM to G.711 mu-law bytes.

    Bit-exact with the CCITT/Sun reference ``linear2ulaw`` (16-bit input truncated to 14 bits,
    bias 33). FFmpeg's ``pcm_mulaw`` encoder instead rounds to the *nearest* output level, so it
    picks the neighbouring code for 512 of the 65536 inputs, at the segment boundaries.

    Args:
        pcm: int16 samples (any rate).

    Returns:
        One mu-law byte per sample.
    """
    v = np.asarray(pcm).astype(np.int32) >> 2  # arithmetic shift: floor, as the C code does
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    seg = np.searchsorted(_MULAW_SEG_END, v, side="left")
    segc = np.minimum(seg, 7)
    code = np.where(seg >= 8, 0x7F, (segc << 4) | ((v >> (segc + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def mulaw_decode(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """Decode G.711 mu-law bytes to 16-bit linear PCM (the standard expansion table).

    Args:
        codes: mu-law bytes.

    Returns:
        int16 samples, in +-32124.
    """
    u = ~np.asarray(codes).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@dataclass(frozen=True)
class Telephony(BaseCondition):
    """A narrowband telephone line: 8 kHz sampling and, optionally, G.711 mu-law.

    The audio is resampled 48 kHz -> 8 kHz -> 48 kHz with
    :func:`~pytest_livekit.audio.resample` (zero-phase, so speech stays in place), which removes
    everything above about 3.6 kHz; with ``mulaw`` the 8 kHz samples also go through a mu-law
    encode/decode round trip (:func:`mulaw_encode`, :func:`mulaw_decode`). The 300 Hz low cut
    of a real line is not modelled.

    Severity: 0 = disabled, 1 = band limit, 2 = band limit and mu-law.

    Attributes:
        enabled: Whether the line is applied at all.
        mulaw: Whether the 8 kHz samples go through G.711 mu-law.
    """

    kind: ClassVar[str] = "telephony"
    signal: ClassVar[bool] = True

    enabled: bool = True
    mulaw: bool = True

    def __post_init__(self) -> None:
        check_bool("enabled", self.enabled)
        check_bool("mulaw", self.mulaw)

    @property
    def is_clean(self) -> bool:
        """True when disabled."""
        return not self.enabled

    def describe(self) -> str:
        """E.g. ``"telephony 8 kHz mu-law"``."""
        if not self.enabled:
            return "telephony off"
        return "telephony 8 kHz mu-law" if self.mulaw else "telephony 8 kHz"

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Pass ``pcm`` through the telephone line (no randomness).

        Args:
            pcm: Mono int16 samples at 48 kHz.
            rng: Unused; accepted for a uniform signature.

        Returns:
            The narrowband audio at 48 kHz, same length; a copy of ``pcm`` when disabled.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
        """
        from pytest_livekit.audio import resample

        pcm = _check_pcm(pcm)
        if not self.enabled or len(pcm) == 0:
            return pcm.copy()
        narrow = resample(_to_float(pcm), CALL_SAMPLE_RATE, 8_000)
        if self.mulaw:
            narrow = _to_float(mulaw_decode(mulaw_encode(_to_pcm(narrow))))
        wide = resample(narrow, 8_000, CALL_SAMPLE_RATE)[: len(pcm)]
        return _to_pcm(wide)


@dataclass(frozen=True)
class CodecRoundTrip(BaseCondition):
    """An Opus encode/decode round trip at a fixed bitrate, applied to the samples offline.

    Uses PyAV's libopus (48 kHz mono, 20 ms frames, ``application=voip`` as WebRTC uses for
    speech). The decoder's output is shifted by the encoder's pre-skip (read from its OpusHead,
    312 samples with current libopus) so speech stays in place, then padded/trimmed to the
    input length. libopus is deterministic for a given build, so the output is reproducible on
    the same machine.

    This is independent of the live call's own Opus encoder, whose bitrate :class:`Bitrate`
    sets; use this one to hear a low bitrate on top of whatever the network does.

    Severity: lower ``bitrate_bps`` is worse; ``None`` is clean.

    Attributes:
        bitrate_bps: Opus target bitrate in bits per second, 6000 to 510000, or ``None``.
        codec: The codec; only ``"opus"``.
    """

    kind: ClassVar[str] = "codec"
    signal: ClassVar[bool] = True

    bitrate_bps: int | None = None
    codec: Literal["opus"] = "opus"

    def __post_init__(self) -> None:
        if self.bitrate_bps is not None:
            check_int("bitrate_bps", self.bitrate_bps, _OPUS_MIN_BPS, _OPUS_MAX_BPS)
        check_choice("codec", self.codec, ("opus",))

    @property
    def is_clean(self) -> bool:
        """True when ``bitrate_bps`` is None."""
        return self.bitrate_bps is None

    def describe(self) -> str:
        """E.g. ``"codec opus 12 kbps"``."""
        if self.bitrate_bps is None:
            return "codec none"
        return f"codec {self.codec} {format_number(self.bitrate_bps / 1000)} kbps"

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Encode and decode ``pcm`` with Opus (no randomness).

        Args:
            pcm: Mono int16 samples at 48 kHz.
            rng: Unused; accepted for a uniform signature.

        Returns:
            The decoded audio, aligned with and as long as the input; a copy when clean.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
        """
        pcm = _check_pcm(pcm)
        if self.bitrate_bps is None or len(pcm) == 0:
            return pcm.copy()
        return _opus_round_trip(pcm, self.bitrate_bps)


def _opus_round_trip(pcm: Pcm, bitrate_bps: int) -> Pcm:
    """Encode ``pcm`` with libopus at ``bitrate_bps`` and decode it, delay-compensated.

    Args:
        pcm: Mono int16 samples at 48 kHz.
        bitrate_bps: Target bitrate in bits per second.

    Returns:
        Decoded int16 samples aligned with ``pcm``, same length.
    """
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = CALL_SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = bitrate_bps
    encoder.options = {"application": "voip", "frame_duration": "20"}
    encoder.open()
    header = bytes(encoder.extradata or b"")
    # OpusHead: bytes 10-11 are the pre-skip (little-endian), the decoder delay to drop.
    preskip = int.from_bytes(header[10:12], "little") if header[:8] == b"OpusHead" else _OPUS_DEFAULT_PRESKIP
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = CALL_SAMPLE_RATE
    decoder.layout = "mono"

    # Trailing silence flushes the lookahead so the last input samples come out too.
    total = len(pcm) + preskip
    padded = np.zeros(-(-total // _OPUS_FRAME) * _OPUS_FRAME + _OPUS_FRAME, dtype=np.int16)
    padded[: len(pcm)] = pcm
    decoded: list[npt.NDArray[Any]] = []

    def _decode(packets: list[Any]) -> None:
        for packet in packets:
            for frame in decoder.decode(packet):
                decoded.append(frame.to_ndarray().reshape(-1))

    for pts in range(0, len(padded), _OPUS_FRAME):
        frame = av.AudioFrame.from_ndarray(
            padded[pts : pts + _OPUS_FRAME].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = CALL_SAMPLE_RATE
        frame.pts = pts
        _decode(list(encoder.encode(frame)))
    _decode(list(encoder.encode(None)))

    out = np.concatenate(decoded) if decoded else np.zeros(0, dtype=np.int16)
    if out.dtype != np.int16:  # a float decoder: scale to int16 the same way as elsewhere
        out = _to_pcm(out.astype(np.float64))
    aligned = np.zeros(len(pcm), dtype=np.int16)
    chunk = out[preskip : preskip + len(pcm)]
    aligned[: len(chunk)] = chunk
    return aligned


@dataclass(frozen=True)
class Bitrate(BaseCondition):
    """The maximum bitrate of the caller's published Opus track (acts on the network encoder).

    The caller sets it as ``TrackPublishOptions.audio_encoding.max_bitrate`` when it publishes
    its microphone track, so the real WebRTC encoder produces the low-bitrate audio.
    :meth:`apply` returns the samples unchanged; :class:`CodecRoundTrip` is the offline
    equivalent. :attr:`Conditions.publish_bitrate_bps` reads it from a bundle.

    Severity: lower bitrate is worse; ``None`` (the WebRTC default) is clean.

    Attributes:
        max_bitrate_bps: Maximum bitrate in bits per second, 6000 to 510000, or ``None``.
    """

    kind: ClassVar[str] = "bitrate"

    max_bitrate_bps: int | None = None

    def __post_init__(self) -> None:
        if self.max_bitrate_bps is not None:
            check_int("max_bitrate_bps", self.max_bitrate_bps, _OPUS_MIN_BPS, _OPUS_MAX_BPS)

    @property
    def is_clean(self) -> bool:
        """True when no maximum is set."""
        return self.max_bitrate_bps is None

    def describe(self) -> str:
        """E.g. ``"bitrate 16 kbps"``."""
        if self.max_bitrate_bps is None:
            return "bitrate default"
        return f"bitrate {format_number(self.max_bitrate_bps / 1000)} kbps"


def measured_loss(mask: npt.NDArray[np.bool_]) -> float:
    """Fraction of frames lost in a loss mask.

    Args:
        mask: One bool per frame, True = lost.

    Returns:
        The lost fraction, 0.0 for an empty mask.
    """
    return float(np.mean(mask)) if len(mask) else 0.0


@dataclass(frozen=True)
class FrameLoss(BaseCondition):
    """Lost audio frames, as packet loss on the caller's uplink.

    :meth:`mask` draws the loss pattern (True = lost) for ``n`` frames of ``frame_ms``:

    * ``"random"``: each frame is lost independently with probability ``rate`` (Bernoulli).
    * ``"gilbert"``: a Gilbert-Elliott two-state Markov chain: every frame in the *bad* state is
      lost, none in the *good* state. With mean burst length ``L = burst_length`` frames,
      ``p(bad -> good) = 1 / L`` and ``p(good -> bad) = rate / (L * (1 - rate))``, so the
      stationary loss is ``rate``; the first state is drawn from the stationary distribution.

    Rate tolerance: a raw draw's loss fraction scatters around ``rate`` (a 60 s call has only
    3000 frames of 20 ms; at 2 % Bernoulli loss its standard deviation is 13 % of the rate, and
    bursts make it larger). So that "5 % loss" means 5 % in every call, the pattern is redrawn
    from the model (up to 1000 times, deterministically from ``rng``) until its loss is within
    ``rate_tolerance`` (relative) of ``rate``, or within half a frame of ``rate * n`` when that
    is looser; the closest draw is kept if none qualifies. The result is the model conditioned on
    its realised rate: bursts keep the model's shape. ``rate_tolerance=None`` returns raw draws.

    Two ways to use it: :meth:`apply` zeroes the lost frames' samples (signal-level emulation,
    as if the receiver's concealment produced silence), or the caller calls :meth:`mask` and
    skips sending the lost frames, letting the agent's Opus decoder conceal them. Use one, not
    both (``Conditions.apply(pcm, skip=("loss",))`` leaves loss to the caller).

    Severity: ``rate``; 0 is clean.

    Attributes:
        rate: Target average loss, a fraction from 0 to 0.9.
        model: ``"random"`` or ``"gilbert"``.
        burst_length: Mean burst length in frames for ``"gilbert"`` (at least 1); must stay 1.0
            for ``"random"``.
        frame_ms: Frame duration in milliseconds: 10, 20, 40 or 60.
        rate_tolerance: Relative tolerance on each mask's realised loss (0 to 1), or ``None``.
    """

    kind: ClassVar[str] = "loss"
    signal: ClassVar[bool] = True

    rate: float = 0.0
    model: Literal["random", "gilbert"] = "random"
    burst_length: float = 1.0
    frame_ms: int = 20
    rate_tolerance: float | None = 0.1

    def __post_init__(self) -> None:
        check_number("rate", self.rate, 0.0, 0.9)
        check_choice("model", self.model, ("random", "gilbert"))
        check_number("burst_length", self.burst_length, 1.0, 1000.0)
        if self.model == "random" and self.burst_length != 1.0:
            raise ValueError(
                f"burst_length={self.burst_length!r} only applies to model='gilbert'; "
                "model='random' loses frames independently (leave burst_length=1.0)"
            )
        check_int("frame_ms", self.frame_ms, 1, 1000)
        check_choice("frame_ms", self.frame_ms, _FRAME_MS_CHOICES)
        if self.rate_tolerance is not None:
            check_number("rate_tolerance", self.rate_tolerance, 0.0, 1.0)
        if self.model == "gilbert" and self.rate > 0:
            p_good_to_bad = self.rate / (self.burst_length * (1.0 - self.rate))
            if p_good_to_bad > 1.0:
                raise ValueError(
                    f"rate={self.rate!r} with burst_length={self.burst_length!r} is impossible "
                    f"for a Gilbert-Elliott chain: burst_length must be at least "
                    f"rate / (1 - rate) = {self.rate / (1 - self.rate):.3g}"
                )

    @property
    def is_clean(self) -> bool:
        """True when ``rate`` is 0."""
        return self.rate == 0

    @property
    def frame_samples(self) -> int:
        """Samples per frame at 48 kHz."""
        return self.frame_ms * CALL_SAMPLE_RATE // 1000

    def describe(self) -> str:
        """E.g. ``"loss gilbert 5% burst 3"`` or ``"loss random 2%"``."""
        text = f"loss {self.model} {format_number(round(self.rate * 100, 6))}%"
        if self.model == "gilbert":
            text += f" burst {format_number(self.burst_length)}"
        return text

    def mask(self, n_frames: int, rng: np.random.Generator) -> BoolArray:
        """Draw the loss pattern for ``n_frames`` frames (see the class docstring).

        Args:
            n_frames: Number of frames of :attr:`frame_ms` milliseconds.
            rng: Random source.

        Returns:
            One bool per frame, True = lost.

        Raises:
            ValueError: If ``n_frames`` is negative.
        """
        check_int("n_frames", n_frames, 0, 2**40)
        if self.rate == 0 or n_frames == 0:
            return np.zeros(n_frames, dtype=bool)
        if self.rate_tolerance is None:
            return self._draw(n_frames, rng)
        target = self.rate * n_frames
        allowed = max(self.rate_tolerance * target, 0.5)
        best = self._draw(n_frames, rng)
        best_error = abs(int(best.sum()) - target)
        for _ in range(_LOSS_MAX_DRAWS - 1):
            if best_error <= allowed:
                break
            candidate = self._draw(n_frames, rng)
            error = abs(int(candidate.sum()) - target)
            if error < best_error:
                best, best_error = candidate, error
        return best

    def _draw(self, n: int, rng: np.random.Generator) -> BoolArray:
        """One raw draw of the loss model for ``n`` frames."""
        if self.model == "random":
            return rng.random(n) < self.rate
        p_bad_to_good = 1.0 / self.burst_length
        p_good_to_bad = self.rate * p_bad_to_good / (1.0 - self.rate)
        bad = bool(rng.random() < self.rate)  # stationary start: no warm-up bias
        # Sojourn times of a Markov chain are geometric (memoryless, so also for the first run):
        # draw alternating run lengths in batches instead of stepping frame by frame.
        mean_pair = 1.0 / p_good_to_bad + 1.0 / p_bad_to_good
        runs: list[BoolArray] = []
        filled = 0
        while filled < n:
            pairs = int(n / mean_pair * 1.2) + 8
            good = rng.geometric(p_good_to_bad, pairs)
            burst = rng.geometric(p_bad_to_good, pairs)
            lengths = np.column_stack([burst, good] if bad else [good, burst]).reshape(-1)
            states = np.tile(np.array([bad, not bad]), pairs)
            runs.append(np.repeat(states, lengths))
            filled += int(lengths.sum())
        return np.concatenate(runs)[:n]

    def apply(self, pcm: Pcm, rng: np.random.Generator) -> Pcm:
        """Zero the samples of the lost frames (signal-level emulation of the loss).

        The clip is cut into frames of :attr:`frame_ms` (the last may be partial) and
        :meth:`mask` decides which are lost.

        Args:
            pcm: Mono int16 samples at 48 kHz.
            rng: Random source for the loss pattern.

        Returns:
            The samples with lost frames silenced, same length; a copy when clean.

        Raises:
            ValueError: If ``pcm`` is not 1-D int16.
        """
        pcm = _check_pcm(pcm)
        out = pcm.copy()
        if self.rate == 0 or len(pcm) == 0:
            return out
        size = self.frame_samples
        lost = self.mask(-(-len(pcm) // size), rng)
        sample_lost = np.repeat(lost, size)[: len(pcm)]
        out[sample_lost] = 0
        return out


@dataclass(frozen=True)
class Jitter(BaseCondition):
    """Late frames: per-frame delays of the caller's send times (acts on timing, not samples).

    :meth:`offsets` gives each frame's delay in seconds: a half-normal draw ``|N(0, std_ms)|``
    per frame, then made non-decreasing in send time (a frame never leaves before the previous
    one), so frames stay in order and delays stay within the largest draw. The caller waits
    ``offsets[i]`` seconds beyond frame ``i``'s nominal send time; :meth:`apply` returns the
    samples unchanged.

    Severity: ``std_ms``; 0 is clean.

    Attributes:
        std_ms: Scale of the half-normal delay, in milliseconds, 0 to 1000 (mean delay is
            ``std_ms * sqrt(2 / pi)``).
        frame_ms: Duration of the frames the caller sends, in milliseconds: 10, 20, 40 or 60.
    """

    kind: ClassVar[str] = "jitter"

    std_ms: float = 0.0
    frame_ms: int = 10

    def __post_init__(self) -> None:
        check_number("std_ms", self.std_ms, 0.0, 1000.0)
        check_int("frame_ms", self.frame_ms, 1, 1000)
        check_choice("frame_ms", self.frame_ms, _FRAME_MS_CHOICES)

    @property
    def is_clean(self) -> bool:
        """True when ``std_ms`` is 0."""
        return self.std_ms == 0

    def describe(self) -> str:
        """E.g. ``"jitter 30 ms"``."""
        return f"jitter {format_number(self.std_ms)} ms"

    def offsets(self, n_frames: int, rng: np.random.Generator) -> FloatArray:
        """Send-time delays for ``n_frames`` consecutive frames, in seconds.

        Args:
            n_frames: Number of frames of :attr:`frame_ms` milliseconds.
            rng: Random source.

        Returns:
            Non-negative delays in seconds; ``nominal + delay`` is non-decreasing.

        Raises:
            ValueError: If ``n_frames`` is negative.
        """
        check_int("n_frames", n_frames, 0, 2**40)
        if self.std_ms == 0 or n_frames == 0:
            return np.zeros(n_frames)
        nominal = np.arange(n_frames) * (self.frame_ms / 1000.0)
        delays = np.abs(rng.normal(0.0, self.std_ms / 1000.0, n_frames))
        send = np.maximum.accumulate(nominal + delays)
        delay: FloatArray = np.maximum(send - nominal, 0.0)
        return delay


@dataclass(frozen=True)
class BargeIn(BaseCondition):
    """The caller interrupts: it starts speaking ``offset_s`` seconds into the agent's reply.

    Data only; the caller times its next utterance by it, :meth:`apply` changes nothing.

    Severity: earlier is harder (strategies draw later offsets first); ``None`` = no barge-in.

    Attributes:
        offset_s: Seconds from the start of the agent's reply, 0 to 60, or ``None``.
    """

    kind: ClassVar[str] = "barge_in"

    offset_s: float | None

    def __post_init__(self) -> None:
        if self.offset_s is not None:
            check_number("offset_s", self.offset_s, 0.0, 60.0)

    @property
    def is_clean(self) -> bool:
        """True when there is no barge-in."""
        return self.offset_s is None

    def describe(self) -> str:
        """E.g. ``"barge-in at 1.2 s"``."""
        return "barge-in none" if self.offset_s is None else f"barge-in at {format_number(self.offset_s)} s"


@dataclass(frozen=True)
class Backchannel(BaseCondition):
    """The caller says a short acknowledgement while the agent talks; the agent should go on.

    Data only; the caller speaks ``text`` ``offset_s`` seconds into the agent's reply.

    Attributes:
        text: What the caller says (non-empty), e.g. ``"mm-hmm"``.
        offset_s: Seconds from the start of the agent's reply, 0 to 60.
    """

    kind: ClassVar[str] = "backchannel"

    text: str = "mm-hmm"
    offset_s: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"text={self.text!r} must be a non-empty string, e.g. 'mm-hmm'")
        check_number("offset_s", self.offset_s, 0.0, 60.0)

    def describe(self) -> str:
        """E.g. ``"backchannel 'mm-hmm' at 0.5 s"``."""
        return f"backchannel {self.text!r} at {format_number(self.offset_s)} s"


def split_text_for_pause(text: str, at_word: int) -> tuple[str, str]:
    """Split ``text`` after the word at index ``at_word`` (0-based) for a mid-sentence pause.

    Words are whitespace-separated (punctuation stays with its word) and re-joined with single
    spaces.

    Args:
        text: The caller's sentence.
        at_word: Index of the last word before the pause, from 0 to ``words - 2`` so both parts
            have words.

    Returns:
        ``(before, after)``.

    Raises:
        ValueError: If ``at_word`` leaves either part empty.
    """
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"text={text!r} needs at least two words to pause in the middle")
    check_int("at_word", at_word, 0, len(words) - 2)
    return " ".join(words[: at_word + 1]), " ".join(words[at_word + 1 :])


@dataclass(frozen=True)
class Pause(BaseCondition):
    """The caller stops mid-sentence: ``duration_s`` of silence after word ``at_word``.

    Data only; the caller splits its text with :func:`split_text_for_pause` and speaks the two
    parts with the pause between them. Tests whether the agent's end-of-turn detection waits.

    Severity: ``duration_s``; 0 is clean.

    Attributes:
        at_word: Index (0-based) of the last word before the pause, 0 to 1000.
        duration_s: Length of the pause in seconds, 0 to 60.
    """

    kind: ClassVar[str] = "pause"

    at_word: int
    duration_s: float

    def __post_init__(self) -> None:
        check_int("at_word", self.at_word, 0, 1000)
        check_number("duration_s", self.duration_s, 0.0, 60.0)

    @property
    def is_clean(self) -> bool:
        """True when ``duration_s`` is 0."""
        return self.duration_s == 0

    def describe(self) -> str:
        """E.g. ``"pause 1.5 s after word 3"``."""
        return f"pause {format_number(self.duration_s)} s after word {self.at_word}"


@dataclass(frozen=True)
class Silence(BaseCondition):
    """The caller says nothing for ``duration_s`` seconds where it would speak.

    Data only; tests re-prompts and timeouts.

    Severity: ``duration_s``; 0 is clean.

    Attributes:
        duration_s: Seconds of silence, 0 to 600.
    """

    kind: ClassVar[str] = "silence"

    duration_s: float

    def __post_init__(self) -> None:
        check_number("duration_s", self.duration_s, 0.0, 600.0)

    @property
    def is_clean(self) -> bool:
        """True when ``duration_s`` is 0."""
        return self.duration_s == 0

    def describe(self) -> str:
        """E.g. ``"silence 5 s"``."""
        return f"silence {format_number(self.duration_s)} s"


@dataclass(frozen=True)
class Reconnect(BaseCondition):
    """The caller's connection drops ``after_s`` seconds into the call and comes back.

    Data only; the caller interprets ``mode``: ``"full"`` leaves and rejoins the room (a new
    participant session), ``"signal"`` drops only the signalling connection (a resume).

    Attributes:
        after_s: Seconds from the start of the call, 0 to 3600.
        mode: ``"full"`` or ``"signal"``. (Named ``mode``, not ``kind``: ``kind`` is the spec
            type in every spec and its JSON.)
    """

    kind: ClassVar[str] = "reconnect"

    after_s: float
    mode: Literal["full", "signal"] = "full"

    def __post_init__(self) -> None:
        check_number("after_s", self.after_s, 0.0, 3600.0)
        check_choice("mode", self.mode, ("full", "signal"))

    def describe(self) -> str:
        """E.g. ``"reconnect full after 10 s"``."""
        return f"reconnect {self.mode} after {format_number(self.after_s)} s"


Condition: TypeAlias = (
    Noise
    | Level
    | Telephony
    | CodecRoundTrip
    | Bitrate
    | FrameLoss
    | Jitter
    | BargeIn
    | Backchannel
    | Pause
    | Silence
    | Reconnect
)
"""Any condition spec."""

_SPEC_TYPES: dict[str, type[Condition]] = {
    cls.kind: cls
    for cls in (
        Level,
        Noise,
        Telephony,
        CodecRoundTrip,
        FrameLoss,
        Bitrate,
        Jitter,
        BargeIn,
        Backchannel,
        Pause,
        Silence,
        Reconnect,
    )
}
# Canonical order of kinds (signal kinds in application order first), used by Conditions.kinds.
_KIND_ORDER = {kind: i for i, kind in enumerate(_SPEC_TYPES)}


def spec_from_dict(data: Mapping[str, Any]) -> Condition:
    """Rebuild a spec from :meth:`BaseCondition.to_dict` output (e.g. read back from JSON).

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
        raise ValueError(f"kind={kind!r} is not a condition; valid kinds: {', '.join(_SPEC_TYPES)}")
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


_C = TypeVar("_C", bound=BaseCondition)

CONDITIONS_FORMAT_VERSION = 1
"""Version of the :meth:`Conditions.to_dict` layout."""


@dataclass(frozen=True)
class Conditions:
    """A seeded bundle of condition specs: everything needed to replay a call's impairments.

    Each item gets its own random stream, ``numpy.random.default_rng`` of
    ``SeedSequence(seed, spawn_key=(crc32(kind), occurrence))``: the spawn key names the item by
    its kind and its position among items of that kind, so adding or removing an item of
    another kind never changes an item's randomness (a positional ``SeedSequence(seed).spawn``
    would shift every later item). Use :meth:`rng_for` to get an item's stream when the caller
    applies it itself (loss masks, jitter offsets).

    Attributes:
        items: The specs (a list is accepted and stored as a tuple).
        seed: Non-negative integer seed.
    """

    items: tuple[Condition, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.items, list):
            object.__setattr__(self, "items", tuple(self.items))
        if not isinstance(self.items, tuple):
            raise ValueError(f"items={self.items!r} must be a tuple of condition specs")
        for item in self.items:
            if not isinstance(item, tuple(_SPEC_TYPES.values())):
                raise ValueError(
                    f"items contains {item!r}, which is not a condition spec; valid kinds: "
                    f"{', '.join(_SPEC_TYPES)}"
                )
        check_int("seed", self.seed, 0, 2**63 - 1)

    @property
    def is_clean(self) -> bool:
        """True when every item is clean (or there are none)."""
        return all(item.is_clean for item in self.items)

    def kinds(self) -> tuple[str, ...]:
        """Kinds of the non-clean items, unique, in canonical order (for cohorts).

        Returns:
            E.g. ``("noise", "loss")``.
        """
        found = {item.kind for item in self.items if not item.is_clean}
        return tuple(sorted(found, key=_KIND_ORDER.__getitem__))

    def describe(self) -> str:
        """One line for reports, e.g. ``"noise pink 12 dB, loss gilbert 5% burst 3, seed 41"``.

        Non-clean items in canonical kind order (as :meth:`kinds`), then the seed; ``"clean,
        seed N"`` when nothing applies.
        """
        ordered = sorted(self.items, key=lambda item: _KIND_ORDER[item.kind])  # stable: same-kind order kept
        parts = [item.describe() for item in ordered if not item.is_clean]
        return ", ".join([*(parts or ["clean"]), f"seed {self.seed}"])

    def find(self, cls: type[_C]) -> _C | None:
        """The first non-clean item of type ``cls``, if any.

        Args:
            cls: A spec class, e.g. :class:`Jitter`.

        Returns:
            The item, or ``None``.
        """
        for item in self.items:
            if isinstance(item, cls) and not item.is_clean:
                return item
        return None

    @property
    def publish_bitrate_bps(self) -> int | None:
        """Max bitrate for the caller's published track's Opus encoder, in bits per second.

        The caller sets it as ``TrackPublishOptions.audio_encoding.max_bitrate``; taken from the
        first non-clean :class:`Bitrate` item, ``None`` when there is none (WebRTC default).
        """
        spec = self.find(Bitrate)
        return None if spec is None else spec.max_bitrate_bps

    def rng_for(self, item: BaseCondition, *, turn: int | None = None) -> np.random.Generator:
        """A fresh random stream for ``item``, the one :meth:`apply` uses for it.

        Args:
            item: One of :attr:`items`.
            turn: Caller turn index for a per-turn stream (as ``apply(..., turn=)``), or
                ``None`` for the call-wide stream.

        Returns:
            A new generator; calling again restarts the same stream.

        Raises:
            ValueError: If ``item`` is not in the bundle.
        """
        same_kind = [other for other in self.items if other.kind == item.kind]
        # Identity first, so two equal items of one kind each get their own stream.
        matches = [i for i, other in enumerate(same_kind) if other is item]
        if not matches:
            matches = [i for i, other in enumerate(same_kind) if other == item]
        if not matches:
            raise ValueError(f"item={item!r} is not one of this bundle's items")
        occurrence = matches[0]
        return self._rng(item.kind, occurrence, turn)

    def _rng(self, kind: str, occurrence: int, turn: int | None) -> np.random.Generator:
        """The random stream of the ``occurrence``-th item of ``kind`` (for ``turn``, if given)."""
        key: tuple[int, ...] = (zlib.crc32(kind.encode("ascii")), occurrence)
        if turn is not None:
            key += (check_int("turn", turn, 0, 2**31),)
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def apply(self, pcm: Pcm, *, skip: Collection[str] = (), turn: int | None = None) -> Pcm:
        """Apply the signal-level items to the caller's audio in :data:`SIGNAL_ORDER`.

        Order: level -> noise -> telephony -> codec -> loss, whatever the order of
        :attr:`items`; items of the same kind apply in their given order. Clean items and
        non-signal items (bitrate, jitter, behaviours) are skipped.

        Args:
            pcm: Mono int16 samples at 48 kHz.
            skip: Kinds to leave out, e.g. ``("loss",)`` when the caller drops frames on the
                network itself.
            turn: Caller turn index: each turn then gets its own noise and loss realisation
                (still reproducible from the seed); ``None`` uses the call-wide streams.

        Returns:
            A new int16 array of the same length (equal to ``pcm`` when nothing applies).

        Raises:
            ValueError: If ``pcm`` is not 1-D int16 or ``skip`` names an unknown kind.
            AudioInputError: If a noise file cannot be used.
        """
        unknown = sorted(set(skip) - set(_SPEC_TYPES))
        if unknown:
            raise ValueError(
                f"skip={tuple(skip)!r} names unknown kinds {unknown}; valid kinds: {', '.join(_SPEC_TYPES)}"
            )
        out = _check_pcm(pcm).copy()
        for kind in SIGNAL_ORDER:
            if kind in skip:
                continue
            same_kind = [item for item in self.items if item.kind == kind]
            for occurrence, item in enumerate(same_kind):
                if not item.is_clean:
                    out = item.apply(out, self._rng(kind, occurrence, turn))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The bundle as JSON-able data; :meth:`from_dict` reverses it.

        Returns:
            ``{"format_version": 1, "seed": ..., "items": [<spec dict>, ...]}``.
        """
        return {
            "format_version": CONDITIONS_FORMAT_VERSION,
            "seed": self.seed,
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conditions:
        """Rebuild a bundle from :meth:`to_dict` output.

        Args:
            data: ``{"format_version": 1, "seed": ..., "items": [...]}`` (``format_version``
                may be absent).

        Returns:
            The bundle, validated.

        Raises:
            ValueError: If the version is unknown or an item is invalid.
        """
        version = data.get("format_version", CONDITIONS_FORMAT_VERSION)
        if version != CONDITIONS_FORMAT_VERSION:
            raise ValueError(
                f"format_version={version!r} is not supported; this pytest-livekit reads "
                f"version {CONDITIONS_FORMAT_VERSION}"
            )
        unknown = sorted(set(data) - {"format_version", "seed", "items"})
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; valid fields: format_version, items, seed"
            )
        items = tuple(spec_from_dict(item) for item in data.get("items", ()))
        return cls(items=items, seed=data.get("seed", 0))
