"""Offline STT word error rate on the example suite: the suite's domain model vs the generic one.

What it measures: the caller phrases of the example suite (``example_suite/``), gathered exactly
as the plugin gathers a run's vocabulary (:class:`pytest_livekit.agent.vocabulary.SuiteVocabulary`:
the call types' ``script`` lines plus the literals the tests pass to ``say()``, ``barge_in()``,
``backchannel()`` and ``play(text=)``), are spoken with the offline espeak-ng TTS through the
caller's audio path (48 kHz, as ``LivekitCall.synthesize``), mixed with white or pink noise at
10 dB SNR by the plugin's own :class:`~pytest_livekit.conditions.media.Noise` (applied to the clip,
as a call applies it per turn), framed into 10 ms frames with silence around them, and
recognised by :class:`~pytest_livekit.offline.stt.SphinxSTT` with

* ``domain``: the run's domain language model (``SuiteVocabulary.build_model``), and
* ``generic``: pocketsphinx's open-vocabulary US English model (``model="generic"``).

Each utterance is decoded twice: streamed (``SphinxSTT.stream()``, as the agent's pipeline
uses it) and in one batch (``transcribe_pcm``). WER is the plugin's own
:func:`~pytest_livekit.metrics.turns.word_error_rate` per utterance, pooled over the cell:
(substitutions + deletions + insertions) / reference words. There is no livekit-server here,
so no Opus, WebRTC or VAD; it isolates the recogniser and the signal conditions.

The domain model is built from these very phrases: that is the point (a known vocabulary), and
it is why its WER is no estimate of a production STT's accuracy.

    python3 benchmarks/stt_vocabulary.py [--seeds 3] [--verbose]

Noisy cells use ``--seeds`` noise realisations per phrase (clean audio is deterministic: one).
Prints one table; all numbers are measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _table import print_grid  # noqa: E402  (benchmarks/ is sys.path[0])
from livekit import rtc  # noqa: E402
from livekit.agents import stt as lk_stt  # noqa: E402

from pytest_livekit.agent.vocabulary import DOMAIN_MODEL, GENERIC_MODEL, SuiteVocabulary  # noqa: E402
from pytest_livekit.audio import CALL_SAMPLE_RATE, float_to_pcm16, resample, to_mono_float  # noqa: E402
from pytest_livekit.conditions.media import Conditions, Noise  # noqa: E402
from pytest_livekit.metrics.thresholds import load_call_types  # noqa: E402
from pytest_livekit.metrics.turns import WordErrors, word_error_rate  # noqa: E402
from pytest_livekit.offline.stt import SphinxSTT  # noqa: E402
from pytest_livekit.offline.tts import synthesize_speech  # noqa: E402

SUITE = ROOT / "example_suite"
CONDITIONS: list[tuple[str, Noise | None]] = [
    ("clean", None),
    ("white 10 dB", Noise(snr_db=10, color="white")),
    ("pink 10 dB", Noise(snr_db=10, color="pink")),
]
LEAD_SILENCE_S = 0.5  # the microphone is silent before the caller speaks (the gate needs a floor)
TAIL_SILENCE_S = 1.0  # and after: long enough for the stream's own endpoint (0.6 s)
FRAME_SAMPLES = CALL_SAMPLE_RATE // 100  # 10 ms, as the caller publishes


@dataclass
class Cell:
    """The results of one model x condition."""

    stream: list[WordErrors] = field(default_factory=list)
    batch: list[WordErrors] = field(default_factory=list)
    audio_s: float = 0.0
    stream_s: float = 0.0
    batch_s: float = 0.0


def caller_audio(text: str) -> npt.NDArray[np.int16]:
    """``text`` as 48 kHz int16 caller audio (the path of ``LivekitCall.synthesize``)."""
    pcm, rate = synthesize_speech(text)
    return float_to_pcm16(resample(to_mono_float(pcm), rate, CALL_SAMPLE_RATE))


def with_silence(clip: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """The clip between the silent microphone frames around a caller turn."""
    lead = np.zeros(int(LEAD_SILENCE_S * CALL_SAMPLE_RATE), dtype=np.int16)
    tail = np.zeros(int(TAIL_SILENCE_S * CALL_SAMPLE_RATE), dtype=np.int16)
    return np.concatenate([lead, clip, tail])


async def transcribe_streamed(recognizer: SphinxSTT, pcm: npt.NDArray[np.int16]) -> str:
    """Push ``pcm`` into a stream in 10 ms frames, flush, and join its final transcripts."""
    stream = recognizer.stream()
    finals: list[str] = []

    async def read() -> None:
        async for event in stream:
            if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT and event.alternatives:
                finals.append(event.alternatives[0].text)

    reader = asyncio.create_task(read())
    padded = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES, dtype=np.int16)])
    for start in range(0, len(padded), FRAME_SAMPLES):
        chunk = padded[start : start + FRAME_SAMPLES]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), CALL_SAMPLE_RATE, 1, FRAME_SAMPLES))
    stream.flush()
    stream.end_input()
    await reader
    await stream.aclose()
    return " ".join(text for text in finals if text)


def pooled_wer(results: list[WordErrors]) -> float:
    """(S + D + I) / reference words over all utterances."""
    errors = sum(r.substitutions + r.deletions + r.insertions for r in results)
    words = sum(len(r.reference.split()) for r in results)
    return errors / words if words else 0.0


async def measure(
    vocab: SuiteVocabulary, cache: Path, seeds: int, verbose: bool
) -> dict[tuple[str, str], Cell]:
    """Decode every phrase under every condition with both models."""
    clips = {text: caller_audio(text) for text in vocab.texts}
    cells: dict[tuple[str, str], Cell] = {}
    for model in (DOMAIN_MODEL, GENERIC_MODEL):
        recognizer = vocab.make_stt(cache, model=model)
        try:
            recognizer.transcribe_pcm(with_silence(clips[vocab.texts[0]]), CALL_SAMPLE_RATE)  # load
            await transcribe_streamed(recognizer, with_silence(clips[vocab.texts[0]]))
            for label, noise in CONDITIONS:
                cell = cells[(model, label)] = Cell()
                for text, clip in clips.items():
                    for seed in range(1 if noise is None else seeds):
                        noisy = clip if noise is None else Conditions((noise,), seed=seed).apply(clip, turn=0)
                        audio = with_silence(noisy)
                        cell.audio_s += len(audio) / CALL_SAMPLE_RATE
                        t0 = time.perf_counter()
                        streamed = await transcribe_streamed(recognizer, audio)
                        t1 = time.perf_counter()
                        batch = recognizer.transcribe_pcm(audio, CALL_SAMPLE_RATE)
                        t2 = time.perf_counter()
                        cell.stream_s += t1 - t0
                        cell.batch_s += t2 - t1
                        cell.stream.append(word_error_rate(text, streamed))
                        cell.batch.append(word_error_rate(text, batch))
                        if verbose:
                            print(f"{model:8} {label:12} seed {seed}  {text!r}\n"
                                  f"{'':32}stream: {streamed!r}\n{'':32}batch:  {batch!r}")
        finally:
            await recognizer.aclose()
    return cells


def main() -> None:
    """Parse arguments, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="noise realisations per phrase (default 3)")
    parser.add_argument("--verbose", action="store_true", help="print every transcript")
    args = parser.parse_args()

    vocab = SuiteVocabulary.collect(
        call_types=load_call_types(SUITE / "pyproject.toml"), test_paths=[SUITE], root=SUITE
    )
    words = sum(len(t.split()) for t in vocab.texts)
    print(f"example suite vocabulary: {len(vocab.texts)} phrases, {words} words, "
          f"{len(set(' '.join(vocab.texts).split()))} distinct (digest {vocab.digest[:12]})")
    for phrase in vocab.phrases:
        print(f"  {phrase.text!r}  <- {len(phrase.sources)} source(s), first: {phrase.sources[0]}")
    if vocab.scan.skipped:
        print(f"  skipped {len(vocab.scan.skipped)} non-literal call(s): " + "; ".join(map(str, vocab.scan.skipped)))
    print()

    with tempfile.TemporaryDirectory(prefix="stt_vocabulary_") as cache:
        t0 = time.perf_counter()
        vocab.build_model(cache)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        vocab.build_model(cache)
        cached = time.perf_counter() - t0
        cells = asyncio.run(measure(vocab, Path(cache), args.seeds, args.verbose))

    headers = ["model / condition", "utts", "WER stream", "exact stream", "WER batch", "exact batch",
               "RTF stream", "RTF batch"]
    rows = []
    for (model, label), cell in cells.items():
        n = len(cell.stream)
        rows.append([
            f"{model} / {label}",
            str(n),
            f"{pooled_wer(cell.stream):.3f}",
            f"{sum(r.wer == 0 for r in cell.stream)}/{n}",
            f"{pooled_wer(cell.batch):.3f}",
            f"{sum(r.wer == 0 for r in cell.batch)}/{n}",
            f"{cell.stream_s / cell.audio_s:.3f}",
            f"{cell.batch_s / cell.audio_s:.3f}",
        ])
    print_grid(headers, rows, title=(
        f"offline STT WER, example suite caller phrases ({args.seeds} noise seeds per phrase; "
        "RTF = decode seconds per second of audio, silence included)"
    ))
    print(f"\ndomain model: built in {built * 1000:.1f} ms, cache hit in {cached * 1000:.2f} ms")


if __name__ == "__main__":
    main()
