"""Offline mode's substitution: an agent's cloud providers become the offline doubles.

Real objects throughout: real ``AgentSession``/``Agent`` objects built inside livekit's own
``fake_job_context`` (no livekit-server), from real provider plugin objects built with the
placeholder credentials of :func:`offline_environment`. The network guard is on during every
test as a backstop (building a provider must not try the network; any attempt fails the test).

The patches are process-wide: the ``offline`` fixture always leaves substitution deactivated.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from livekit.agents import (
    NOT_GIVEN,
    Agent,
    AgentSession,
    APIConnectOptions,
    inference,
    llm,
    stt,
    tts,
    vad,
)
from livekit.agents.testing import fake_job_context
from livekit.agents.types import NotGivenOr
from livekit.agents.utils import AudioBuffer
from livekit.agents.voice.events import ErrorEvent
from livekit.agents.voice.room_io import AudioInputOptions, RoomInputOptions, RoomOptions
from livekit.plugins import (
    assemblyai,
    cartesia,
    deepgram,
    elevenlabs,
    google,
    noise_cancellation,
    openai,
    silero,
)
from livekit.plugins.turn_detector.multilingual import MultilingualModel

from pytest_livekit.agent import substitution
from pytest_livekit.agent.netguard import BlockedConnection, guard
from pytest_livekit.agent.substitution import (
    OFFLINE_DIR_ENV,
    PLACEHOLDER,
    PLACEHOLDER_EOT_URL,
    PLACEHOLDER_KEYS,
    VIOLATION_MARKER,
    OfflinePlan,
    Substitution,
    is_placeholder,
    offline_environment,
    plan_for_room,
    register_plan,
    report_violation,
    substitutions_for_room,
    unregister_plan,
    watch_room,
)
from pytest_livekit.offline import EspeakTTS, Rule, ScriptedLLM, SphinxSTT

#: ``fake_job_context()`` builds an unconnected ``rtc.Room`` (no name): its job's room is this.
ROOM = "fake-room"


class HomeMadeSTT(stt.STT[Literal["metrics_collected", "error"]]):
    """A team's own STT class (not from a provider package): offline mode keeps it."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError


class LaterDeskAgent(Agent):
    """An agent the first one hands over to later, with its own cloud LLM."""

    def __init__(self) -> None:
        super().__init__(instructions="You handle billing.", llm=openai.LLM(model="gpt-4.1"))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def substitution_stays_off() -> Iterator[None]:
    """Every test leaves substitution (process-wide patches) and the process's guard switched off."""
    try:
        yield
    finally:
        active = substitution.is_active()
        substitution.deactivate()
        guard.deactivate()
    assert not active, "the test left substitution active"


@pytest.fixture
def placeholder_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No real key in the environment, the placeholders instead (as a worker's job gets them)."""
    for name in list(os.environ):
        if (
            name.endswith(("_API_KEY", "_API_SECRET"))
            or name.startswith("LIVEKIT_")
            or name in {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", OFFLINE_DIR_ENV}
        ):
            monkeypatch.delenv(name)
    values = offline_environment(tmp_path / "credentials", override=True)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def blocked() -> Iterator[list[BlockedConnection]]:
    """The process's network guard, on for the test (deactivated after it); what it blocked."""
    attempts: list[BlockedConnection] = []
    stop = guard.on_blocked(attempts.append)
    guard.activate()
    try:
        yield attempts
    finally:
        guard.deactivate()
        stop()


@pytest.fixture
async def offline(placeholder_env: dict[str, str], blocked: list[BlockedConnection]) -> AsyncIterator[None]:
    """Substitution on, inside a fake livekit job (room ``fake-room``); always switched off after.

    Async: the job's ``rtc.Room`` needs the test's event loop (the job context reaches the test).
    """
    substitution.activate()
    try:
        with _job():
            assert substitution.current_room_name() == ROOM
            yield
    finally:
        substitution.deactivate()
        unregister_plan(ROOM)
    assert not substitution.is_active()
    assert blocked == [], "building providers must not try the network"


@pytest.fixture(scope="module")
def silero_vad() -> vad.VAD:
    return silero.VAD.load()


@contextlib.contextmanager
def _job() -> Iterator[Any]:
    """livekit's ``fake_job_context``, and the temporary folder its ``JobContext`` leaves behind removed."""
    with fake_job_context() as ctx:
        try:
            yield ctx
        finally:
            ctx._tempdir.cleanup()


def _applied() -> dict[str, Substitution]:
    return {s.where: s for s in substitutions_for_room(ROOM)}


# -- the providers zoo -----------------------------------------------------------------------


async def test_livekit_inference_strings_become_the_doubles(offline: None) -> None:
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-3"
    )

    assert isinstance(session._stt, SphinxSTT)
    assert isinstance(session._llm, ScriptedLLM)
    assert isinstance(session._tts, EspeakTTS)
    applied = _applied()
    assert applied["AgentSession(stt=...)"] == Substitution(
        "AgentSession(stt=...)",
        "LiveKit Inference 'deepgram/nova-3'",
        "stt.SphinxSTT pocketsphinx/en-us.lm.bin",
    )
    assert applied["AgentSession(llm=...)"].original == "LiveKit Inference 'openai/gpt-4.1-mini'"
    assert applied["AgentSession(llm=...)"].replacement == "llm.ScriptedLLM scripted"
    assert applied["AgentSession(tts=...)"].original == "LiveKit Inference 'cartesia/sonic-3'"
    assert applied["AgentSession(tts=...)"].replacement == "tts.EspeakTTS espeak-ng"


async def test_inference_strings_on_an_agent_become_the_doubles(offline: None) -> None:
    agent = Agent(instructions="hi", stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-3")

    assert isinstance(agent._stt, SphinxSTT)
    assert isinstance(agent._llm, ScriptedLLM)
    assert isinstance(agent._tts, EspeakTTS)
    assert set(_applied()) == {"Agent(stt=...)", "Agent(llm=...)", "Agent(tts=...)"}


async def test_livekit_inference_objects_become_the_doubles(offline: None) -> None:
    session: AgentSession[None] = AgentSession(
        stt=inference.STT(model="deepgram/nova-3", language="multi"),
        llm=inference.LLM(model="openai/gpt-4.1-mini"),
        tts=inference.TTS(model="cartesia/sonic-3", voice="9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
    )

    assert isinstance(session._stt, SphinxSTT)
    assert isinstance(session._llm, ScriptedLLM)
    assert isinstance(session._tts, EspeakTTS)
    applied = _applied()
    assert applied["AgentSession(stt=...)"].original == "inference.STT deepgram/nova-3"
    assert applied["AgentSession(llm=...)"].original == "inference.LLM openai/gpt-4.1-mini"
    assert applied["AgentSession(tts=...)"].original == "inference.TTS cartesia/sonic-3"


#: (kind, provider factory, the readable name it is listed under)
PLUGIN_PROVIDERS = [
    pytest.param("stt", lambda: deepgram.STT(), "deepgram.STT", id="deepgram.STT"),
    pytest.param("stt", lambda: openai.STT(), "openai.STT", id="openai.STT"),
    pytest.param("stt", lambda: assemblyai.STT(), "assemblyai.STT", id="assemblyai.STT"),
    pytest.param("stt", lambda: google.STT(), "google.STT", id="google.STT"),  # placeholder ADC file
    pytest.param("llm", lambda: openai.LLM(), "openai.LLM", id="openai.LLM"),
    pytest.param("llm", lambda: google.LLM(), "google.LLM", id="google.LLM"),
    pytest.param("tts", lambda: openai.TTS(), "openai.TTS", id="openai.TTS"),
    pytest.param("tts", lambda: cartesia.TTS(), "cartesia.TTS", id="cartesia.TTS"),
    pytest.param("tts", lambda: elevenlabs.TTS(), "elevenlabs.TTS", id="elevenlabs.TTS"),
    pytest.param("tts", lambda: google.TTS(), "google.TTS", id="google.TTS"),
]
DOUBLES = {"stt": SphinxSTT, "llm": ScriptedLLM, "tts": EspeakTTS}


@pytest.mark.parametrize(("kind", "make", "name"), PLUGIN_PROVIDERS)
async def test_provider_plugin_objects_become_the_doubles(
    offline: None, silero_vad: vad.VAD, kind: str, make: Any, name: str
) -> None:
    on_session, on_agent = make(), make()
    assert substitution.is_cloud_part(on_session)

    session: AgentSession[None] = AgentSession(vad=silero_vad, **{kind: on_session})
    agent = Agent(instructions="hi", **{kind: on_agent})

    assert isinstance(getattr(session, f"_{kind}"), DOUBLES[kind])
    assert isinstance(getattr(agent, f"_{kind}"), DOUBLES[kind])
    assert session._vad is silero_vad
    applied = _applied()
    for where in (f"AgentSession({kind}=...)", f"Agent({kind}=...)"):
        assert applied[where].original.startswith(name), applied[where]
        assert applied[where].replacement.startswith(f"{kind}.{DOUBLES[kind].__name__}")


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(lambda: openai.realtime.RealtimeModel(), id="openai.realtime.RealtimeModel"),
        pytest.param(lambda: "openai/gpt-realtime", id="inference realtime string"),
    ],
)
async def test_a_realtime_model_becomes_a_pipeline_of_the_three_doubles(
    offline: None, make_model: Any
) -> None:
    model = make_model()

    session: AgentSession[None] = AgentSession(llm=model, turn_detection="realtime_llm")

    assert isinstance(session._llm, ScriptedLLM)
    assert isinstance(session._stt, SphinxSTT)  # the speech-to-speech model heard by itself
    assert isinstance(session._tts, EspeakTTS)  # ... and spoke by itself
    assert session._turn_detection == "vad"  # "realtime_llm" turns have no realtime model left
    applied = _applied()
    assert applied["AgentSession(llm=...)"].original in (
        "openai.RealtimeModel gpt-realtime",
        "LiveKit Inference 'openai/gpt-realtime'",
    )
    assert applied["AgentSession(stt=...) for the realtime model"].original == "none"
    assert applied["AgentSession(tts=...) for the realtime model"].original == "none"
    assert applied["AgentSession(turn_detection=...)"].original == "realtime_llm"


async def test_a_realtime_model_on_an_agent_gets_ears_and_a_voice_on_that_agent(offline: None) -> None:
    # the starter template's realtime variant: the session has no STT/TTS, the agent carries the model
    session: AgentSession[None] = AgentSession()
    agent = Agent(instructions="x", llm=openai.realtime.RealtimeModel())

    assert isinstance(agent._llm, ScriptedLLM)
    assert isinstance(agent._stt, SphinxSTT)
    assert isinstance(agent._tts, EspeakTTS)
    assert session._stt is None  # the session itself was not given any
    assert _applied()["Agent(stt=...) for the realtime model"].original == "none"


async def test_adapters_wrapping_cloud_providers_become_the_doubles(
    offline: None, silero_vad: vad.VAD
) -> None:
    stt_fallback = stt.FallbackAdapter([deepgram.STT(), assemblyai.STT()])
    stt_stream = stt.StreamAdapter(stt=openai.STT(), vad=silero_vad)
    llm_fallback = llm.FallbackAdapter([openai.LLM(), google.LLM()])
    tts_fallback = tts.FallbackAdapter([cartesia.TTS(), elevenlabs.TTS()])

    session: AgentSession[None] = AgentSession(
        stt=stt_fallback, llm=llm_fallback, tts=tts_fallback, vad=silero_vad
    )
    agent = Agent(instructions="hi", stt=stt_stream)

    assert isinstance(session._stt, SphinxSTT)
    assert isinstance(session._llm, ScriptedLLM)
    assert isinstance(session._tts, EspeakTTS)
    assert isinstance(agent._stt, SphinxSTT)
    applied = _applied()
    for where in ("AgentSession(stt=...)", "AgentSession(llm=...)", "AgentSession(tts=...)"):
        assert "FallbackAdapter" in applied[where].original
    assert "StreamAdapter" in applied["Agent(stt=...)"].original


async def test_local_parts_are_kept_as_they_are(offline: None, silero_vad: vad.VAD) -> None:
    own_stt, own_llm, own_tts = SphinxSTT(), ScriptedLLM([]), EspeakTTS()
    home_made = HomeMadeSTT()
    local_fallback = stt.FallbackAdapter([home_made, own_stt], vad=silero_vad)

    session: AgentSession[None] = AgentSession(
        stt=own_stt, llm=own_llm, tts=own_tts, vad=silero_vad, turn_detection="stt"
    )
    agent = Agent(instructions="hi", stt=home_made, vad=silero_vad)
    other = Agent(instructions="hi", stt=local_fallback)

    assert session._stt is own_stt
    assert session._llm is own_llm
    assert session._tts is own_tts
    assert session._vad is silero_vad
    assert session._turn_detection == "stt"  # a local turn detection mode stays
    assert agent._stt is home_made
    assert agent._vad is silero_vad
    assert other._stt is local_fallback  # an adapter of local parts only stays
    assert not any(substitution.is_cloud_part(p) for p in (silero_vad, own_stt, own_llm, own_tts, home_made))
    assert not substitution.is_cloud_part(inference.VAD(model="silero"))  # livekit's local VAD
    assert _applied() == {}  # nothing was replaced (no default turn detector either: "stt" given)


@pytest.mark.parametrize(
    ("make_kwargs", "original"),
    [
        pytest.param(
            lambda: {"turn_detection": MultilingualModel()},
            "turn_detector.MultilingualModel",
            id="multilingual",
        ),
        pytest.param(
            lambda: {"turn_detection": inference.TurnDetector()}, "inference.TurnDetector", id="inference"
        ),
        pytest.param(
            lambda: {"turn_detection": MultilingualModel(), "preemptive_generation": True},
            "turn_detector.MultilingualModel",
            id="starter template",
        ),
        pytest.param(
            lambda: {"turn_handling": {"turn_detection": MultilingualModel()}},
            "turn_detector.MultilingualModel",
            id="turn_handling",
        ),
        pytest.param(
            lambda: {
                "turn_handling": {
                    "turn_detection": inference.TurnDetector(),
                    "interruption": {"mode": "adaptive"},
                }
            },
            "inference.TurnDetector",
            id="turn_handling adaptive",
        ),
    ],
)
async def test_turn_detector_models_become_vad_turns(
    offline: None, silero_vad: vad.VAD, make_kwargs: Any, original: str
) -> None:
    # detectors need the job context
    session: AgentSession[None] = AgentSession(vad=silero_vad, **make_kwargs())

    assert session._turn_detection == "vad"
    assert session._interruption_detection == "vad"
    assert _applied()["AgentSession(turn_detection=...)"].original.startswith(original)
    assert _applied()["AgentSession(turn_detection=...)"].replacement == "vad"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="nothing"),
        pytest.param(
            {"turn_handling": {"endpointing": {"min_delay": 0.3}}}, id="turn_handling without detector"
        ),
        pytest.param({"preemptive_generation": True}, id="legacy options without detector"),
    ],
)
async def test_the_sessions_default_turn_detector_becomes_vad_turns(
    offline: None, kwargs: dict[str, Any]
) -> None:
    session: AgentSession[None] = AgentSession(**kwargs)

    assert session._turn_detection == "vad"
    assert session._interruption_detection == "vad"
    replaced = [s for s in substitutions_for_room(ROOM) if "turn_detection" in s.where]
    assert len(replaced) == 1, replaced
    assert replaced[0].replacement == "vad"


async def test_adaptive_interruption_becomes_vad(offline: None) -> None:
    session: AgentSession[None] = AgentSession(
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "adaptive"}}
    )
    agent = Agent(instructions="hi", turn_handling={"interruption": {"mode": "adaptive", "enabled": True}})

    assert session._turn_detection == "vad"
    assert session._interruption_detection == "vad"
    assert agent._interruption_detection == "vad"
    assert agent._allow_interruptions is True  # the rest of the options stay
    applied = _applied()
    assert applied["AgentSession(interruption mode)"] == Substitution(
        "AgentSession(interruption mode)", "adaptive", "vad"
    )
    assert applied["Agent(interruption mode)"] == Substitution("Agent(interruption mode)", "adaptive", "vad")
    assert "AgentSession(turn_detection=...)" not in applied  # "vad" was asked for: not replaced


async def test_an_agent_handed_over_later_and_its_updates_get_the_doubles(offline: None) -> None:
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-3"
    )
    assert isinstance(session._llm, ScriptedLLM)

    billing = LaterDeskAgent()  # built later in the call, by a tool that hands over
    assert isinstance(billing._llm, ScriptedLLM)
    assert _applied()["LaterDeskAgent(llm=...)"].original == "openai.LLM gpt-4.1"

    billing.update_options(llm="openai/gpt-4.1-mini", tts=cartesia.TTS(), stt=None)
    assert isinstance(billing._llm, ScriptedLLM)
    assert isinstance(billing._tts, EspeakTTS)
    assert billing._stt is None  # "no STT for this agent" stays what it says
    applied = _applied()
    assert (
        applied["LaterDeskAgent.update_options(llm=...)"].original == "LiveKit Inference 'openai/gpt-4.1-mini'"
    )
    assert applied["LaterDeskAgent.update_options(tts=...)"].original.startswith("cartesia.TTS")

    turn_agent = Agent(instructions="hi", turn_detection=MultilingualModel())
    assert turn_agent._turn_detection == "vad"
    assert "Agent(turn_detection=...)" in _applied()


async def test_the_doubles_follow_the_rooms_plan(offline: None) -> None:
    plan = OfflinePlan(
        llm_rules=[{"when": "refund", "say": "Let me check."}],
        default_reply="How can I help?",
        greeting="Hello there.",
        stt_phrases=["i want a refund", "hello"],
        time_to_first_token=0.25,
    )
    register_plan(ROOM, plan)

    session: AgentSession[None] = AgentSession(stt="deepgram/nova-3", llm="openai/gpt-4.1-mini")

    assert isinstance(session._llm, ScriptedLLM)
    assert session._llm.fallback == "How can I help?"
    assert session._llm.greeting == "Hello there."
    assert session._llm.time_to_first_token == 0.25
    assert [r.pattern for r in session._llm.rules] == ["refund"]
    assert session._stt is substitution.offline_stt(plan)  # one prewarmed recogniser per vocabulary


async def test_without_noise_filter_removes_the_filter_from_a_copy(offline: None) -> None:
    bvc = noise_cancellation.BVC()
    options = RoomOptions(audio_input=AudioInputOptions(noise_cancellation=bvc, sample_rate=16000))

    cleaned = substitution._without_noise_filter(options, "room_options")

    assert cleaned is not options
    assert isinstance(cleaned.audio_input, AudioInputOptions)
    assert cleaned.audio_input.noise_cancellation is None
    assert cleaned.audio_input.sample_rate == 16000  # the rest of the options stay
    assert isinstance(options.audio_input, AudioInputOptions)
    assert options.audio_input.noise_cancellation is bvc  # the agent's own object is untouched
    replaced = _applied()["session.start(room_options=...noise_cancellation)"]
    assert "NoiseCancellationOptions" in replaced.original  # what BVC() gives (a livekit.rtc object)
    assert replaced.replacement == "none"


async def test_without_noise_filter_on_the_legacy_room_input_options(offline: None) -> None:
    bvc = noise_cancellation.BVC()
    options = RoomInputOptions(noise_cancellation=bvc, audio_sample_rate=16000)

    cleaned = substitution._without_noise_filter(options, "room_input_options")

    assert cleaned.noise_cancellation is None
    assert cleaned.audio_sample_rate == 16000
    assert options.noise_cancellation is bvc
    assert "session.start(room_input_options=...noise_cancellation)" in _applied()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(RoomOptions(), id="default"),
        pytest.param(RoomOptions(audio_input=True), id="audio_input=True"),
        pytest.param(RoomOptions(audio_input=AudioInputOptions()), id="no filter"),
        pytest.param(RoomInputOptions(), id="legacy, no filter"),
    ],
)
async def test_without_noise_filter_keeps_options_without_one(offline: None, options: Any) -> None:
    assert substitution._without_noise_filter(options, "room_options") is options
    assert _applied() == {}


async def test_session_start_hands_over_options_without_the_filter(offline: None) -> None:
    # The patched start, with livekit's start replaced by a recorder: no session really starts.
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-3"
    )
    agent = Agent(instructions="hi")
    options = RoomOptions(audio_input=AudioInputOptions(noise_cancellation=noise_cancellation.BVC()))
    handed: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def livekit_start(_session: Any, *args: Any, **kwargs: Any) -> str:
        handed.append((args, kwargs))
        return "started"

    result = substitution._session_start(livekit_start, session, agent=agent, room_options=options)

    assert result == "started"
    [(args, kwargs)] = handed
    assert kwargs["agent"] is agent
    assert kwargs["room_options"].audio_input.noise_cancellation is None


# -- switched off ----------------------------------------------------------------------------


async def test_nothing_is_substituted_when_deactivated(
    placeholder_env: dict[str, str], blocked: list[BlockedConnection], silero_vad: vad.VAD
) -> None:
    substitution.activate()
    substitution.deactivate()
    assert not substitution.is_active()
    cloud_tts = cartesia.TTS()
    cloud_llm = openai.LLM()
    try:
        with _job():
            detector = MultilingualModel()
            session: AgentSession[None] = AgentSession(
                stt="deepgram/nova-3",
                tts=cloud_tts,
                vad=silero_vad,
                turn_handling={"turn_detection": detector, "interruption": {"mode": "adaptive"}},
            )
            agent = Agent(instructions="hi", llm=cloud_llm)
    finally:
        unregister_plan(ROOM)

    assert isinstance(session._stt, inference.STT)
    assert session._tts is cloud_tts
    assert agent._llm is cloud_llm
    assert session._turn_detection is detector
    assert session._interruption_detection == "adaptive"
    assert substitutions_for_room(ROOM) == []
    assert blocked == []


async def test_offline_providers_switches_on_for_the_block_only(
    placeholder_env: dict[str, str], blocked: list[BlockedConnection]
) -> None:
    try:
        with _job():
            with substitution.offline_providers():
                assert substitution.is_active()
                inside = Agent(instructions="hi", llm="openai/gpt-4.1-mini")
            assert not substitution.is_active()
            outside = Agent(instructions="hi", tts=cartesia.TTS())
    finally:
        substitution.deactivate()
        unregister_plan(ROOM)
    assert isinstance(inside._llm, ScriptedLLM)
    assert not isinstance(outside._tts, EspeakTTS)


# -- provider packages that are not installed ------------------------------------------------


class _NotInstalled(importlib.abc.MetaPathFinder):
    """Import hook: the named package is not installed (and records who tried to import it)."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.attempts: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == self.package or fullname.startswith(self.package + "."):
            self.attempts.append(fullname)
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


async def test_a_provider_package_that_is_not_installed_does_not_matter(
    offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = "livekit.plugins.deepgram"
    for name in [n for n in sys.modules if n == missing or n.startswith(missing + ".")]:
        monkeypatch.delitem(sys.modules, name)
    import livekit.plugins

    monkeypatch.delattr(livekit.plugins, "deepgram", raising=False)
    finder = _NotInstalled(missing)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    with pytest.raises(ImportError):
        importlib.import_module(missing)
    finder.attempts.clear()
    plugins_before = {n for n in sys.modules if n.startswith("livekit.plugins.")}

    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm=openai.LLM(), tts=cartesia.TTS(), turn_detection=MultilingualModel()
    )
    agent = LaterDeskAgent()
    agent.update_options(stt=assemblyai.STT(), tts=elevenlabs.TTS())

    assert finder.attempts == []  # substitution never imports a provider package
    assert {n for n in sys.modules if n.startswith("livekit.plugins.")} == plugins_before
    assert isinstance(session._stt, SphinxSTT)
    assert isinstance(session._llm, ScriptedLLM)
    assert isinstance(session._tts, EspeakTTS)
    assert session._turn_detection == "vad"
    assert isinstance(agent._llm, ScriptedLLM)
    assert isinstance(agent._stt, SphinxSTT)
    assert isinstance(agent._tts, EspeakTTS)


# -- plans -----------------------------------------------------------------------------------


def test_offline_plan_json_round_trip() -> None:
    plan = OfflinePlan(
        llm_rules=[
            {
                "when": "refund (?P<order>[a-z ]+)",
                "call": [{"tool": "lookup", "arguments": {"id": "{order:digits}"}}],
            },
            {"when": "human", "say": "Transferring you."},
        ],
        default_reply="Sorry?",
        greeting="Hi!",
        stt_phrases=["i want a refund", "a human please"],
        stt_model="generic",
        time_to_first_token=0.5,
        source="call type refund",
    )

    text = plan.to_json()

    assert OfflinePlan.from_json(text) == plan
    assert json.loads(text)["llm_rules"] == plan.llm_rules


def test_offline_plan_json_of_rule_objects_is_their_declarative_form() -> None:
    rule = Rule("human", reply="Transferring you.")
    plan = OfflinePlan(llm_rules=[rule])

    again = OfflinePlan.from_json(plan.to_json())

    assert again.llm_rules == [{"when": "human", "say": "Transferring you."}]

    with pytest.raises(TypeError, match="declarative"):
        OfflinePlan(llm_rules=[object()]).to_json()


def test_plans_are_registered_per_room_in_memory() -> None:
    plan = OfflinePlan(default_reply="Room A here.")
    register_plan("room-a", plan)
    try:
        assert plan_for_room("room-a") is plan
        default = plan_for_room("room-b")
        assert default == OfflinePlan(stt_model="generic")
        assert plan_for_room(None) == OfflinePlan(stt_model="generic")
    finally:
        unregister_plan("room-a")
    assert plan_for_room("room-a") == OfflinePlan(stt_model="generic")


def test_plans_reach_a_worker_through_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "offline"
    plan = OfflinePlan(llm_rules=[{"when": "hello", "say": "Hi."}], stt_phrases=["hello"], source="marker")
    register_plan("room-w", plan, folder=folder)
    unregister_plan("room-w")  # the worker's job process: nothing in memory, only the file
    assert sorted(p.name for p in folder.iterdir()) == ["room-w.json"]  # no temporary file left

    monkeypatch.delenv(OFFLINE_DIR_ENV, raising=False)
    assert plan_for_room("room-w") == OfflinePlan(stt_model="generic")  # no folder: the default

    monkeypatch.setenv(OFFLINE_DIR_ENV, str(folder))
    try:
        assert plan_for_room("room-w") == plan
        assert plan_for_room("room-other") == OfflinePlan(stt_model="generic")
    finally:
        unregister_plan("room-w", folder=folder)
    assert list(folder.iterdir()) == []


async def test_a_workers_substitutions_are_read_from_the_folder(
    placeholder_env: dict[str, str],
    blocked: list[BlockedConnection],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "offline"
    register_plan(ROOM, OfflinePlan(), folder=folder)
    monkeypatch.setenv(OFFLINE_DIR_ENV, str(folder))  # as in a worker's job process
    substitution.activate()
    try:
        with _job():
            AgentSession(stt="deepgram/nova-3", tts=cartesia.TTS(), vad=None, turn_detection="stt")
    finally:
        substitution.deactivate()
    in_memory = substitutions_for_room(ROOM)
    unregister_plan(ROOM)  # the test process knows only the file
    try:
        assert [s.where for s in in_memory] == ["AgentSession(stt=...)", "AgentSession(tts=...)"]
        assert substitutions_for_room(ROOM, folder=folder) == in_memory
        with (folder / f"{ROOM}.applied.jsonl").open("a") as f:
            f.write("not json\n")
        assert substitutions_for_room(ROOM, folder=folder) == in_memory  # a torn line is skipped
    finally:
        unregister_plan(ROOM, folder=folder)
    assert list(folder.iterdir()) == []
    assert substitutions_for_room(ROOM, folder=folder) == []


# -- violations ------------------------------------------------------------------------------


def test_violations_reach_the_rooms_watchers(caplog: pytest.LogCaptureFixture) -> None:
    heard_a: list[str] = []
    heard_b: list[str] = []
    stop_a = watch_room("room-a", heard_a.append)
    stop_b = watch_room("room-b", heard_b.append)
    try:
        with caplog.at_level(logging.ERROR, logger="pytest_livekit.agent.substitution"):
            report_violation("STT tried api.deepgram.com", "room-a")
        assert heard_a == ["STT tried api.deepgram.com"]
        assert heard_b == []
        assert f"{VIOLATION_MARKER} STT tried api.deepgram.com" in caplog.text  # a worker's test reads it

        # a resolver thread does not know its room: every watcher hears it
        report_violation("someone tried example.com")
        assert heard_a[-1] == heard_b[-1] == "someone tried example.com"
        report_violation("a room nobody watches", "room-z")
        assert heard_a[-1] == heard_b[-1] == "a room nobody watches"

        stop_a()
        stop_a()  # stopping twice is harmless
        report_violation("after a stopped watching", "room-b")
        assert heard_a[-1] == "a room nobody watches"
        assert heard_b[-1] == "after a stopped watching"
    finally:
        stop_a()
        stop_b()
        unregister_plan("room-a")
        unregister_plan("room-b")


async def test_a_rule_error_of_the_offline_llm_is_reported_as_a_violation(offline: None) -> None:
    register_plan(ROOM, OfflinePlan(llm_rules=[{"when": "refund", "call": [{"tool": "issue_refund"}]}]))
    heard: list[str] = []
    stop = watch_room(ROOM, heard.append)
    try:
        session: AgentSession[None] = AgentSession(llm="openai/gpt-4.1-mini")
        scripted = session._llm
        assert isinstance(scripted, ScriptedLLM)
        errors: list[Any] = []
        scripted.on("error", errors.append)
        chat = llm.ChatContext.empty()
        chat.add_message(role="user", content="I want a refund")
        with pytest.raises(ValueError, match="issue_refund"):
            async with scripted.chat(chat_ctx=chat, tools=[]) as stream:  # the agent has no such tool
                async for _ in stream:
                    pass
        [llm_error] = errors

        session.emit("error", ErrorEvent(error=llm_error, source=scripted))  # as the session forwards it

        [message] = heard
        assert message.startswith("the offline LLM's rules: ")
        assert "issue_refund" in message
        # errors of other parts are the agent's business, not a broken offline mode
        session.emit("error", ErrorEvent(error=llm_error, source=openai.LLM()))
        assert len(heard) == 1
    finally:
        stop()


# -- credentials -----------------------------------------------------------------------------


def test_offline_environment_gives_placeholders_only(tmp_path: Path) -> None:
    values = offline_environment(tmp_path / "creds", override=True)

    assert set(PLACEHOLDER_KEYS) <= set(values)
    assert values["OPENAI_API_KEY"] == PLACEHOLDER
    assert values["LIVEKIT_REMOTE_EOT_URL"] == PLACEHOLDER_EOT_URL
    creds = Path(values["GOOGLE_APPLICATION_CREDENTIALS"])
    assert json.loads(creds.read_text())["type"] == "authorized_user"
    assert all(is_placeholder(v) for v in values.values())
    # a second call reuses the file
    assert offline_environment(tmp_path / "creds", override=True) == values


def test_offline_environment_without_override_keeps_set_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*PLACEHOLDER_KEYS, "GOOGLE_APPLICATION_CREDENTIALS", "LIVEKIT_REMOTE_EOT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no gcloud login on this "machine"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-judges-real-key")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "")  # empty counts as unset

    values = offline_environment(tmp_path, override=False)

    assert "OPENAI_API_KEY" not in values
    assert values["DEEPGRAM_API_KEY"] == PLACEHOLDER
    assert values["CARTESIA_API_KEY"] == PLACEHOLDER
    assert "GOOGLE_APPLICATION_CREDENTIALS" in values
    assert offline_environment(tmp_path, override=True)["OPENAI_API_KEY"] == PLACEHOLDER


def test_offline_environment_without_override_leaves_a_gcloud_login_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    (gcloud / "application_default_credentials.json").write_text("{}")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(gcloud))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)

    assert "GOOGLE_APPLICATION_CREDENTIALS" not in offline_environment(tmp_path / "creds", override=False)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in offline_environment(tmp_path / "creds", override=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PLACEHOLDER, True),
        (PLACEHOLDER_EOT_URL, True),
        ("/tmp/session/offline/google-placeholder-credentials.json", True),
        ("sk-proj-1234", False),
        ("", False),
        ("/home/me/.config/gcloud/application_default_credentials.json", False),
        (PLACEHOLDER + "-but-longer", False),
    ],
)
def test_is_placeholder(value: str, expected: bool) -> None:
    assert is_placeholder(value) is expected


def test_drop_cloud_model_runners_unregisters_the_turn_detectors_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livekit.agents.inference_runner import _InferenceRunner
    from livekit.plugins.turn_detector.multilingual import _EUORunnerMultilingual

    class LocalRunner(_InferenceRunner):
        INFERENCE_METHOD = "pytest_livekit_local_runner"

    runners = {
        "lk_end_of_utterance_multilingual": _EUORunnerMultilingual,
        "pytest_livekit_local_runner": LocalRunner,
    }
    monkeypatch.setattr(_InferenceRunner, "registered_runners", runners)

    substitution.drop_cloud_model_runners()

    assert runners == {"pytest_livekit_local_runner": LocalRunner}
