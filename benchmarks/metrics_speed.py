"""Benchmark :func:`pytest_livekit.metrics.call_metrics.compute_metrics` on a realistic 60 s call.

The call is built offline: 10 caller turns and 10 agent replies spoken by espeak-ng (or, with
``--synthetic``, tone bursts), laid on a 48 kHz stereo recording with a noise floor, plus STT
transcripts, conversation items with livekit-style metrics, tool calls, receive stalls and
WebRTC stats. Then each metric group and the whole ``compute_metrics`` (no DNSMOS, no transcript
drift) are timed: one warm-up run, then 20 timed runs, reporting the best and the median.

    python benchmarks/metrics_speed.py [--runs 20] [--synthetic]

Prints one table; PASS/FAIL compares the median total with the 50 ms budget. ``compute_metrics``
measures the two channels in two threads; the "one core" row shows the cost without that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_livekit.audio import CALL_SAMPLE_RATE, float_to_pcm16, resample  # noqa: E402
from pytest_livekit.call.record import (  # noqa: E402
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    ToolCall,
    Transcript,
)
from pytest_livekit.metrics.call_metrics import (  # noqa: E402
    audio_gaps,
    audio_quality,
    call_outcome,
    compute_metrics,
    integrated_loudness,
    rtc_summary,
    tool_selection,
    turn_metrics,
)

BUDGET_S = 0.050
CALL_SECONDS = 60.0
SR = CALL_SAMPLE_RATE

CALLER_LINES = [
    "hello i need some help with my order",
    "my order number is one two three four",
    "it arrived broken",
    "i would like a refund please",
    "yes the card ending in five six",
    "how long will that take",
    "can you send me an email confirmation",
    "my email is on file",
    "no that is everything",
    "thank you goodbye",
]
AGENT_LINES = [
    "hi i can help with that what is your order number",
    "thanks let me look up order one two three four",
    "i am sorry to hear that it arrived broken",
    "i can issue a refund to your original payment method",
    "the refund to the card ending in five six is on its way",
    "refunds usually take three to five business days",
    "i will send a confirmation email right away",
    "done the confirmation email has been sent",
    "is there anything else i can help with",
    "thank you for calling goodbye",
]


def _speech(text: str, synthetic: bool, seed: int) -> npt.NDArray[np.float64]:
    """Mono float speech at 48 kHz: espeak-ng, or a tone burst of similar length."""
    if not synthetic:
        try:
            from pytest_livekit.offline import synthesize_speech

            pcm, rate = synthesize_speech(text, words_per_minute=180)
            x = resample(pcm.astype(np.float64) / 32768.0, rate, SR)
            return 0.5 * x / max(float(np.abs(x).max()), 1e-9)  # peak -6 dBFS
        except Exception as exc:  # noqa: BLE001 - espeak missing: fall back, and say so
            print(f"(espeak-ng unavailable: {exc}; using tone bursts)", file=sys.stderr)
    n = int(0.27 * len(text.split()) * SR)  # ~220 words per minute, like espeak at 180 wpm
    t = np.arange(n) / SR
    f0 = 180.0 + 20.0 * (seed % 5)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t - np.pi / 2))  # syllable-like bursts
    return 0.3 * envelope * np.sin(2 * np.pi * f0 * t) * np.sin(2 * np.pi * 2.0 * f0 * t + 0.3)


def build_call(synthetic: bool = False) -> tuple[CallRecord, npt.NDArray[np.int16]]:
    """A realistic 60 s call: record plus ``(n, 2)`` int16 stereo recording."""
    n = int(CALL_SECONDS * SR)
    rng = np.random.default_rng(7)
    left = rng.standard_normal(n) * 10 ** (-70 / 20)  # caller mic noise floor, -70 dBFS
    right = rng.standard_normal(n) * 10 ** (-65 / 20)  # comfort noise after Opus, -65 dBFS
    rec = CallRecord(call_id="bench", call_type="refund", started_at_epoch=1_700_000_000.0)
    rec.agent_mode, rec.server_version = "in-process", "bench"
    t = 0.8
    for i, (said, reply) in enumerate(zip(CALLER_LINES, AGENT_LINES, strict=True)):
        caller = _speech(said, synthetic, i)
        s0 = int(t * SR)
        left[s0 : s0 + len(caller)] += caller
        c_end = t + len(caller) / SR
        rec.caller_turns.append(CallerTurn(i, "tts:en-us", said, t, c_end))
        stt = said if i % 3 else said.replace("my", "by")  # some recognition errors
        rec.transcripts.append(Transcript(c_end + 0.2, stt[: len(stt) // 2], False))
        rec.transcripts.append(Transcript(c_end + 0.35, stt, True))
        rec.items.append(ConversationItem(c_end + 0.4, "user", stt))
        agent = _speech(reply, synthetic, i + 100)
        a_start = c_end + 0.8 + 0.1 * (i % 3)
        a0 = int(a_start * SR)
        right[a0 : a0 + len(agent)] += agent
        a_end = a_start + len(agent) / SR
        rec.heard.append(HeardSegment(a_start, a_end))
        metrics = {"e2e_latency": 0.75 + 0.05 * i, "llm_node_ttft": 0.3, "tts_node_ttfb": 0.12}
        rec.items.append(ConversationItem(a_end + 0.05, "assistant", reply, metrics=metrics))
        if i == 8:  # a duplicated reply
            rec.items.append(ConversationItem(a_end + 0.1, "assistant", reply + " today"))
        if i == 1:
            rec.tool_calls.append(ToolCall(a_start - 0.3, "lookup_order", {"order_id": "1234"}, "found"))
        if i == 4:
            rec.tool_calls.append(ToolCall(a_start - 0.3, "issue_refund", {"order_id": "1234"}, "ok"))
        if i in (2, 6):
            rec.receive_gaps.append((a_start + 0.5, 0.06))  # stall while the agent spoke
        rec.receive_gaps.append((a_end + 0.5, 0.04))  # stall in silence: ignored
        t = a_end + 0.9
    assert t < CALL_SECONDS, f"the scripted call is too long ({t:.1f} s)"
    rec.rtc = {
        "packets_lost": 12.0,
        "packets_received": 2988.0,
        "jitter": 0.004,
        "concealed_samples": 9600.0,
        "total_samples_received": float(n),
        "round_trip_time": 0.002,
    }
    stereo = np.stack([float_to_pcm16(left), float_to_pcm16(right)], axis=1)
    return rec, stereo


def _time(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """``(best, median)`` wall time in seconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def main() -> int:
    """Build the call, time the metric groups, print the table; exit 1 if over budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--synthetic", action="store_true", help="tone bursts instead of espeak-ng")
    args = parser.parse_args()

    record, stereo = build_call(args.synthetic)
    caller = np.ascontiguousarray(stereo[:, 0])
    agent = np.ascontiguousarray(stereo[:, 1])

    def tools_outcome() -> None:
        tool_selection(record, ["lookup_order", "issue_refund"])
        call_outcome(record, completion_tools=("issue_refund",))
        audio_gaps(record)
        rtc_summary(record)

    def one_core() -> None:
        # compute_metrics measures the two channels concurrently; this is its cost without that.
        turn_metrics(record)
        audio_quality(caller)
        audio_quality(agent)
        tools_outcome()

    rows: list[tuple[str, Callable[[], Any]]] = [
        ("text metrics (10 turns: STT text, WER, CER, latencies, duplicates)", lambda: turn_metrics(record)),
        ("audio quality, caller channel (incl. LUFS)", lambda: audio_quality(caller)),
        ("  of which LUFS (BS.1770), caller", lambda: integrated_loudness(caller)),
        ("audio quality, agent channel (incl. LUFS)", lambda: audio_quality(agent)),
        ("  of which LUFS (BS.1770), agent", lambda: integrated_loudness(agent)),
        ("tools / outcome / gaps / rtc", tools_outcome),
        ("same work on one core (channels one after the other)", lambda: one_core()),
        ("TOTAL compute_metrics(record, stereo)", lambda: compute_metrics(record, stereo)),
    ]
    results = [(name, *_time(fn, args.runs)) for name, fn in rows]

    m = compute_metrics(record, stereo, completion_tools=("issue_refund",))
    print(
        f"Call: {stereo.shape[0] / SR:.0f} s stereo {SR} Hz, {len(record.caller_turns)} caller turns, "
        f"{len(record.items)} items, {len(record.tool_calls)} tool calls, "
        f"{len(record.receive_gaps)} receive gaps; audio: {'tone bursts' if args.synthetic else 'espeak-ng'}"
    )
    print(
        f"Metrics: WER {m.wer:.3f}, CER {m.cer:.3f}, TTFA p50 {m.ttfa_p50:.2f} s, "
        f"duplicated turns {m.duplicated_turns}, gaps {m.gaps} ({m.gap_seconds:.2f} s), outcome {m.outcome}, "
        f"LUFS caller {m.caller_quality.loudness_lufs:.1f} / agent {m.agent_quality.loudness_lufs:.1f}, "  # type: ignore[union-attr]
        f"SNR caller {m.caller_quality.snr_db:.1f} dB / agent {m.agent_quality.snr_db:.1f} dB"  # type: ignore[union-attr]
    )
    print(f"Timings over {args.runs} runs after 1 warm-up (wall clock, this machine):\n")
    width = max(len(r[0]) for r in results)
    print(f"{'metric group':<{width}}  {'best ms':>8}  {'median ms':>9}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 9}")
    for name, best, median in results:
        print(f"{name:<{width}}  {best * 1000:8.2f}  {median * 1000:9.2f}")
    total_best, total_median = results[-1][1], results[-1][2]
    ok = total_median <= BUDGET_S
    print(
        f"\nBudget {BUDGET_S * 1000:.0f} ms: {'PASS' if ok else 'FAIL'} "
        f"(median {total_median * 1000:.1f} ms, best {total_best * 1000:.1f} ms)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
