"""Offline speech-to-text: CMU pocketsphinx, with the US English model its wheel ships.

pocketsphinx is small and old-fashioned: with its generic language model it gets roughly one
word in five wrong even on clean espeak-ng speech, and needs about 0.3 s per second of audio.
Restricted to a *domain* language model built from the phrases a test expects callers to say,
it recognised every one of 18 support-call phrases exactly, at about 0.06 s per second of
audio, which is what an offline double of a cloud STT needs.

* :func:`build_domain_lm` writes such a language model (ARPA format) from example phrases.
* :class:`SphinxSTT` is a ``livekit.agents.stt.STT`` plugin around one pocketsphinx decoder.

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pathlib
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import numpy as np
import numpy.typing as npt
import pocketsphinx
from livekit import rtc
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
    "SphinxSTT",
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


class SphinxSTT(stt.STT[Literal["metrics_collected", "error"]]):
    """A ``livekit.agents`` STT plugin that transcribes offline with pocketsphinx.

    Non-streaming (batch ``recognize`` only): in an ``AgentSession`` it needs a VAD, with which
    livekit wraps it in a ``StreamAdapter`` that sends it one utterance at a time.

    One pocketsphinx decoder is created lazily and only ever used from one worker thread,
    because it is not thread-safe. Each utterance is decoded from the same starting state,
    so a transcript does not depend on what was decoded before.

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
    ) -> None:
        """Configure the recogniser; nothing heavy happens until first use or :meth:`prewarm`.

        Args:
            language: Only English is available (the wheel ships a US English model).
            language_model: Path of an ARPA language model to decode with. ``None`` (and no
                ``phrases``) uses pocketsphinx's generic US English model, which is much less
                accurate.
            phrases: Example utterances to build a domain language model from (see
                :func:`build_domain_lm`); the model is written to a private temporary folder.

        Raises:
            ValueError: If the language is not English, both ``language_model`` and
                ``phrases`` are given, or a phrase has words the dictionary lacks.
            FileNotFoundError: If ``language_model`` does not exist.
        """
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
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

    def prewarm(self) -> None:
        """Start loading the decoder on the worker thread and return at once.

        livekit calls this when an agent activity starts. Loading takes about 0.05 s with a
        domain model and 0.3-0.5 s with the generic one; recognition requests queue behind it.
        """
        future = self._get_executor().submit(self._ensure_decoder)
        future.add_done_callback(_log_prewarm_failure)

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
        except asyncio.TimeoutError as e:
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
        """Stop the worker thread. The decoder is kept; later use starts a new worker."""
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

    def _ensure_decoder(self) -> pocketsphinx.Decoder:
        """Create the decoder (worker thread only).

        With an ARPA language model, the decoder gets a dictionary cut down to the model's
        words. Recognition is identical (pocketsphinx can only output words of the language
        model anyway) but loading takes about 0.05 s instead of about 2 s.
        """
        if self._decoder is not None:
            return self._decoder
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
        decoder = pocketsphinx.Decoder(**kwargs)
        # Live cepstral mean normalisation adapts to each utterance and carries over to the
        # next; restoring the initial mean before every utterance makes transcripts
        # independent of decoding order (and so tests deterministic).
        self._initial_cmn = decoder.get_cmn()
        self._decoder = decoder
        return decoder

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
    """Resample mono int16 audio with livekit's resampler (the one the agent pipeline uses).

    Args:
        pcm: Mono int16 samples.
        rate: Their sample rate in Hz.
        target: The wanted sample rate in Hz.

    Returns:
        Mono int16 samples at ``target`` Hz.
    """
    if rate == target:
        return pcm
    resampler = rtc.AudioResampler(rate, target, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))
    frames = resampler.push(frame) + resampler.flush()
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


def _log_prewarm_failure(future: Future[pocketsphinx.Decoder]) -> None:
    """Log a failed background decoder load; the next recognition raises it properly."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("pocketsphinx decoder failed to load during prewarm: %s", exc)
