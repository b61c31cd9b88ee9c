"""Tests of the offline provider doubles: espeak-ng TTS, pocketsphinx STT, scripted LLM.

Everything runs for real (no mocks): real speech is synthesised, real recognition runs on it,
and the scripted LLM drives a real ``livekit.agents.AgentSession`` that executes real tools.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, RunContext, function_tool, llm, stt, tts
from livekit.agents.voice.run_result import RunResult

from pytest_livekit.offline.llm import Rule, ScriptedLLM, ToolCallSpec, tool
from pytest_livekit.offline.stt import SphinxSTT, build_domain_lm, normalize_phrase
from pytest_livekit.offline.tts import EspeakTTS, SpeechSynthesisError, synthesize_speech

SUPPORT_PHRASES = [
    "i want a refund for order one two three four",
    "can i speak to a human",
    "where is my order",
    "cancel my subscription",
    "what are your opening hours",
    "i need to change my delivery address",
]


def _rms(pcm: np.ndarray) -> float:
    """Root-mean-square level of int16 samples, in int16 units."""
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def support_stt() -> Iterator[SphinxSTT]:
    """A recogniser with a domain language model of the support phrases, shared by the module."""
    recognizer = SphinxSTT(phrases=SUPPORT_PHRASES)
    yield recognizer
    asyncio.run(recognizer.aclose())


# -- TTS ----------------------------------------------------------------------------------------
def test_synthesize_speech_returns_audible_int16_of_plausible_duration() -> None:
    text = "i want a refund for order one two three four"
    pcm, rate = synthesize_speech(text)

    assert rate == 22050
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    duration = len(pcm) / rate
    nominal = len(text.split()) / 140 * 60  # seconds at 140 words per minute
    assert 0.5 * nominal < duration < 1.5 * nominal, duration
    assert _rms(pcm) > 500, "speech should be well above silence"
    assert np.abs(pcm).max() < 32767, "no clipping"


def test_speaking_rate_changes_duration() -> None:
    slow, rate = synthesize_speech("where is my order", words_per_minute=100)
    fast, _ = synthesize_speech("where is my order", words_per_minute=200)
    assert len(slow) / rate > 1.4 * len(fast) / rate


def test_synthesize_speech_is_thread_safe() -> None:
    # espeak-ng is global state: without the lock, concurrent calls would interleave their
    # audio into one another's buffers. Outputs are compared by length, not bit for bit,
    # because espeak's pitch flutter makes repeated syntheses differ by a few samples.
    texts = [SUPPORT_PHRASES[i % 3] for i in range(12)]
    serial = [len(synthesize_speech(t)[0]) for t in texts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda t: len(synthesize_speech(t)[0]), texts))
    for a, b in zip(serial, parallel, strict=True):
        assert abs(a - b) < 0.02 * a, (a, b)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_synthesize_speech_rejects_empty_text(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        synthesize_speech(text)


def test_synthesize_speech_rejects_bad_voice_and_rate() -> None:
    with pytest.raises(ValueError, match="no voice named 'xx-nope'"):
        synthesize_speech("hello", voice="xx-nope")
    with pytest.raises(ValueError, match="words_per_minute"):
        synthesize_speech("hello", words_per_minute=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize_speech("hello", pitch=101)
    # A failed call leaves the engine usable.
    assert len(synthesize_speech("hello")[0]) > 0


def test_speech_synthesis_error_is_a_runtime_error() -> None:
    assert issubclass(SpeechSynthesisError, RuntimeError)


@pytest.mark.asyncio
async def test_espeak_tts_through_livekit_api() -> None:
    engine = EspeakTTS()
    assert engine.capabilities.streaming is False
    assert (engine.sample_rate, engine.num_channels) == (22050, 1)
    assert (engine.model, engine.provider) == ("espeak-ng", "offline")
    metrics: list[object] = []
    engine.on("metrics_collected", metrics.append)

    events: list[tts.SynthesizedAudio] = []
    async with engine.synthesize("hello") as stream:
        async for ev in stream:
            events.append(ev)

    assert events, "no audio frames"
    assert all(ev.frame.sample_rate == 22050 and ev.frame.num_channels == 1 for ev in events)
    assert all(ev.request_id.startswith("espeak_") for ev in events)
    assert events[-1].is_final
    audio = np.concatenate([np.frombuffer(ev.frame.data, dtype=np.int16) for ev in events])
    expected, _ = synthesize_speech("hello")
    # All of the synthesised audio arrives (up to espeak's few-sample flutter jitter).
    assert abs(len(audio) - len(expected)) < 0.05 * len(expected)
    assert _rms(audio) > 500
    await asyncio.sleep(0)  # the metrics task finishes after the stream closes
    assert metrics, "livekit should have collected TTS metrics"
    await engine.aclose()


@pytest.mark.asyncio
async def test_espeak_tts_collect_and_blank_text() -> None:
    engine = EspeakTTS(words_per_minute=175)
    frame = await engine.synthesize("where is my order").collect()
    assert 0.5 < frame.duration < 2.0

    blank = [ev async for ev in engine.synthesize("  ")]
    assert blank == []


def test_espeak_tts_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="words_per_minute"):
        EspeakTTS(words_per_minute=1000)


# -- STT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("phrase", SUPPORT_PHRASES)
def test_sphinx_recognises_espeak_speech(support_stt: SphinxSTT, phrase: str) -> None:
    pcm, rate = synthesize_speech(phrase)
    transcript = support_stt.transcribe_pcm(pcm, rate)
    assert jiwer.wer(phrase, transcript) <= 0.1, transcript


@pytest.mark.asyncio
async def test_sphinx_recognize_through_livekit_api(support_stt: SphinxSTT) -> None:
    phrase = "i want a refund for order one two three four"
    pcm, rate = synthesize_speech(phrase)
    # Stereo, in 20 ms frames, as an agent pipeline would hand it over.
    stereo = np.repeat(pcm[:, None], 2, axis=1)
    step = rate // 50
    frames = [
        rtc.AudioFrame(chunk.tobytes(), rate, 2, len(chunk))
        for chunk in (stereo[i : i + step] for i in range(0, len(stereo), step))
    ]

    event = await support_stt.recognize(buffer=frames)

    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    (alternative,) = event.alternatives
    assert jiwer.wer(phrase, alternative.text) <= 0.1, alternative.text
    assert alternative.language == "en-US"
    assert 0.0 < alternative.confidence <= 1.0

    single = await support_stt.recognize(buffer=rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm)))
    assert single.alternatives[0].text == alternative.text


@pytest.mark.asyncio
async def test_sphinx_behind_livekit_stream_adapter_with_vad(support_stt: SphinxSTT) -> None:
    # How an AgentSession really uses a non-streaming STT: silero VAD cuts 48 kHz, 10 ms
    # frames into utterances and livekit's StreamAdapter sends each one to recognize().
    from livekit.plugins import silero

    phrases = SUPPORT_PHRASES[:2]
    adapter = stt.StreamAdapter(stt=support_stt, vad=silero.VAD.load())
    stream = adapter.stream()
    silence = np.zeros(48000 // 2, dtype=np.int16)

    async def speak() -> None:
        for phrase in phrases:
            pcm, rate = synthesize_speech(phrase)
            resampler = rtc.AudioResampler(rate, 48000, num_channels=1)
            frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm)))
            speech = np.concatenate(
                [np.frombuffer(f.data, dtype=np.int16) for f in frames + resampler.flush()]
            )
            audio = np.concatenate([silence, speech, silence, silence])
            for i in range(0, len(audio), 480):
                chunk = audio[i : i + 480]
                stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 48000, 1, len(chunk)))
                await asyncio.sleep(0)
        stream.end_input()

    speaker = asyncio.create_task(speak())
    finals = [
        ev.alternatives[0].text async for ev in stream if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    ]
    await speaker
    await stream.aclose()
    assert finals == phrases


def _call_audio(phrase: str, *, lead_s: float = 0.5, tail_s: float = 0.5) -> np.ndarray:
    """``phrase`` spoken at 48 kHz (the call's rate) between ``lead_s`` and ``tail_s`` of silence."""
    pcm, rate = synthesize_speech(phrase)
    resampler = rtc.AudioResampler(rate, 48000, num_channels=1)
    frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))) + resampler.flush()
    speech = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    return np.concatenate(
        [np.zeros(int(lead_s * 48000), np.int16), speech, np.zeros(int(tail_s * 48000), np.int16)]
    )


def _push(stream: stt.RecognizeStream, audio: np.ndarray) -> None:
    """Push 48 kHz mono audio in 10 ms frames, as an agent's audio input does."""
    for i in range(0, len(audio), 480):
        chunk = audio[i : i + 480]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 48000, 1, len(chunk)))


async def test_sphinx_stream_decodes_while_audio_arrives_and_finalises_fast() -> None:
    # The point of the streaming STT: decoding happens while the caller speaks, so on the flush
    # (the VAD's end of speech in an AgentSession) only the end of the search is left.
    recognizer = SphinxSTT(phrases=SUPPORT_PHRASES, interim_results=True)
    assert recognizer.capabilities.streaming and getattr(recognizer.capabilities, "manual_flush", True)
    assert recognizer.capabilities.interim_results
    phrase = "i want a refund for order one two three four"
    audio = _call_audio(phrase)
    batch_started = time.perf_counter()
    assert recognizer.transcribe_pcm(audio, 48000) == phrase
    batch_s = time.perf_counter() - batch_started

    stream = recognizer.stream()
    events: list[stt.SpeechEvent] = []
    heard_all = asyncio.Event()
    final = asyncio.Event()
    final_at = 0.0

    async def read() -> None:
        nonlocal final_at
        async for ev in stream:
            events.append(ev)
            if ev.type == stt.SpeechEventType.INTERIM_TRANSCRIPT and ev.alternatives[0].text == phrase:
                heard_all.set()
            elif ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                final_at = time.perf_counter()
                final.set()

    reader = asyncio.create_task(read())
    _push(stream, audio)
    # An interim with every word shows the worker has decoded the utterance before any flush.
    await asyncio.wait_for(heard_all.wait(), timeout=30)
    flushed_at = time.perf_counter()
    stream.flush()
    await asyncio.wait_for(final.wait(), timeout=30)
    latency = final_at - flushed_at
    stream.end_input()
    await reader
    await stream.aclose()
    await recognizer.aclose()

    # end_input() flushes again, with nothing open: an empty final closes the list.
    *events, closing = events
    assert closing.type == stt.SpeechEventType.FINAL_TRANSCRIPT and closing.alternatives[0].text == ""
    kinds = [ev.type for ev in events]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH
    assert set(kinds[1:-3]) == {stt.SpeechEventType.INTERIM_TRANSCRIPT}
    assert kinds[-3:] == [
        stt.SpeechEventType.RECOGNITION_USAGE,
        stt.SpeechEventType.FINAL_TRANSCRIPT,
        stt.SpeechEventType.END_OF_SPEECH,
    ]
    (alternative,) = events[-2].alternatives
    assert alternative.text == phrase and alternative.language == "en-US"
    assert 0.0 < alternative.confidence <= 1.0
    # Times are seconds of the stream: the speech starts after 0.5 s and lasts about 3 s.
    speech_s = len(audio) / 48000 - 1.0
    assert abs(alternative.start_time - 0.5) < 0.1, alternative.start_time
    assert abs(alternative.end_time - (0.5 + speech_s)) < 0.15, alternative.end_time
    usage = events[-3].recognition_usage
    assert usage is not None and speech_s < usage.audio_duration < speech_s + 1.0
    assert len({ev.request_id for ev in events}) == 1
    # A generous bound for a loaded CI machine: typically 5-20 ms, where the batch decode of
    # the same audio takes 0.15-0.25 s.
    assert latency < 0.3, f"final {latency * 1000:.0f} ms after the flush (batch decode: {batch_s * 1000:.0f} ms)"


async def test_sphinx_stream_endpoints_by_itself_and_answers_idle_flushes() -> None:
    # Without a VAD to flush it, the stream finalises after endpoint_silence of silence, like a
    # cloud STT's endpointing; a flush with nothing open gets an empty final, so a caller that
    # waits for "the" final transcript after a flush is not left waiting.
    recognizer = SphinxSTT(phrases=SUPPORT_PHRASES, endpoint_silence=0.3)
    assert recognizer.endpoint_silence == 0.3 and not recognizer.capabilities.interim_results
    stream = recognizer.stream()
    first = asyncio.Event()

    async def read() -> list[stt.SpeechEvent]:
        seen = []
        async for ev in stream:
            seen.append(ev)
            if ev.type == stt.SpeechEventType.END_OF_SPEECH:
                first.set()
        return seen

    reader = asyncio.create_task(read())
    _push(stream, _call_audio("where is my order", tail_s=0.6))
    await asyncio.wait_for(first.wait(), timeout=30)  # no flush: the stream's own endpoint
    stream.flush()  # nothing open
    _push(stream, _call_audio("can i speak to a human", tail_s=0.1))
    stream.end_input()  # flushes the open utterance
    events = await reader
    await stream.aclose()
    await recognizer.aclose()

    finals = [ev.alternatives[0].text for ev in events if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert finals == ["where is my order", "", "can i speak to a human"]
    kinds = [ev.type for ev in events if ev.type != stt.SpeechEventType.RECOGNITION_USAGE]
    assert kinds == [
        stt.SpeechEventType.START_OF_SPEECH,
        stt.SpeechEventType.FINAL_TRANSCRIPT,
        stt.SpeechEventType.END_OF_SPEECH,
        stt.SpeechEventType.FINAL_TRANSCRIPT,
        stt.SpeechEventType.START_OF_SPEECH,
        stt.SpeechEventType.FINAL_TRANSCRIPT,
        stt.SpeechEventType.END_OF_SPEECH,
    ]
    ends = [ev for ev in events if ev.type == stt.SpeechEventType.END_OF_SPEECH]
    # speech_end_time exists from livekit-agents 1.7.1 on (older ones: nothing to check)
    end_times = [getattr(ev, "speech_end_time", 0.0) for ev in ends]
    assert all(t is not None and t <= time.time() for t in end_times)


async def test_sphinx_streams_run_side_by_side_with_their_own_decoders(support_stt: SphinxSTT) -> None:
    # Two calls in one agent process share the STT object; each stream owns a decoder, so
    # utterances never interleave inside pocketsphinx, and decoders are reused afterwards.
    phrases = ["where is my order", "cancel my subscription"]
    streams = [support_stt.stream() for _ in phrases]
    both_speaking = asyncio.Barrier(len(streams))

    async def transcribe(stream: stt.RecognizeStream, phrase: str) -> list[str]:
        _push(stream, _call_audio(phrase, tail_s=0.2))
        texts = []
        async for ev in stream:
            if ev.type == stt.SpeechEventType.START_OF_SPEECH:
                await both_speaking.wait()  # both utterances open at once, then finish them
                stream.end_input()
            elif ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                texts.append(ev.alternatives[0].text)
        await stream.aclose()
        return texts

    results = await asyncio.gather(*(transcribe(s, p) for s, p in zip(streams, phrases, strict=True)))
    assert results == [[p] for p in phrases]

    idle = len(support_stt._live_decoders)
    assert idle >= 2, "two open utterances need two decoders, both back in the pool after aclose()"
    again = support_stt.stream()
    _push(again, _call_audio("what are your opening hours", tail_s=0.2))
    again.end_input()
    assert [ev.alternatives[0].text async for ev in again if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT] == [
        "what are your opening hours"
    ]
    await again.aclose()
    assert len(support_stt._live_decoders) == idle, "the stream should reuse an idle decoder"


def test_sphinx_stream_rejects_other_languages(support_stt: SphinxSTT) -> None:
    with pytest.raises(ValueError, match="English"):
        support_stt.stream(language="de")


def test_sphinx_transcripts_do_not_depend_on_history(support_stt: SphinxSTT) -> None:
    audio = [synthesize_speech(p) for p in SUPPORT_PHRASES[:3]]
    first = [support_stt.transcribe_pcm(pcm, rate) for pcm, rate in audio]
    again = [support_stt.transcribe_pcm(pcm, rate) for pcm, rate in reversed(audio)]
    assert first == list(reversed(again))


def test_sphinx_silence_gives_empty_transcript(support_stt: SphinxSTT) -> None:
    assert support_stt.transcribe_pcm(np.zeros(16000, dtype=np.int16), 16000) == ""
    assert support_stt.transcribe_pcm(np.zeros(0, dtype=np.int16), 16000) == ""
    with pytest.raises(TypeError, match="int16"):
        support_stt.transcribe_pcm(np.zeros(100, dtype=np.float32), 16000)


def test_build_domain_lm_writes_arpa_usable_by_sphinx(tmp_path: Path) -> None:
    path = build_domain_lm(["Where's my order?", "Cancel my subscription!"], tmp_path / "d.lm")
    text = path.read_text()
    assert text.count("\\data\\") == 1 and "</s>" in text and "where's" in text

    recognizer = SphinxSTT(language_model=path)
    assert recognizer.language_model == path
    pcm, rate = synthesize_speech("cancel my subscription")
    assert recognizer.transcribe_pcm(pcm, rate) == "cancel my subscription"
    asyncio.run(recognizer.aclose())


def test_build_domain_lm_rejects_unknown_words(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['1234', 'zorbleflax'\]"):
        build_domain_lm(["my order is 1234", "zorbleflax"], tmp_path / "d.lm")
    with pytest.raises(ValueError, match="at least one phrase"):
        build_domain_lm(["?!", ""], tmp_path / "d.lm")


def test_normalize_phrase() -> None:
    assert normalize_phrase("Where\u2019s my ORDER?  'Now', e-mail") == "where's my order now e mail"


def test_sphinx_stt_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="English"):
        SphinxSTT(language="fr")
    with pytest.raises(ValueError, match="not both"):
        SphinxSTT(language_model=tmp_path / "x.lm", phrases=["hello"])
    with pytest.raises(FileNotFoundError):
        SphinxSTT(language_model=tmp_path / "missing.lm")
    with pytest.raises(ValueError, match="endpoint_silence"):
        SphinxSTT(endpoint_silence=0)
    generic = SphinxSTT()
    assert generic.capabilities.streaming is True
    assert getattr(generic.capabilities, "manual_flush", True) is True
    assert generic.capabilities.interim_results is False, "opt-in: see SphinxSTT's interim_results"
    assert (generic.model, generic.provider) == ("pocketsphinx/en-us.lm.bin", "offline")


# -- LLM ----------------------------------------------------------------------------------------
def test_rule_rejects_bad_regex() -> None:
    with pytest.raises(ValueError, match=r"pattern='refund\('"):
        Rule("refund(", reply="x")


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="needs a reply, tools, or both"):
        Rule("x")
    with pytest.raises(ValueError, match="after_tools but no tools"):
        Rule("x", reply="y", after_tools="z")
    with pytest.raises(ValueError, match="JSON"):
        tool("lookup", when=object())
    spec = Rule.tool("lookup_order", order_id="1234")
    assert spec == ToolCallSpec("lookup_order", {"order_id": "1234"})
    assert json.loads(spec.arguments_json()) == {"order_id": "1234"}
    assert tool("f", name="positional name allows this").arguments == {"name": "positional name allows this"}
    listed: Any = [spec]  # a list is accepted and stored as a tuple
    rule = Rule("REFUND", tools=listed, after_tools="a {output} b {outputs} {other}")
    assert rule.tools == (spec,) and rule.matches("i want a refund")
    assert rule.render_after_tools(["1", "2"]) == "a 2 b 1 2 {other}"


class SupportAgent(Agent):
    """A small support agent with one tool, for the ScriptedLLM session test."""

    def __init__(self) -> None:
        super().__init__(instructions="You are a support agent.")
        self.looked_up: list[str] = []

    async def on_enter(self) -> None:
        self.session.generate_reply()

    @function_tool
    async def lookup_order(self, context: RunContext[Any], order_id: str) -> str:
        """Look up the status of an order.

        Args:
            order_id: The order number.
        """
        self.looked_up.append(order_id)
        return f"order {order_id} shipped yesterday"


def _support_llm(**kwargs: object) -> ScriptedLLM:
    return ScriptedLLM(
        [
            Rule(
                r"refund|order",
                reply="Let me look that up.",
                tools=(Rule.tool("lookup_order", order_id="1234"),),
                after_tools="Good news: {output}.",
            ),
            Rule(r"\bhuman\b", reply="Transferring you to a colleague."),
        ],
        greeting="Hello, how can I help?",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_scripted_llm_drives_agent_session_with_tools() -> None:
    scripted = _support_llm()
    agent = SupportAgent()
    async with AgentSession(llm=scripted) as session:
        greeting = await session.start(agent, capture_run=True)
        greeting.expect.contains_message(role="assistant")
        assert any(
            getattr(ev.item, "text_content", None) == "Hello, how can I help?" for ev in greeting.events
        )

        result: RunResult[None] = await session.run(user_input="I want a refund for order one two three four")
        result.expect.next_event().is_message(role="assistant")
        result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
        result.expect.next_event().is_function_call_output(output="order 1234 shipped yesterday")
        reply = result.expect.next_event().is_message(role="assistant")
        assert reply.event().item.text_content == "Good news: order 1234 shipped yesterday."
        result.expect.no_more_events()
        result.expect.contains_function_call(name="lookup_order", arguments={"order_id": "1234"})

        other: RunResult[None] = await session.run(user_input="Can I speak to a human?")
        msg = other.expect.next_event().is_message(role="assistant")
        assert msg.event().item.text_content == "Transferring you to a colleague."
        other.expect.no_more_events()

        unknown: RunResult[None] = await session.run(user_input="What's the weather?")
        fallback = unknown.expect.next_event().is_message(role="assistant")
        assert fallback.event().item.text_content == scripted._fallback

    assert agent.looked_up == ["1234"]
    assert scripted.requests == [
        "I want a refund for order one two three four",
        "Can I speak to a human?",
        "What's the weather?",
    ]


def _ctx(user_text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a support agent.")
    ctx.add_message(role="user", content=user_text)
    return ctx


@pytest.mark.asyncio
async def test_scripted_llm_stream_chunks_usage_and_latency() -> None:
    scripted = _support_llm(time_to_first_token=0.05)
    assert (scripted.model, scripted.provider) == ("scripted", "offline")
    tools: list[llm.Tool] = [SupportAgent().lookup_order]
    started = time.perf_counter()
    chunks = [c async for c in scripted.chat(chat_ctx=_ctx("my order please"), tools=tools)]
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.05
    text = "".join(c.delta.content or "" for c in chunks if c.delta)
    assert text == "Let me look that up."
    assert sum(1 for c in chunks if c.delta and c.delta.content) == 5, "streamed word by word"
    calls = [tc for c in chunks if c.delta for tc in c.delta.tool_calls]
    assert [(tc.name, json.loads(tc.arguments)) for tc in calls] == [("lookup_order", {"order_id": "1234"})]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert len({c.id for c in chunks}) == 1

    # tool_choice="none": the reply is said, the tool is not called.
    collected = await scripted.chat(
        chat_ctx=_ctx("my order please"), tools=tools, tool_choice="none"
    ).collect()
    assert collected.text == "Let me look that up." and collected.tool_calls == []


@pytest.mark.asyncio
async def test_scripted_llm_refuses_tools_the_agent_does_not_offer() -> None:
    scripted = _support_llm()
    with pytest.raises(ValueError, match=r"calls \['lookup_order'\], but the agent only offers"):
        await scripted.chat(chat_ctx=_ctx("refund please"), tools=[]).collect()


@pytest.mark.asyncio
async def test_scripted_llm_greets_without_user_message() -> None:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="be nice")
    assert (await _support_llm().chat(chat_ctx=ctx).collect()).text == "Hello, how can I help?"
    no_greeting = ScriptedLLM([], fallback="Hm?")
    assert (await no_greeting.chat(chat_ctx=ctx).collect()).text == "Hm?"
    assert no_greeting.requests == []


def test_package_exports_resolve_lazily() -> None:
    import pytest_livekit.offline as offline

    for name in offline.__all__:
        assert getattr(offline, name) is not None
    assert offline.ScriptedLLM is ScriptedLLM
    with pytest.raises(AttributeError):
        offline.nope  # noqa: B018
