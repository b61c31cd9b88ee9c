"""Caller audio: loading, resampling and level measurement (pure numpy + soundfile).

All PCM inside pytest-livekit is mono ``int16`` at :data:`CALL_SAMPLE_RATE` unless a name says
otherwise.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from pytest_livekit.errors import AudioInputError, ConfigError, PytestLivekitError

#: Sample rate of everything the caller sends and records, in Hz (WebRTC's native Opus rate).
CALL_SAMPLE_RATE = 48_000
#: Longest caller clip accepted (s): a clip is one caller turn; an hour-long file is a mistake
#: that would hold gigabytes in memory before the first frame left.
MAX_CLIP_SECONDS = 600.0
#: A clip whose loudest sample is below this (dBFS) holds no speech.
SILENT_PEAK_DBFS = -60.0

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True)
class CallerAudio:
    """A clip the caller will speak."""

    pcm: Pcm
    """Mono int16 samples at :data:`CALL_SAMPLE_RATE`."""
    source: str
    """Where it came from: a file path or ``tts:<text>``."""
    text: str | None = None
    """What is said in it, when known (used as the ASR reference)."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / CALL_SAMPLE_RATE


def to_mono_float(data: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """Downmix ``(frames, channels)`` or ``(frames,)`` audio of any dtype to mono float in [-1, 1]."""
    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.unsignedinteger):  # unsigned PCM (8-bit WAV) is offset
        info = np.iinfo(arr.dtype)
        mid = (int(info.max) + 1) / 2
        arr = (arr.astype(np.float64) - mid) / mid
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        arr = arr.astype(np.float64) / max(abs(info.min), info.max)
    else:
        arr = arr.astype(np.float64)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)
    return arr


def warm_imports() -> None:
    """Import what a call's script needs before the call starts, so the first ``say()`` does
    not import it on the event loop it shares with an in-process agent. Once per process.

    Resampling (:func:`resample`) and the call's metrics need numpy only; what remains is
    soundfile, for clips read from WAV files.
    """
    import soundfile  # noqa: F401


_frozen = False


def freeze_loaded_objects() -> None:
    """Exempt what the process has loaded so far (livekit, livekit-agents, the agent's module and
    plugins: ~250,000 objects) from Python's full garbage collections. Once per process.

    A full collection walks every tracked object with the interpreter stopped: in a test process
    that had imported livekit-agents it took 190-240 ms, every minute or so (measured over nine
    example calls), and an in-process agent shares that process, so a turn that met one answered
    that much later. Frozen objects are never walked again (livekit-agents freezes its job
    processes' inherited objects the same way, and the caller's process does too). Without a
    collection first: that would cost the full walk now; what little garbage there is stays.
    """
    global _frozen
    if not _frozen:
        import gc

        gc.freeze()
        _frozen = True


def resample(x: npt.NDArray[np.float64], rate_in: int, rate_out: int) -> npt.NDArray[np.float64]:
    """Band-limited rational resampling of mono float audio: polyphase filtering with a
    windowed-sinc low-pass (cutoff at 0.9x the lower Nyquist frequency, Kaiser window beta 8:
    -80 dB sidelobes), the same output as scipy's ``resample_poly`` with that filter (the unit
    tests check both agree to 1e-12).

    numpy only: ``scipy.signal`` takes ~0.8 s to import, which the first call of a run would
    otherwise wait for. A 3 s sentence from 22.05 to 48 kHz takes ~20 ms.
    """
    if rate_in == rate_out or len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    # a default polyphase filter puts its transition band across the lower Nyquist frequency;
    # ours ends below it, so a telephone band stays one
    return _polyphase(np.asarray(x, dtype=np.float64), _lowpass(max(up, down)), up, down)


#: Output samples computed per block of :func:`_polyphase`: a block gathers ``block x
#: taps-per-phase`` samples, and one that fits the CPU's cache is twice as fast as a large one.
_RESAMPLE_BLOCK = 2_048


def _polyphase(
    x: npt.NDArray[np.float64], taps: npt.NDArray[np.float64], up: int, down: int
) -> npt.NDArray[np.float64]:
    """Upsample by ``up``, filter with ``taps`` (odd length, centred), downsample by ``down``.

    The output sample ``m`` sits at input position ``m * down / up`` (the filter's delay is taken
    out, as ``resample_poly`` does); ``ceil(len(x) * up / down)`` samples. Each output sample is
    the dot product of one phase of the filter (every ``up``-th tap) with the input samples
    under it, read as one window of consecutive samples.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    half = (len(taps) - 1) // 2
    h = taps * up  # the zeros the upsampling inserts take 1 - 1/up of the energy
    per_phase = -(-len(h) // up)
    phases = np.zeros(up * per_phase)
    phases[: len(h)] = h
    # phases[p, k] = h[p + (per_phase - 1 - k) * up]: reversed, to meet the input window in order
    phases = np.ascontiguousarray(phases.reshape(per_phase, up).T[:, ::-1])
    n_out = -(-len(x) * up // down)
    # zeros around the input: every window that reaches past either end reads zeros there
    padded = np.concatenate([np.zeros(per_phase - 1), x, np.zeros(per_phase + 1)])
    windows = sliding_window_view(padded, per_phase)
    out = np.empty(n_out)
    for start in range(0, n_out, _RESAMPLE_BLOCK):
        m = np.arange(start, min(start + _RESAMPLE_BLOCK, n_out))
        base, phase = np.divmod(m * down + half, up)  # position on the upsampled grid
        out[start : start + len(m)] = np.einsum("ij,ij->i", phases[phase], windows[base])
    return out


@functools.lru_cache(maxsize=16)
def _lowpass(max_rate: int) -> npt.NDArray[np.float64]:
    """The resampling filter for rate ratio ``up/down`` with ``max(up, down) = max_rate``: a
    windowed sinc (``16 * max_rate`` taps each side, cutoff ``0.9 / max_rate`` of Nyquist,
    Kaiser beta 8), scaled to unit gain at DC (as ``scipy.signal.firwin`` designs it).
    """
    half_len = 16 * max_rate
    cutoff = 0.9 / max_rate
    m = np.arange(-half_len, half_len + 1, dtype=np.float64)
    taps = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half_len + 1, 8.0)
    return np.asarray(taps / taps.sum(), dtype=np.float64)


def float_to_pcm16(x: npt.NDArray[np.float64]) -> Pcm:
    """Clip to [-1, 1] and convert to int16."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def load_wav(path: str | os.PathLike[str], *, text: str | None = None) -> CallerAudio:
    """Read an audio file of any rate and channel count as 48 kHz mono caller audio.

    Raises:
        AudioInputError: the file is missing, unreadable, too long, truncated (its header
            promises more than it holds), holds no samples, or is silent; the message says which
            and how to fix it (the same message :func:`check_audio_file` gives at collection).
    """
    import soundfile as sf

    p = Path(path)
    _check_header(p)
    try:
        data, rate = sf.read(str(p), always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError with a terse text
        raise _unreadable(p, exc) from None
    mono = to_mono_float(data)
    _check_samples(p, len(mono), float(np.abs(mono).max()) if len(mono) else 0.0, int(rate))
    pcm = float_to_pcm16(resample(mono, int(rate), CALL_SAMPLE_RATE))
    return CallerAudio(pcm=pcm, source=str(p), text=text)


def check_audio_file(path: str | os.PathLike[str]) -> None:
    """Check a caller audio file the way :func:`load_wav` does, without keeping its samples.

    For collection time: the file is read block by block (a 10-minute clip never sits in memory
    whole) and not resampled, so it costs a read of the file and no resampling.

    Raises:
        AudioInputError: the same error, with the same message, :func:`load_wav` would raise.
    """
    import soundfile as sf

    p = Path(path)
    rate = _check_header(p)
    frames, peak = 0, 0.0
    try:
        for block in sf.blocks(str(p), blocksize=1 << 16, always_2d=True):
            mono = to_mono_float(block)
            frames += len(mono)
            if len(mono):
                peak = max(peak, float(np.abs(mono).max()))
    except Exception as exc:  # the same errors sf.read() raises in load_wav
        raise _unreadable(p, exc) from None
    _check_samples(p, frames, peak, rate or 1)


def caller_text_problem(text: str) -> PytestLivekitError | None:
    """The error ``say(text)`` raises before it speaks, or ``None`` when the offline TTS can try.

    The checks that need no speech synthesis: empty text, and characters an English espeak-ng
    voice cannot say (other scripts, emoji, invisible characters). Text of punctuation only is
    found only once synthesised (it yields no audible speech). Shared by
    :meth:`~pytest_livekit.call.livekit_call.LivekitCall.synthesize` and the collection-time scan of
    ``say()`` literals (:mod:`pytest_livekit.agent.vocabulary`), so both say the same.
    """
    if not text or not text.strip():
        return ConfigError(
            "say() needs some text to speak; got an empty string.\n"
            "Hint: for a caller who says nothing, use 'await call.stay_silent(seconds)'."
        )
    from pytest_livekit.offline.tts import (
        unsayable_characters,  # loads livekit-agents: only when text is checked
    )

    bad = unsayable_characters(text)
    if bad:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad[:8])
        return AudioInputError(
            f"say({text!r}): the offline English TTS cannot say {shown}: it would read them out "
            "by name or not at all, and the ASR reference would not match what was spoken.\n"
            "Hint: write the words out in Latin letters, or play a recording with "
            "'await call.play(\"turn.wav\", text=...)'."
        )
    return None


#: A header may promise this much more audio than a file holds (s) before the file counts as
#: truncated: some writers count a few header bytes into the data size, which loses nothing.
TRUNCATION_TOLERANCE_SECONDS = 0.01

# WAV format tags whose block align is the size of one frame (PCM, float, A-law, mu-law); for
# compressed formats (ADPCM, GSM) a block holds many frames, so the header's frame count is
# left to libsndfile.
_FRAME_ALIGNED_WAV_FORMATS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})
_WAV_FORMAT_EXTENSIBLE = 0xFFFE
# The data size streaming writers (ffmpeg or sox to a pipe) put in the header: length unknown.
_OPEN_LENGTH = 0xFFFFFFFF


def _check_header(p: Path) -> int | None:
    """Checks before any sample is read: the file exists, is not too long, and holds what its
    header promises. Returns the sample rate when libsndfile can read the header.
    """
    import soundfile as sf

    if not p.exists():
        raise AudioInputError(
            f"caller audio file {str(p)!r} does not exist.\n"
            "Hint: paths are resolved relative to the test file's folder; check the name, or "
            "use livekit_call.say('text') to synthesize the caller's speech offline."
        )
    try:
        info = sf.info(str(p))
    except Exception:  # not audio at all: the read that follows says so with soundfile's reason
        return None
    if info.duration > MAX_CLIP_SECONDS:
        raise AudioInputError(
            f"caller audio file {str(p)!r} is {info.duration:.0f} s long; a caller clip is one turn "
            f"(at most {MAX_CLIP_SECONDS:.0f} s).\nHint: cut the turn you want out of it, e.g. "
            "'sox in.wav out.wav trim 0 20'."
        )
    promised = header_frames(p)
    rate = int(info.samplerate)
    # libsndfile reads what is there (its frame count is corrected to the file's length), so a
    # cut file would silently play a part of the turn and the ASR reference would not match
    if promised is not None and promised - int(info.frames) > TRUNCATION_TOLERANCE_SECONDS * rate:
        raise AudioInputError(
            f"caller audio file {str(p)!r} is truncated: its header promises {promised} frames "
            f"({promised / rate:.2f} s) but the file holds {info.frames} ({info.frames / rate:.2f} s).\n"
            "Hint: the file was cut short (an interrupted copy, download or recording); copy or "
            "export it again, or keep what is there with a header that says so: python -c "
            f"\"import soundfile as sf; sf.write('{p.stem}-fixed{p.suffix}', *sf.read('{p.name}'))\"."
        )
    return rate


def _unreadable(p: Path, exc: BaseException) -> AudioInputError:
    return AudioInputError(
        f"caller audio file {str(p)!r} cannot be read as audio: {exc}.\n"
        "Hint: give a WAV/FLAC/OGG file (PCM or float); re-export it, e.g. "
        "'sox in.mp3 -r 48000 -c 1 out.wav'."
    )


def _check_samples(p: Path, frames: int, peak: float, rate: int) -> None:
    """Fail for a file with no samples or no audible sound (``peak``: of the mono mix, 0..1)."""
    if frames == 0:
        raise AudioInputError(f"caller audio file {str(p)!r} has no samples.\nHint: re-record it.")
    if peak < 10.0 ** (SILENT_PEAK_DBFS / 20.0):
        level = "digital silence" if peak == 0.0 else f"peak {20.0 * np.log10(peak):.0f} dBFS"
        raise AudioInputError(
            f"caller audio file {str(p)!r} holds no speech ({level}, {frames / rate:.1f} s).\n"
            "Hint: for a caller who says nothing, use 'await call.stay_silent(seconds)'; "
            "otherwise check the recording's level."
        )


def header_frames(path: str | os.PathLike[str]) -> int | None:
    """The number of frames a WAV (RIFF or RF64) or AIFF file's header promises.

    Returns:
        The frame count, or ``None`` for other formats, for compressed WAV formats, and for a
        header that leaves the length open (streaming writers put 0xFFFFFFFF there).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            kind, form = head[:4], head[8:12]
            if kind in (b"RIFF", b"RF64") and form == b"WAVE":
                return _wav_header_frames(f)
            if kind == b"FORM" and form in (b"AIFF", b"AIFC"):
                return _aiff_header_frames(f)
    except OSError:
        return None
    return None


def _wav_header_frames(f: BinaryIO) -> int | None:
    """Frames of the ``data`` chunk of a RIFF/RF64 WAV (read after its 12-byte preamble)."""
    block_align: int | None = None
    tag: int | None = None
    data64: int | None = None  # RF64: the real data size, in the ds64 chunk
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"ds64":
            body = f.read(size)
            if len(body) >= 16:
                data64 = struct.unpack("<Q", body[8:16])[0]
            f.seek(size & 1, 1)
            continue
        if cid == b"fmt ":
            body = f.read(size)
            if len(body) < 16:
                return None
            tag, _channels, _rate, _byte_rate, block_align = struct.unpack("<HHIIH", body[:14])
            if tag == _WAV_FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the tag
            f.seek(size & 1, 1)
            continue
        if cid == b"data":
            if size == 0xFFFFFFFF and data64 is not None:
                size = data64
            if size == _OPEN_LENGTH or tag not in _FRAME_ALIGNED_WAV_FORMATS or not block_align:
                return None
            return int(size // block_align)
        f.seek(size + (size & 1), 1)  # chunks are padded to an even length


def _aiff_header_frames(f: BinaryIO) -> int | None:
    """``numSampleFrames`` of an AIFF/AIFC ``COMM`` chunk (read after the 12-byte preamble)."""
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack(">I", chunk[4:])[0]
        if cid == b"COMM":
            body = f.read(6)
            if len(body) < 6:
                return None
            frames = int(struct.unpack(">I", body[2:6])[0])
            return frames or None
        f.seek(size + (size & 1), 1)


def rms_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    """RMS level of int16 samples in dB relative to full scale (-120 for digital silence)."""
    if len(pcm) == 0:
        return -120.0
    x = pcm.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * float(np.log10(max(rms, 1e-6)))


@dataclass(frozen=True)
class SpeechSegment:
    """An interval in which one side was audible."""

    start: float
    """Seconds from the start of the call."""
    end: float
    """Seconds from the start of the call."""


class ActivityDetector:
    """Energy detector with hysteresis, fed frame by frame (caller's vantage point).

    Opus delivers silence as near-zeros or DTX comfort noise, so a level threshold plus a hold count
    separates speech from it robustly without a model.

    Args:
        threshold_dbfs: frame level above which a frame counts as active, in dBFS.
        onset_frames: consecutive active frames that start a segment.
        release_seconds: seconds of inactivity that end a segment.
    """

    def __init__(
        self, threshold_dbfs: float = -45.0, onset_frames: int = 3, release_seconds: float = 0.35
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.onset_frames = onset_frames
        self.release_seconds = release_seconds
        self.segments: list[SpeechSegment] = []
        self._run = 0
        self._run_start = 0.0
        self._open_start: float | None = None
        self._last_active = 0.0

    @property
    def active(self) -> bool:
        """True while a segment is open."""
        return self._open_start is not None

    def push(self, t: float, duration: float, pcm: npt.NDArray[np.int16]) -> SpeechSegment | None:
        """Feed one frame that starts at ``t`` s; returns a segment when one just closed."""
        loud = rms_dbfs(pcm) > self.threshold_dbfs
        if loud:
            if self._run == 0:
                self._run_start = t
            self._run += 1
            self._last_active = t + duration
            if self._open_start is None and self._run >= self.onset_frames:
                self._open_start = self._run_start
        else:
            self._run = 0
            if self._open_start is not None and t + duration - self._last_active >= self.release_seconds:
                seg = SpeechSegment(self._open_start, self._last_active)
                self.segments.append(seg)
                self._open_start = None
                return seg
        return None

    def onset(self) -> float | None:
        """Start of the currently open segment, if any."""
        return self._open_start

    def all_segments(self) -> list[SpeechSegment]:
        """Closed segments plus the open one (ending at the last active frame)."""
        segs = list(self.segments)
        if self._open_start is not None:
            segs.append(SpeechSegment(self._open_start, self._last_active))
        return segs
