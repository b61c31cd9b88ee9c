"""Offline text-to-speech: espeak-ng, loaded from the ``espeakng-loader`` wheel.

Two layers:

* :func:`synthesize_speech` turns text into mono 16-bit PCM, synchronously. The scripted caller
  uses it to produce the "user's" voice, and the tests use it to feed the offline STT.
* :class:`EspeakTTS` wraps the same engine as a ``livekit.agents.tts.TTS`` plugin, so an agent
  under test can speak without a cloud TTS.

espeak-ng sounds robotic, but it needs no model download (the wheel ships the library and its
voice data) and synthesises roughly a thousand times faster than real time.

It is *almost* deterministic: espeak-ng adds a slight pitch "flutter" read from a table at an
index that is a static variable inside the library, never reset (not even by re-initialising).
Its phase therefore depends on how much audio the process synthesised before, and repeated
calls with the same text differ by a few samples in length and slightly in waveform. What is
said, and how it is recognised, does not change.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    tts,
    utils,
)

__all__ = [
    "DEFAULT_VOICE",
    "DEFAULT_WORDS_PER_MINUTE",
    "SAMPLE_RATE",
    "EspeakTTS",
    "SpeechSynthesisError",
    "synthesize_speech",
]

SAMPLE_RATE = 22050
"""Sample rate (Hz) of the PCM espeak-ng produces; fixed by its formant synthesiser."""

DEFAULT_VOICE = "en-us"
"""espeak-ng voice used unless another is asked for."""

DEFAULT_WORDS_PER_MINUTE = 140
"""Default speaking rate (words per minute).

Slower than espeak's own default of 175 because pocketsphinx (the offline STT) transcribes
espeak speech a little more accurately at 140 words per minute (measured on 18 support-call
phrases with its generic language model: 22 % word error rate at 140, 26 % at 175; with a domain
language model both rates were recognised without error).
"""

MIN_WORDS_PER_MINUTE = 80
"""Slowest rate (words per minute) espeak-ng accepts."""

MAX_WORDS_PER_MINUTE = 450
"""Fastest rate (words per minute) espeak-ng accepts."""

DEFAULT_PITCH = 50
"""espeak-ng's default base pitch, on its 0-100 scale."""

# Values from espeak-ng's public header, speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synth callback runs inside espeak_Synth; no audio device
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit() inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_EE_NOT_FOUND = 2

# int t_espeak_callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechSynthesisError(RuntimeError):
    """espeak-ng could not be loaded or failed to synthesise.

    The message names the fix (usually reinstalling ``espeakng-loader``).
    """


@dataclass
class _Engine:
    """The loaded espeak-ng library and the state its synth callback writes into."""

    lib: ctypes.CDLL
    sample_rate: int
    callback: object  # the ctypes callback; kept referenced so it is never garbage-collected
    chunks: list[npt.NDArray[np.int16]]


# espeak-ng keeps its voice, rate and output buffer in process-wide globals and is not
# thread-safe, so every use goes through this lock, and the library is initialised only once.
_LOCK = threading.Lock()
_ENGINE: _Engine | None = None

_REINSTALL_HINT = "Fix: pip install --force-reinstall espeakng-loader"


def _load_engine() -> _Engine:
    """Load and initialise espeak-ng once; the caller must hold ``_LOCK``.

    Returns:
        The process-wide engine.

    Raises:
        SpeechSynthesisError: If the library or its voice data cannot be loaded.
    """
    global _ENGINE
    if _ENGINE is not None:
        return _ENGINE

    # Imported here, not at the top, so a missing package becomes a SpeechSynthesisError
    # that names the fix rather than an ImportError from deep inside the plugin.
    try:
        import espeakng_loader
    except ImportError as e:
        raise SpeechSynthesisError(
            f"the offline TTS needs the espeakng-loader package ({e}). Fix: pip install espeakng-loader"
        ) from e

    lib_path = espeakng_loader.get_library_path()
    try:
        data_path = espeakng_loader.get_data_path()
    except RuntimeError as e:
        raise SpeechSynthesisError(f"espeak-ng voice data is missing: {e}. {_REINSTALL_HINT}") from e
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as e:
        raise SpeechSynthesisError(
            f"could not load the espeak-ng library at {lib_path}: {e}. {_REINSTALL_HINT}"
        ) from e

    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,  # text
        ctypes.c_size_t,  # size in bytes, including the terminating NUL
        ctypes.c_uint,  # position
        ctypes.c_int,  # position type
        ctypes.c_uint,  # end position (0: none)
        ctypes.c_uint,  # flags
        ctypes.c_void_p,  # unique identifier out-pointer (unused)
        ctypes.c_void_p,  # user data (unused)
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int

    # buflength 0 = espeak's default (200 ms per callback); the data path may point at the
    # espeak-ng-data folder itself, which espeak-ng accepts in place of its parent.
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
    )
    if sample_rate <= 0:
        raise SpeechSynthesisError(
            f"espeak_Initialize failed (returned {sample_rate}) with voice data at {data_path}. "
            f"{_REINSTALL_HINT}"
        )

    chunks: list[npt.NDArray[np.int16]] = []

    def _on_audio(wav: ctypes._Pointer[ctypes.c_short], num_samples: int, _events: int) -> int:
        # Runs on the synthesising thread, inside espeak_Synth; copy because espeak reuses the
        # buffer for the next chunk. A NULL wav with 0 samples marks the end of synthesis.
        if wav and num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).astype(np.int16))
        return 0  # 0 = keep going

    callback = _SynthCallback(_on_audio)
    lib.espeak_SetSynthCallback(callback)
    _ENGINE = _Engine(lib=lib, sample_rate=sample_rate, callback=callback, chunks=chunks)
    return _ENGINE


def unsayable_characters(text: str) -> list[str]:
    """The characters of ``text`` an English espeak-ng voice cannot say as words, in order of
    first appearance: letters of non-Latin scripts (read out as "chinese letter"), emoji and
    other symbols (read out by name), invisible format characters and unassigned code points.
    Digits, punctuation and currency signs are fine.
    """
    import unicodedata

    bad: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        name = unicodedata.name(ch, "")
        foreign_letter = category.startswith("L") and not name.startswith("LATIN")
        if (foreign_letter or category in ("So", "Sk", "Cf", "Co", "Cn", "Cs")) and ch not in bad:
            bad.append(ch)
    return bad


def synthesize_speech(
    text: str,
    *,
    voice: str = DEFAULT_VOICE,
    words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
    pitch: int | None = None,
) -> tuple[npt.NDArray[np.int16], int]:
    """Speak ``text`` with espeak-ng and return the audio.

    Thread-safe (calls are serialised) and synchronous; a sentence takes a few milliseconds.

    Args:
        text: What to say. Plain text; espeak reads digits and common abbreviations itself.
        voice: espeak-ng voice name, e.g. ``"en-us"``, ``"en-gb"``, ``"en-us+f3"``.
        words_per_minute: Speaking rate in words per minute, from 80 to 450. The default (140)
            is recognised by pocketsphinx a little better than espeak's usual 175.
        pitch: Base pitch on espeak's 0-100 scale; ``None`` for the default (50).

    Returns:
        ``(pcm, sample_rate)``: mono int16 samples, and their rate in Hz (22050).

    Raises:
        ValueError: If ``text`` is empty or blank, the rate or pitch is out of range, or the
            voice does not exist.
        SpeechSynthesisError: If espeak-ng cannot be loaded or fails.
    """
    if not text or not text.strip():
        raise ValueError("synthesize_speech needs some text to speak; got an empty string")
    _check_rate_and_pitch(words_per_minute, pitch)
    # A NUL would silently cut the text short at the C boundary.
    encoded = text.replace("\0", " ").encode("utf-8")

    with _LOCK:
        engine = _load_engine()
        lib = engine.lib
        status = lib.espeak_SetVoiceByName(voice.encode("utf-8"))
        if status == _EE_NOT_FOUND:
            raise ValueError(f"espeak-ng has no voice named {voice!r} (try 'en-us' or 'en-gb')")
        if status != _EE_OK:
            raise SpeechSynthesisError(f"espeak_SetVoiceByName({voice!r}) failed: {status}")
        # Set both on every call: these are globals, and the previous caller may have changed them.
        lib.espeak_SetParameter(_PARAM_RATE, words_per_minute, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, DEFAULT_PITCH if pitch is None else pitch, 0)

        engine.chunks.clear()
        try:
            status = lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != _EE_OK:
                raise SpeechSynthesisError(f"espeak_Synth failed with status {status}")
            lib.espeak_Synchronize()
            pcm = np.concatenate(engine.chunks) if engine.chunks else np.zeros(0, dtype=np.int16)
        finally:
            engine.chunks.clear()
        return pcm, engine.sample_rate


def _check_rate_and_pitch(words_per_minute: int, pitch: int | None) -> None:
    """Validate espeak parameters up front, because espeak clamps bad values silently.

    Args:
        words_per_minute: Speaking rate in words per minute.
        pitch: Base pitch on espeak's 0-100 scale, or ``None``.

    Raises:
        ValueError: If either is out of espeak's range.
    """
    if not MIN_WORDS_PER_MINUTE <= words_per_minute <= MAX_WORDS_PER_MINUTE:
        raise ValueError(
            f"words_per_minute={words_per_minute!r} is outside espeak-ng's range "
            f"{MIN_WORDS_PER_MINUTE}-{MAX_WORDS_PER_MINUTE}"
        )
    if pitch is not None and not 0 <= pitch <= 100:
        raise ValueError(f"pitch={pitch!r} is outside espeak-ng's range 0-100")


class EspeakTTS(tts.TTS[Literal["metrics_collected", "error"]]):
    """A ``livekit.agents`` TTS plugin that speaks with espeak-ng, fully offline.

    Non-streaming: the agent pipeline sends it one sentence at a time (livekit wraps
    non-streaming TTS in a sentence-splitting ``StreamAdapter``). Audio is mono 22050 Hz PCM.

    Example:
        >>> session = AgentSession(tts=EspeakTTS(), ...)
    """

    def __init__(
        self,
        *,
        voice: str = DEFAULT_VOICE,
        words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
        pitch: int | None = None,
    ) -> None:
        """Create the plugin; the library itself loads on first use (or :meth:`prewarm`).

        Args:
            voice: espeak-ng voice name, e.g. ``"en-us"``.
            words_per_minute: Speaking rate in words per minute, from 80 to 450.
            pitch: Base pitch on espeak's 0-100 scale; ``None`` for the default (50).

        Raises:
            ValueError: If the rate or pitch is out of range.
        """
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        _check_rate_and_pitch(words_per_minute, pitch)
        self._voice = voice
        self._words_per_minute = words_per_minute
        self._pitch = pitch

    @property
    def model(self) -> str:
        """The engine name, ``"espeak-ng"``."""
        return "espeak-ng"

    @property
    def provider(self) -> str:
        """The provider name, ``"offline"``."""
        return "offline"

    @property
    def voice(self) -> str:
        """The espeak-ng voice name."""
        return self._voice

    @property
    def words_per_minute(self) -> int:
        """Speaking rate in words per minute."""
        return self._words_per_minute

    def prewarm(self) -> None:
        """Load espeak-ng now (a few milliseconds) so the first sentence pays nothing.

        Errors are not raised here; the first :meth:`synthesize` reports them.
        """
        try:
            with _LOCK:
                _load_engine()
        except SpeechSynthesisError:
            pass

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        """Start synthesising ``text``; iterate the result for ``SynthesizedAudio`` events.

        Args:
            text: The text to speak.
            conn_options: Retry and timeout options (timeout in seconds). Failures here are
                never transient, so they are not retried.

        Returns:
            The stream of synthesised audio.
        """
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    """One :meth:`EspeakTTS.synthesize` request."""

    _tts: EspeakTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        """Synthesise the whole text off the event loop, then emit it as PCM.

        Args:
            output_emitter: Where the audio goes; livekit re-chunks it into frames.

        Raises:
            APIConnectionError: If synthesis fails (never retryable: it would fail again).
        """
        output_emitter.initialize(
            request_id=utils.shortuuid("espeak_"),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        # livekit accepts a blank request with no audio (it only complains when non-blank
        # text yields none), so mirror a cloud TTS instead of raising on it.
        if not self._input_text.strip():
            return
        try:
            pcm, rate = await asyncio.to_thread(
                synthesize_speech,
                self._input_text,
                voice=self._tts.voice,
                words_per_minute=self._tts.words_per_minute,
                pitch=self._tts._pitch,
            )
        except (ValueError, SpeechSynthesisError) as e:
            raise APIConnectionError(f"espeak-ng synthesis failed: {e}", retryable=False) from e
        if rate != SAMPLE_RATE:
            raise APIConnectionError(
                f"espeak-ng produced {rate} Hz audio, expected {SAMPLE_RATE} Hz", retryable=False
            )
        output_emitter.push(pcm.tobytes())
        output_emitter.flush()
