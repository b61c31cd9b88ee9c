"""Offline speech-to-text: CMU pocketsphinx, with the US English model its wheel ships.

pocketsphinx is small and old-fashioned: with its generic language model it gets roughly one
word in five wrong even on clean espeak-ng speech, and needs about 0.3 s per second of audio.
Restricted to a *domain* language model built from the phrases a test expects callers to say,
it recognised every one of 18 support-call phrases exactly, at about 0.03-0.06 s per second of
audio, which is what an offline double of a cloud STT needs.

* :func:`build_domain_lm` writes such a language model (ARPA format) from example phrases.
* :class:`SphinxSTT` is a ``livekit.agents.stt.STT`` plugin around pocketsphinx: a *streaming*
  recogniser (``stream()``) that decodes while the caller speaks, as cloud STTs do, plus the
  batch ``recognize()`` / :meth:`SphinxSTT.transcribe_pcm`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pocketsphinx
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APITimeoutError,
    stt,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from pocketsphinx.lm import ArpaBoLM

__all__ = [
    "DECODER_SAMPLE_RATE",
    "ENDPOINT_SILENCE_SECONDS",
    "SphinxSTT",
    "SphinxSpeechStream",
    "build_domain_lm",
    "dictionary_words",
    "normalize_phrase",
]

logger = logging.getLogger(__name__)

DECODER_SAMPLE_RATE = 16000
"""Sample rate (Hz) the bundled acoustic model was trained on; input is resampled to it."""

SILENCE_PADDING_SECONDS = 0.3
"""Silence (seconds) added before and after each utterance before decoding.

pocketsphinx mis-hears the first and last word of tightly cropped audio, because its
word-boundary search expects some silence around speech (measured on 18 espeak phrases: 3 of
54 utterances wrong unpadded, none with 0.1 s or more). Cloud STTs do not care, and VAD
segments usually carry some silence already, so padding keeps the double honest.
"""

NOISE_FLOOR_RMS = 32.0
"""RMS level (int16 units, about -60 dBFS) of the fixed noise added to audio before decoding.

pocketsphinx's features degenerate on *digital* silence (runs of exact zeros, which espeak-ng
produces between words and which the padding adds): a change of two units in the quietest
samples flipped "can i speak to a human" to "i the to a human". Real microphones always have a
noise floor and cloud STTs are indifferent to it, so the decoder gets one. Measured on 18
support phrases of espeak speech at 140 words per minute: word error rate 15 % -> 0 % with a
domain language model, and 76 % -> 22 % with the generic one. The noise comes from a fixed seed,
so the same audio always gives the same transcript.
"""

_NOISE_SEED = 20240229

FRAME_SECONDS = 0.01
"""Length (seconds) of the frames the streaming recogniser gates and feeds (160 samples)."""

_FRAME_SAMPLES = int(DECODER_SAMPLE_RATE * FRAME_SECONDS)

LIVE_CMN_PRIOR = "54.2,1.8,-5.7,16.3,-10.9,-1.1,1.6,-16.0,-5.0,-10.1,6.1,-1.4,-6.2"
"""Cepstral mean (13 MFCC coefficients) a streamed utterance's own mean is measured against.

Batch decoding normalises an utterance with its own cepstral mean. pocketsphinx's live
normalisation instead uses the mean it starts the utterance with (it only updates it every 8 s
or at the end), and the acoustic model's default (``40,3,-1,0,...``) is far from telephone-level
speech: streamed from it, "one" came out as "want a" in 2 of 8 support phrases. So a stream
first measures the mean of the utterance's first :data:`CMN_WINDOW_SECONDS` (see there), on
top of this prior: the mean pocketsphinx converges to on espeak-ng speech at about -20 dBFS
after the 48 kHz call path with the :data:`NOISE_FLOOR_RMS` floor. Each utterance starts from
the same prior, so a transcript does not depend on what the stream heard before.
"""

CMN_WINDOW_SECONDS = 1.0
"""Audio (seconds, preroll included) whose cepstral mean a streamed utterance is normalised with.

The search of an utterance starts once this much of it is buffered (or at its end, if shorter)
and then catches up in a few tens of milliseconds. Measured on 12 support phrases (24 decodes
per condition), streamed decoding with it was as accurate as batch decoding: no errors clean,
after an Opus round trip, with pink noise at 15 dB or white noise at 10 dB SNR, or 20 dB
quieter; the same on a telephone band (WER 0.11) and about the same 35 dB quieter (0.21,
batch 0.19); better in babble at 10 dB (0.20, batch 0.95). With the prior alone it missed
words with white noise (WER 0.19), a telephone band (0.15) and quiet speech (0.76).
"""

SPEECH_GATE_DBFS = -60.0
"""Level (dBFS, RMS of a 10 ms frame) below which the streaming recogniser hears no speech.

The gate only decides where an utterance starts and when the recogniser's own endpointing
sees silence; it does not cut words out (a preroll of :data:`SILENCE_PADDING_SECONDS` goes in
front of the first loud frame). A frame must also be :data:`SPEECH_GATE_ABOVE_BACKGROUND_DB`
above the tracked background level, so steady noise does not hold an utterance open forever.
"""

SPEECH_GATE_ABOVE_BACKGROUND_DB = 10.0
"""How far (dB) above the background level a frame must be to count as speech."""

_BACKGROUND_RISE_DB_PER_FRAME = 0.05  # the background estimate follows a louder floor at 5 dB/s
_ONSET_FRAMES = 3  # consecutive loud frames (30 ms) that start an utterance; clicks do not
_CMN_PRIOR_FRAMES = 500  # the weight (frames) pocketsphinx's set_cmn gives a mean (CMN_WIN)

ENDPOINT_SILENCE_SECONDS = 0.6
"""Default silence (seconds, by the level gate) after which a stream finalises on its own.

In an ``AgentSession`` with a VAD, the session flushes the stream when the VAD ends the speech,
which with sensible VAD settings comes first; this own endpoint is what a cloud STT's
end-of-utterance detection does, and what ends turns with ``turn_detection="stt"``.
"""

MAX_UTTERANCE_SECONDS = 30.0
"""A streamed utterance is finalised after this long (seconds) even if speech goes on."""

INTERIM_INTERVAL_SECONDS = 0.2
"""How often (seconds of audio) a stream checks its partial hypothesis for an interim result."""

_MODEL_DIR = pathlib.Path(pocketsphinx.get_model_path()) / "en-us"
_ACOUSTIC_MODEL = _MODEL_DIR / "en-us"
_DICTIONARY = _MODEL_DIR / "cmudict-en-us.dict"

# Curly apostrophes are common in pasted text; the dictionary uses the ASCII one.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# Anything but letters, digits, apostrophes and whitespace separates words. Digits are kept so
# that "order 1234" fails loudly (the dictionary has no digits) instead of silently losing "1234".
_SEPARATORS = re.compile(r"[^\w'\s]|_")
_LM_SENTINELS = frozenset({"<s>", "</s>", "<unk>", "<UNK>"})


@functools.lru_cache(maxsize=1)
def dictionary_words() -> frozenset[str]:
    """The words of the bundled pronunciation dictionary (CMUdict, about 135,000 words).

    Returns:
        Lowercase words, alternative pronunciations folded (``"read(2)"`` -> ``"read"``).
    """
    words = set()
    with open(_DICTIONARY, encoding="utf-8") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            words.add(head.split("(", 1)[0])
    return frozenset(words)


def normalize_phrase(phrase: str) -> str:
    """Normalise a phrase the way the language model and the transcripts spell it.

    Lowercases, turns punctuation (except apostrophes inside words) into word breaks and
    collapses whitespace: ``"Where's my order?"`` -> ``"where's my order"``.

    Args:
        phrase: Any text.

    Returns:
        The normalised phrase; may be empty.
    """
    text = _SEPARATORS.sub(" ", phrase.translate(_APOSTROPHES).lower())
    words = []
    for word in text.split():
        # Quotes around a word ('hello') are not part of it, but "'cause" is a dictionary word.
        if word not in dictionary_words():
            word = word.strip("'")
        if word:
            words.append(word)
    return " ".join(words)


def build_domain_lm(phrases: Iterable[str], path: str | os.PathLike[str]) -> pathlib.Path:
    """Write a trigram language model (ARPA format) covering ``phrases``.

    Decoding with it restricts pocketsphinx to the words of these phrases, and favours their
    word order, which makes recognition of them reliable. Other word sequences of the same
    words are still possible (it backs off to bigrams and unigrams).

    Args:
        phrases: Example utterances, one per item. They are normalised with
            :func:`normalize_phrase`; spell numbers out ("one two three"), since the
            dictionary has no digits.
        path: Where to write the model (``.lm`` or ``.arpa``); parent folders must exist.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        TypeError: If ``phrases`` is a single string.
        ValueError: If no phrase contains a word, or some words are not in the pronunciation
            dictionary. pocketsphinx would silently drop such words from the model, so they
            could never be recognised, which is much harder to debug than this error.
    """
    if isinstance(phrases, str):
        # A lone string would be iterated character by character into a model of letters.
        raise TypeError("phrases must be an iterable of phrases, not a single string")
    normalized = [n for n in (normalize_phrase(p) for p in phrases) if n]
    if not normalized:
        # ArpaBoLM.compute() calls sys.exit() on an empty corpus, which pytest reports badly.
        raise ValueError("build_domain_lm needs at least one phrase with words in it")
    known = dictionary_words()
    unknown = sorted({w for p in normalized for w in p.split() if w not in known})
    if unknown:
        raise ValueError(
            f"not in the pocketsphinx dictionary, so they could never be recognised: {unknown}. "
            "Spell numbers and symbols out as words and use common spellings."
        )
    # add_start=True wraps each phrase in <s> ... </s>; without it pocketsphinx refuses the
    # model ("does not contain </s>").
    model = ArpaBoLM(text="\n".join(normalized) + "\n", case="lower", add_start=True)
    model.compute()
    out = pathlib.Path(path)
    with open(out, "w", encoding="utf-8") as f:
        model.write(f)
    return out


def _arpa_vocabulary(path: pathlib.Path) -> frozenset[str] | None:
    """Read the unigram vocabulary of an ARPA language model.

    Args:
        path: The language model file.

    Returns:
        The words (sentence markers excluded), or ``None`` if the file is not ARPA text
        (for instance pocketsphinx's binary ``.lm.bin`` format).
    """
    words: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            in_unigrams = False
            seen_header = False
            for line in f:
                line = line.strip()
                if line == "\\data\\":
                    seen_header = True
                elif line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams:
                    if not line or line.startswith("\\"):
                        break
                    parts = line.split()
                    if len(parts) >= 2:
                        words.add(parts[1])
    except UnicodeDecodeError:
        return None
    if not seen_header or not in_unigrams:
        return None
    return frozenset(words - _LM_SENTINELS)


def _write_dictionary_subset(words: frozenset[str], path: pathlib.Path) -> list[str]:
    """Write the dictionary entries of ``words`` (all pronunciations) to ``path``.

    Args:
        words: The words to keep.
        path: The dictionary file to write.

    Returns:
        The words that have no entry, sorted.
    """
    found: set[str] = set()
    with open(_DICTIONARY, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        for line in src:
            word = line.split(" ", 1)[0].split("(", 1)[0]
            if word in words:
                dst.write(line)
                found.add(word)
    return sorted(words - found)

#: livekit-agents 1.8.9 added STTCapabilities.manual_flush (the session flushes the stream at
#: the VAD's end of speech); before it, the stream finalises after endpoint_silence alone.
_MANUAL_FLUSH: dict[str, Any] = (
    {"manual_flush": True} if "manual_flush" in stt.STTCapabilities.__dataclass_fields__ else {}
)
#: livekit-agents 1.7.1 added SpeechEvent.speech_end_time (the turn is timed from it).
_HAS_SPEECH_END_TIME = "speech_end_time" in stt.SpeechEvent.__dataclass_fields__


class SphinxSTT(stt.STT[Literal["metrics_collected", "error"]]):
    """A ``livekit.agents`` STT plugin that transcribes offline with pocketsphinx.

    Streaming, like a cloud STT: :meth:`stream` decodes audio as it arrives (see
    :class:`SphinxSpeechStream`), so when the caller stops, the final transcript is ready
    within a few milliseconds instead of after decoding the whole utterance. In an
    ``AgentSession`` with a VAD, the session flushes the stream when the VAD ends the speech
    (``manual_flush``), and the flush finalises the utterance. ``recognize()`` and
    :meth:`transcribe_pcm` decode a whole buffer at once.

    pocketsphinx decoders are not thread-safe: the batch decoder is only used from one worker
    thread, and each stream owns a decoder, used only from the stream's own worker thread,
    while it runs (idle decoders are kept for the next stream). Each utterance is decoded from
    the same starting state, so a transcript does not depend on what was decoded before.

    Example:
        >>> stt = SphinxSTT(phrases=["where is my order", "can i speak to a human"])
        >>> stt.transcribe_pcm(*synthesize_speech("where is my order"))
        'where is my order'
    """

    def __init__(
        self,
        *,
        language: str = "en-US",
        language_model: str | os.PathLike[str] | None = None,
        phrases: Iterable[str] | None = None,
        interim_results: bool = False,
        endpoint_silence: float | None = ENDPOINT_SILENCE_SECONDS,
    ) -> None:
        """Configure the recogniser; nothing heavy happens until first use or :meth:`prewarm`.

        Args:
            language: Only English is available (the wheel ships a US English model).
            language_model: Path of an ARPA language model to decode with. ``None`` (and no
                ``phrases``) uses pocketsphinx's generic US English model, which is much less
                accurate.
            phrases: Example utterances to build a domain language model from (see
                :func:`build_domain_lm`); the model is written to a private temporary folder.
            interim_results: Streams emit ``INTERIM_TRANSCRIPT`` events with the partial
                hypothesis (checked every :data:`INTERIM_INTERVAL_SECONDS` of audio) while the
                caller speaks. Off by default: for a sound outside the language model (a
                backchannel "mm-hmm") pocketsphinx's partial hypotheses are strings of model
                words ("human you two") that a cloud STT would not produce, and an agent's
                ``min_words`` interruption counts interim words, so they cut off agents that
                a real STT would not.
            endpoint_silence: Seconds of silence (by the stream's level gate) after which a
                stream finalises an utterance by itself, as a cloud STT's endpointing does;
                ``None`` finalises only on ``flush()`` / ``end_input()``. See
                :data:`ENDPOINT_SILENCE_SECONDS`.

        Raises:
            ValueError: If the language is not English, both ``language_model`` and
                ``phrases`` are given, a phrase has words the dictionary lacks, or
                ``endpoint_silence`` is not positive.
            FileNotFoundError: If ``language_model`` does not exist.
        """
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True, interim_results=interim_results, **_MANUAL_FLUSH
            )
        )
        if endpoint_silence is not None and not endpoint_silence > 0:
            raise ValueError(f"endpoint_silence must be a positive number of seconds or None, got {endpoint_silence}")
        self._endpoint_silence = endpoint_silence
        self._language = LanguageCode(language)
        if self._language.language != "en":
            raise ValueError(
                f"SphinxSTT only recognises English (the model pocketsphinx ships); got language={language!r}"
            )
        if language_model is not None and phrases is not None:
            raise ValueError("pass either language_model or phrases to SphinxSTT, not both")

        # Holds the domain model and the matching dictionary; removed when this object is
        # garbage-collected or at exit. Not in aclose(): the object stays usable after it.
        self._workdir: pathlib.Path | None = None
        self._language_model: pathlib.Path | None = None
        if phrases is not None:
            # Built here, not lazily, so unknown words fail at construction, where the test
            # author looks, and not inside the agent's pipeline.
            self._language_model = build_domain_lm(phrases, self._get_workdir() / "domain.lm")
        elif language_model is not None:
            self._language_model = pathlib.Path(language_model)
            if not self._language_model.is_file():
                raise FileNotFoundError(f"language model not found: {self._language_model}")

        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # Only touched from the worker thread.
        self._decoder: pocketsphinx.Decoder | None = None
        self._initial_cmn: str | None = None
        # Decoder settings, computed once (writes the dictionary subset); any thread.
        self._decoder_kwargs_cache: dict[str, object] | None = None
        self._decoder_kwargs_lock = threading.Lock()
        # Idle streaming decoders, and the prewarm that fills the pool; any thread.
        self._live_decoders: list[pocketsphinx.Decoder] = []
        self._live_lock = threading.Lock()
        self._live_prewarm: Future[None] | None = None
        self._streams: weakref.WeakSet[SphinxSpeechStream] = weakref.WeakSet()

    @property
    def model(self) -> str:
        """The engine and language model, e.g. ``"pocketsphinx/domain.lm"``."""
        name = self._language_model.name if self._language_model else "en-us.lm.bin"
        return f"pocketsphinx/{name}"

    @property
    def provider(self) -> str:
        """The provider name, ``"offline"``."""
        return "offline"

    @property
    def language_model(self) -> pathlib.Path | None:
        """The ARPA language model in use, or ``None`` for pocketsphinx's generic one."""
        return self._language_model

    @property
    def endpoint_silence(self) -> float | None:
        """Seconds of silence after which a stream finalises by itself (``None``: only on flush)."""
        return self._endpoint_silence

    def prewarm(self) -> None:
        """Start loading a streaming decoder on the worker thread and return at once.

        livekit calls this when an agent activity starts, just before it opens a stream.
        Loading takes about 0.05 s with a domain model and 0.3-0.5 s with the generic one; a
        stream opened meanwhile waits for it. The batch decoder loads on first ``recognize()``.
        """
        with self._live_lock:
            if self._live_prewarm is not None or self._live_decoders:
                return
            future: Future[None] = self._get_executor().submit(self._prewarm_live_decoder)
            self._live_prewarm = future
        future.add_done_callback(_log_prewarm_failure)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SphinxSpeechStream:
        """Open a streaming recognition (see :class:`SphinxSpeechStream`).

        Args:
            language: Requested language; only English is available.
            conn_options: Retry settings livekit applies if decoding fails.

        Returns:
            The stream: push frames (any rate and channel count), ``flush()`` to finalise the
            current utterance, iterate it for speech events.

        Raises:
            ValueError: If another language is requested.
        """
        lang = self._language
        if utils.is_given(language) and language:
            lang = LanguageCode(language)
            if lang.language != "en":
                raise ValueError(f"SphinxSTT only recognises English; got language={language!r}")
        stream = SphinxSpeechStream(stt=self, language=lang, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    def transcribe_pcm(self, pcm: npt.NDArray[np.int16], sample_rate: int) -> str:
        """Transcribe audio synchronously (blocks until done).

        Args:
            pcm: int16 samples, mono (1-D) or interleaved channels as ``(samples, channels)``.
            sample_rate: Sample rate of ``pcm`` in Hz.

        Returns:
            The transcript: lowercase words separated by single spaces; empty for silence.

        Raises:
            TypeError: If ``pcm`` is not int16.
            ValueError: If ``pcm`` has more than two dimensions or ``sample_rate`` is not positive.
        """
        return self._submit(pcm, sample_rate).result()[0]

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        """Transcribe one utterance (livekit's ``recognize`` calls this).

        Args:
            buffer: The utterance, one frame or a list of frames (any rate and channel count).
            language: Requested language; only English is available.
            conn_options: Only ``timeout`` (seconds) applies; decoding is local.

        Returns:
            A ``FINAL_TRANSCRIPT`` event whose one alternative carries the transcript and
            pocketsphinx's posterior probability of it as ``confidence`` (0-1; low on long
            utterances even when right).

        Raises:
            ValueError: If another language is requested.
            APITimeoutError: If decoding takes longer than ``conn_options.timeout``.
            APIConnectionError: If pocketsphinx fails.
        """
        lang = self._language
        if utils.is_given(language) and language:
            lang = LanguageCode(language)
            if lang.language != "en":
                raise ValueError(f"SphinxSTT only recognises English; got language={language!r}")

        frames = buffer if isinstance(buffer, list) else [buffer]
        if frames:
            frame = utils.merge_frames(frames)
            pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
            rate = frame.sample_rate
        else:
            pcm, rate = np.zeros((0, 1), dtype=np.int16), DECODER_SAMPLE_RATE

        try:
            text, confidence = await asyncio.wait_for(
                asyncio.wrap_future(self._submit(pcm, rate)), timeout=conn_options.timeout
            )
        except TimeoutError as e:
            raise APITimeoutError(
                f"pocketsphinx took longer than {conn_options.timeout} s", retryable=False
            ) from e
        except RuntimeError as e:  # pocketsphinx reports its failures as RuntimeError
            raise APIConnectionError(f"pocketsphinx failed: {e}", retryable=False) from e

        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("sphinx_"),
            alternatives=[stt.SpeechData(language=lang, text=text, confidence=confidence)],
        )

    async def aclose(self) -> None:
        """Close open streams and stop the worker thread.

        The decoders are kept; later use starts a new worker.
        """
        loop = asyncio.get_running_loop()
        streams = [s for s in self._streams if s._open_in(loop)]
        if streams:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting keeps a still-running decode from overlapping one on a new worker.
            await asyncio.to_thread(executor.shutdown, wait=True)

    # -- internals ------------------------------------------------------------------------------
    def _get_workdir(self) -> pathlib.Path:
        """The private temporary folder, created on first use."""
        if self._workdir is None:
            self._workdir = pathlib.Path(tempfile.mkdtemp(prefix="pytest_livekit_sphinx_"))
            # weakref.finalize, not TemporaryDirectory: the latter emits a ResourceWarning
            # when cleaned up implicitly, which strict test suites turn into errors.
            weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        return self._workdir

    def _get_executor(self) -> ThreadPoolExecutor:
        """The single worker thread that owns the decoder."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sphinx")
            return self._executor

    def _submit(self, pcm: npt.NDArray[np.int16], sample_rate: int) -> Future[tuple[str, float]]:
        """Validate audio and queue its transcription on the worker thread."""
        if pcm.dtype != np.int16:
            raise TypeError(f"pcm must be int16 samples, got dtype {pcm.dtype}")
        if pcm.ndim > 2:
            raise ValueError(f"pcm must be 1-D (mono) or (samples, channels); got {pcm.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        return self._get_executor().submit(self._transcribe, pcm, sample_rate)

    def _decoder_kwargs(self) -> dict[str, object]:
        """The pocketsphinx settings of every decoder (any thread; computed once).

        With an ARPA language model, decoders get a dictionary cut down to the model's words.
        Recognition is identical (pocketsphinx can only output words of the language model
        anyway) but loading takes about 0.05 s instead of about 2 s.
        """
        with self._decoder_kwargs_lock:
            if self._decoder_kwargs_cache is not None:
                return dict(self._decoder_kwargs_cache)
            # "ERROR" keeps pocketsphinx's chatty INFO log off stderr but shows real problems.
            kwargs: dict[str, object] = {"samprate": DECODER_SAMPLE_RATE, "loglevel": "ERROR"}
            if self._language_model is not None:
                kwargs["lm"] = str(self._language_model)
                vocabulary = _arpa_vocabulary(self._language_model)
                if vocabulary:
                    dict_path = self._get_workdir() / f"{self._language_model.stem}.dict"
                    missing = _write_dictionary_subset(vocabulary, dict_path)
                    if missing:
                        logger.warning(
                            "%d words of %s are not in the pocketsphinx dictionary and can never "
                            "be recognised: %s",
                            len(missing),
                            self._language_model,
                            missing[:20],
                        )
                    kwargs["dict"] = str(dict_path)
            self._decoder_kwargs_cache = kwargs
            return dict(kwargs)

    def _ensure_decoder(self) -> pocketsphinx.Decoder:
        """Create the batch decoder (worker thread only)."""
        if self._decoder is not None:
            return self._decoder
        decoder = pocketsphinx.Decoder(**self._decoder_kwargs())
        # Live cepstral mean normalisation adapts to each utterance and carries over to the
        # next; restoring the initial mean before every utterance makes transcripts
        # independent of decoding order (and so tests deterministic).
        self._initial_cmn = decoder.get_cmn()
        self._decoder = decoder
        return decoder

    def _new_live_decoder(self) -> pocketsphinx.Decoder:
        """Create a streaming decoder (any thread).

        No second "fwdflat" search pass: pocketsphinx runs that over the whole utterance at
        ``end_utt()``, 10-15 ms per second of audio, which would delay every final
        transcript by an amount growing with the utterance; the first pass plus the lattice
        best path ("bestpath", about 2 ms) was as accurate on the support phrases.
        """
        return pocketsphinx.Decoder(fwdflat=False, **self._decoder_kwargs())

    def _prewarm_live_decoder(self) -> None:
        """Load one streaming decoder into the idle pool (worker thread)."""
        decoder = self._new_live_decoder()
        with self._live_lock:
            self._live_decoders.append(decoder)

    def _take_live_decoder(self) -> pocketsphinx.Decoder:
        """Take an idle streaming decoder, or create one (a stream's worker thread).

        Waits for a running prewarm first, so that its decoder is used, not loaded twice.
        """
        with self._live_lock:
            prewarm = self._live_prewarm
        if prewarm is not None:
            try:
                prewarm.result()
            except Exception:  # already logged; load a decoder here instead
                pass
        with self._live_lock:
            self._live_prewarm = None
            if self._live_decoders:
                return self._live_decoders.pop()
        return self._new_live_decoder()

    def _return_live_decoder(self, decoder: pocketsphinx.Decoder) -> None:
        """Give a streaming decoder back to the idle pool (its stream is done with it)."""
        with self._live_lock:
            self._live_decoders.append(decoder)

    def _transcribe(self, pcm: npt.NDArray[np.int16], sample_rate: int) -> tuple[str, float]:
        """Downmix, resample, pad and decode (worker thread only).

        Args:
            pcm: int16 samples, 1-D or ``(samples, channels)``.
            sample_rate: Sample rate of ``pcm`` in Hz.

        Returns:
            ``(transcript, confidence)``, confidence being the posterior probability (0-1).
        """
        decoder = self._ensure_decoder()
        mono = _to_mono(pcm)
        if mono.size == 0:
            return "", 0.0
        audio = _resample(mono, sample_rate, DECODER_SAMPLE_RATE)
        pad = np.zeros(int(SILENCE_PADDING_SECONDS * DECODER_SAMPLE_RATE), dtype=np.int16)
        audio = _add_noise_floor(np.concatenate([pad, audio, pad]))

        assert self._initial_cmn is not None
        decoder.set_cmn(self._initial_cmn)
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None:
            return "", 0.0
        return " ".join(hyp.hypstr.split()), float(min(max(hyp.prob, 0.0), 1.0))


class SphinxSpeechStream(stt.RecognizeStream):
    """A streaming recognition of :class:`SphinxSTT` (create it with ``SphinxSTT.stream()``).

    Frames are resampled to 16 kHz and handed, in order, to a worker thread of the stream's
    own, which owns one pocketsphinx decoder; the event loop never waits for pocketsphinx.
    On that thread a level gate (:data:`SPEECH_GATE_DBFS`) finds where speech starts; the
    utterance's first :data:`CMN_WINDOW_SECONDS` give its cepstral mean, and from there each
    10 ms frame goes straight into the decoder, which searches as the audio arrives.
    Finalising is then only the end of the search plus its best path through the lattice: a
    few milliseconds, whatever the utterance's length. Measured on a busy 2-core machine:
    decoding takes 0.03-0.07 s of CPU per second of audio (what a batch decode takes, spread
    over the utterance); after the flush, a 3 s utterance needs about 3 ms of decoder work and
    its final transcript arrives 5-15 ms later, where a batch decode of it takes 0.15-0.25 s.

    Events of one utterance, in order:

    * ``START_OF_SPEECH`` when the gate opens (a preroll of :data:`SILENCE_PADDING_SECONDS`
      before the first loud frame is decoded too; a short tail of silence is added at the end
      if the audio has less);
    * ``INTERIM_TRANSCRIPT`` whenever the partial hypothesis changes (if the STT was made
      with ``interim_results=True``);
    * on ``flush()`` / ``end_input()``, after :attr:`SphinxSTT.endpoint_silence` seconds of
      silence, or after :data:`MAX_UTTERANCE_SECONDS`: ``RECOGNITION_USAGE`` (the seconds of
      audio decoded), ``FINAL_TRANSCRIPT`` (possibly empty text; an ``INTERIM_TRANSCRIPT``
      with empty text first withdraws a non-empty interim), and ``END_OF_SPEECH``.

    A flush while no utterance is open emits an empty ``FINAL_TRANSCRIPT``, so whoever asked
    for it (a manual ``commit_user_turn``) is not left waiting. Times in the transcripts
    (``start_time``, ``end_time``: the gate's first and last loud frame) are seconds since the
    stream's input started, plus ``start_time_offset``.
    """

    def __init__(
        self,
        *,
        stt: SphinxSTT,
        language: LanguageCode,
        conn_options: APIConnectOptions,
    ) -> None:
        """Create the stream; its worker thread starts with the first frame.

        Args:
            stt: The recogniser that owns the decoders and settings.
            language: Language reported in the transcripts.
            conn_options: Retry settings of ``livekit.agents.stt.RecognizeStream``.
        """
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=DECODER_SAMPLE_RATE)
        self._sphinx = stt
        self._language = language

    def _open_in(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the stream still runs, on ``loop`` (streams of other loops are left alone)."""
        return self._task.get_loop() is loop and not self._task.done()

    async def _run(self) -> None:
        """Feed frames and flushes to the worker thread in order; forward its events."""
        loop = asyncio.get_running_loop()
        failure: asyncio.Future[None] = loop.create_future()
        recognizer = _LiveRecognizer(
            self._sphinx,
            language=self._language,
            endpoint_silence=self._sphinx.endpoint_silence,
            interim_results=self._sphinx.capabilities.interim_results,
        )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sphinx-stream")

        def deliver(events: list[stt.SpeechEvent]) -> None:
            if self._event_ch.closed:
                return
            offset = self.start_time_offset
            for event in events:
                for alternative in event.alternatives:
                    alternative.start_time += offset
                    alternative.end_time += offset
                self._event_ch.send_nowait(event)

        def fail(exc: BaseException) -> None:
            if not failure.done():
                failure.set_exception(exc)

        def job(step: Callable[[], list[stt.SpeechEvent]]) -> None:
            try:
                events = step()
            except Exception as e:
                _call_soon(loop, fail, e)
                return
            if events:
                _call_soon(loop, deliver, events)

        try:
            async for item in self._input_ch:
                if failure.done():
                    break
                if isinstance(item, self._FlushSentinel):
                    executor.submit(job, recognizer.flush)
                else:
                    pcm = _to_mono(np.frombuffer(item.data, dtype=np.int16).reshape(-1, item.num_channels))
                    executor.submit(job, functools.partial(recognizer.feed, pcm))
            # Every step queued before this barrier has run and its events are delivered
            # (they were scheduled on the loop before the barrier's own completion).
            barrier = asyncio.wrap_future(executor.submit(_nothing))
            await asyncio.wait([barrier, failure], return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                exc = failure.exception()
                if isinstance(exc, RuntimeError):  # pocketsphinx reports failures this way
                    raise APIConnectionError(f"pocketsphinx failed: {exc}", retryable=False) from exc
                if exc is not None:
                    raise exc
        finally:
            if not failure.done():
                failure.cancel()
            # Runs after the queued steps: ends any open utterance and returns the decoder.
            closed = asyncio.wrap_future(executor.submit(recognizer.close))
            executor.shutdown(wait=False)
            # Also when cancelled (aclose): the decoder is back in the pool once this returns.
            await asyncio.shield(closed)


class _LiveRecognizer:
    """The decoding state of one stream: gate, preroll, open utterance (worker thread only)."""

    def __init__(
        self,
        owner: SphinxSTT,
        *,
        language: LanguageCode,
        endpoint_silence: float | None,
        interim_results: bool,
    ) -> None:
        """Set up the state; the decoder is taken from ``owner`` on first use.

        Args:
            owner: The recogniser whose decoder pool is used.
            language: Language reported in the transcripts.
            endpoint_silence: Seconds of gate silence that finalise an utterance, or ``None``.
            interim_results: Whether to emit interim transcripts.
        """
        self._owner = owner
        self._language = language
        self._interim_results = interim_results
        self._endpoint_frames = (
            math.ceil(endpoint_silence / FRAME_SECONDS) if endpoint_silence is not None else None
        )
        self._pad_frames = round(SILENCE_PADDING_SECONDS / FRAME_SECONDS)
        self._interim_frames = max(1, round(INTERIM_INTERVAL_SECONDS / FRAME_SECONDS))
        self._max_frames = round(MAX_UTTERANCE_SECONDS / FRAME_SECONDS)
        self._cmn_window_frames = round(CMN_WINDOW_SECONDS / FRAME_SECONDS)
        self._decoder: pocketsphinx.Decoder | None = None
        self._pending = np.zeros(0, dtype=np.int16)  # samples short of a whole frame
        self._preroll: collections.deque[npt.NDArray[np.int16]] = collections.deque(
            maxlen=self._pad_frames + _ONSET_FRAMES
        )
        self._frame_index = 0  # frames received so far (the stream's clock, 10 ms each)
        self._background_db: float | None = None
        self._loud_run = 0  # consecutive loud frames while no utterance is open
        # The open utterance (None when idle).
        self._utt: _Utterance | None = None

    # -- steps (each returns the events it produced) --------------------------------------------
    def feed(self, pcm: npt.NDArray[np.int16]) -> list[stt.SpeechEvent]:
        """Gate and decode 16 kHz mono samples (any count; a partial frame waits for more)."""
        events: list[stt.SpeechEvent] = []
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
        whole = len(pcm) - len(pcm) % _FRAME_SAMPLES
        self._pending = pcm[whole:]
        for start in range(0, whole, _FRAME_SAMPLES):
            self._feed_frame(pcm[start : start + _FRAME_SAMPLES], events)
        return events

    def flush(self) -> list[stt.SpeechEvent]:
        """Finalise the open utterance; with none open, report an empty final transcript."""
        if self._utt is not None:
            return self._finalize()
        return [
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                request_id=utils.shortuuid("sphinx_"),
                alternatives=[stt.SpeechData(language=self._language, text="")],
            )
        ]

    def close(self) -> None:
        """Abandon any open utterance and give the decoder back to the pool."""
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        utt, self._utt = self._utt, None
        if utt is not None and utt.buffered is None:  # an utterance is open in the decoder
            try:
                decoder.end_utt()
            except RuntimeError:
                return  # a decoder in an unknown state is not reused
        self._owner._return_live_decoder(decoder)

    # -- internals ------------------------------------------------------------------------------
    def _feed_frame(self, frame: npt.NDArray[np.int16], events: list[stt.SpeechEvent]) -> None:
        """Gate one 10 ms frame, open or feed the utterance, check endpoint and interim."""
        loud = self._gate(frame)
        index = self._frame_index
        self._frame_index += 1
        utt = self._utt
        if utt is None:
            self._preroll.append(frame)
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run >= _ONSET_FRAMES:
                self._open(onset=index - _ONSET_FRAMES + 1, events=events)
            return
        self._decode(frame)
        if loud:
            utt.last_loud = index
        if self._endpoint_frames is not None and index - utt.last_loud >= self._endpoint_frames:
            events.extend(self._finalize())
        elif utt.frames >= self._max_frames:
            events.extend(self._finalize())
        elif self._interim_results and utt.frames - utt.interim_checked >= self._interim_frames:
            utt.interim_checked = utt.frames
            self._interim(events)

    def _gate(self, frame: npt.NDArray[np.int16]) -> bool:
        """Whether a frame is loud enough to be speech; updates the background level."""
        power = float(np.mean(np.square(frame, dtype=np.float64)))
        level_db = 10.0 * math.log10(power / 32768.0**2) if power > 0 else -120.0
        background = self._background_db
        if background is None or level_db < background:
            background = level_db
        else:
            background = min(level_db, background + _BACKGROUND_RISE_DB_PER_FRAME)
        self._background_db = background
        return level_db > max(SPEECH_GATE_DBFS, background + SPEECH_GATE_ABOVE_BACKGROUND_DB)

    def _open(self, *, onset: int, events: list[stt.SpeechEvent]) -> None:
        """Start an utterance with the preroll (padded to full length with silence)."""
        if self._decoder is None:
            self._decoder = self._owner._take_live_decoder()
        preroll = list(self._preroll)
        self._preroll.clear()
        self._loud_run = 0
        missing = self._pad_frames + _ONSET_FRAMES - len(preroll)
        utt = _Utterance(onset=onset, last_loud=self._frame_index - 1)
        self._utt = utt
        if missing > 0:
            self._decode(np.zeros(missing * _FRAME_SAMPLES, dtype=np.int16))
        for frame in preroll:
            self._decode(frame)
        events.append(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH, request_id=utt.request_id))

    def _decode(self, pcm: npt.NDArray[np.int16]) -> None:
        """Add the noise floor to ``pcm`` (whole frames) and search it in the open utterance.

        The first :data:`CMN_WINDOW_SECONDS` are only buffered; then :meth:`_start_search`
        measures their cepstral mean and searches them, and later audio goes straight in.
        """
        utt = self._utt
        assert utt is not None and self._decoder is not None
        noise = utt.noise.standard_normal(len(pcm)) * NOISE_FLOOR_RMS
        noisy = np.clip(np.round(pcm + noise), -32768, 32767).astype(np.int16)
        utt.frames += len(pcm) // _FRAME_SAMPLES
        if utt.buffered is None:
            self._decoder.process_raw(noisy.tobytes(), full_utt=False)
            return
        utt.buffered.append(noisy)
        if utt.frames >= self._cmn_window_frames:
            self._start_search()

    def _start_search(self) -> None:
        """Measure the buffered audio's cepstral mean, then start the search with it."""
        utt = self._utt
        assert utt is not None and utt.buffered is not None and self._decoder is not None
        audio = np.concatenate(utt.buffered)
        utt.buffered = None
        decoder = self._decoder
        # A pass without search computes the features. The live mean then is the prior,
        # weighted as _CMN_PRIOR_FRAMES frames, plus these frames; solve for theirs alone.
        prior = np.array([float(x) for x in LIVE_CMN_PRIOR.split(",")])
        frames = len(audio) // _FRAME_SAMPLES
        decoder.set_cmn(LIVE_CMN_PRIOR)
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), no_search=True, full_utt=False)
        blended = np.array([float(x) for x in decoder.get_cmn(True).split(",")])
        decoder.end_utt()
        mean = ((_CMN_PRIOR_FRAMES + frames) * blended - _CMN_PRIOR_FRAMES * prior) / frames
        decoder.set_cmn(",".join(f"{x:.4f}" for x in mean))
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=False)

    def _interim(self, events: list[stt.SpeechEvent]) -> None:
        """Emit the partial hypothesis if it changed."""
        utt = self._utt
        assert utt is not None and self._decoder is not None
        if utt.buffered is not None:
            return  # not searching yet
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        if text and text != utt.interim:
            utt.interim = text
            events.append(self._transcript_event(stt.SpeechEventType.INTERIM_TRANSCRIPT, text, 0.0))

    def _finalize(self) -> list[stt.SpeechEvent]:
        """End the utterance: pad its tail with silence if short, end the search, report."""
        utt = self._utt
        assert utt is not None and self._decoder is not None
        trailing = self._frame_index - 1 - utt.last_loud
        if trailing < self._pad_frames:
            # pocketsphinx mis-hears a last word without silence after it (see the padding).
            self._decode(np.zeros((self._pad_frames - trailing) * _FRAME_SAMPLES, dtype=np.int16))
        if utt.buffered is not None:  # shorter than the mean's window: all of it is the window
            self._start_search()
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        confidence = float(min(max(hyp.prob, 0.0), 1.0)) if hyp is not None and text else 0.0
        events: list[stt.SpeechEvent] = []
        if utt.interim and not text:
            events.append(self._transcript_event(stt.SpeechEventType.INTERIM_TRANSCRIPT, "", 0.0))
        events.append(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                request_id=utt.request_id,
                recognition_usage=stt.RecognitionUsage(audio_duration=utt.frames * FRAME_SECONDS),
            )
        )
        events.append(self._transcript_event(stt.SpeechEventType.FINAL_TRANSCRIPT, text, confidence))
        # The gate's last loud frame ended this long ago (wall clock, for turn timing).
        silent_for = (self._frame_index - 1 - utt.last_loud) * FRAME_SECONDS
        end = stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=utt.request_id)
        if _HAS_SPEECH_END_TIME:  # livekit-agents 1.7.1+ times the turn from it
            end.speech_end_time = time.time() - silent_for
        events.append(end)
        self._utt = None
        return events

    def _transcript_event(
        self, kind: stt.SpeechEventType, text: str, confidence: float
    ) -> stt.SpeechEvent:
        """A transcript event of the open utterance (times in seconds of the stream)."""
        utt = self._utt
        assert utt is not None
        return stt.SpeechEvent(
            type=kind,
            request_id=utt.request_id,
            alternatives=[
                stt.SpeechData(
                    language=self._language,
                    text=text,
                    confidence=confidence,
                    start_time=utt.onset * FRAME_SECONDS,
                    end_time=(utt.last_loud + 1) * FRAME_SECONDS,
                )
            ],
        )


class _Utterance:
    """Book-keeping of one open streamed utterance (frame indices are the stream's clock)."""

    __slots__ = ("buffered", "frames", "interim", "interim_checked", "last_loud", "noise", "onset", "request_id")

    def __init__(self, *, onset: int, last_loud: int) -> None:
        """Start the book-keeping.

        Args:
            onset: Index of the first loud frame.
            last_loud: Index of the latest loud frame so far.
        """
        self.onset = onset
        self.last_loud = last_loud
        self.frames = 0  # frames decoded, preroll and padding included
        self.interim_checked = 0
        self.interim = ""
        self.request_id = utils.shortuuid("sphinx_")
        # Noisy audio held until the cepstral mean is measured; None once the search runs.
        self.buffered: list[npt.NDArray[np.int16]] | None = []
        # The same seed per utterance: the same audio always gives the same transcript.
        self.noise = np.random.default_rng(_NOISE_SEED)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """``loop.call_soon_threadsafe``, ignoring a loop that has closed meanwhile."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _nothing() -> None:
    """A no-op step, used as a barrier behind the queued ones."""


def _to_mono(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Average interleaved channels into one.

    Args:
        pcm: int16 samples, 1-D or ``(samples, channels)``.

    Returns:
        1-D int16 samples.
    """
    if pcm.ndim == 1:
        return pcm
    if pcm.shape[1] == 1:
        return pcm[:, 0]
    mixed: npt.NDArray[np.int16] = pcm.astype(np.int32).mean(axis=1).round().astype(np.int16)
    return mixed


def _add_noise_floor(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Add the fixed, deterministic noise floor (see :data:`NOISE_FLOOR_RMS`).

    Args:
        pcm: Mono int16 samples.

    Returns:
        The samples plus Gaussian noise of :data:`NOISE_FLOOR_RMS`, clipped to int16.
    """
    noise = np.random.default_rng(_NOISE_SEED).standard_normal(len(pcm)) * NOISE_FLOOR_RMS
    noisy: npt.NDArray[np.int16] = np.clip(np.round(pcm + noise), -32768, 32767).astype(np.int16)
    return noisy


def _resample(pcm: npt.NDArray[np.int16], rate: int, target: int) -> npt.NDArray[np.int16]:
    """Resample mono int16 audio with the plugin's one resampler (:func:`pytest_livekit.audio.resample`).

    Args:
        pcm: Mono int16 samples.
        rate: Their sample rate in Hz.
        target: The wanted sample rate in Hz.

    Returns:
        Mono int16 samples at ``target`` Hz.
    """
    if rate == target:
        return pcm
    from pytest_livekit.audio import float_to_pcm16, resample

    return float_to_pcm16(resample(pcm.astype(np.float64) / 32768.0, rate, target))


def _log_prewarm_failure(future: Future[None]) -> None:
    """Log a failed background decoder load; the next recognition raises it properly."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("pocketsphinx decoder failed to load during prewarm: %s", exc)
