"""Run the team's own agent offline: swap its cloud providers for pytest-livekit's doubles.

The agent under test is the file the team ships, unmodified. In ``offline`` mode (the default)
this module patches livekit-agents where the agent hands over its providers, so that whatever
the agent file builds, the call runs on the offline doubles:

* ``AgentSession(...)`` and ``Agent(...)`` keyword arguments (also agents handed over later in
  the call, and ``Agent.update_options``): every STT, LLM, TTS or realtime model that is a
  LiveKit Inference string or object or a provider plugin object (any ``livekit.plugins.*``
  package but the local ones, e.g. silero) becomes :class:`~pytest_livekit.offline.SphinxSTT`,
  :class:`~pytest_livekit.offline.ScriptedLLM` or :class:`~pytest_livekit.offline.EspeakTTS`;
  a realtime model becomes the three of them;
* a turn detector model (LiveKit's or the turn-detector plugin's) becomes VAD turn detection,
  and adaptive (cloud) interruption becomes VAD interruption;
* an input noise filter in ``session.start(room_options=...)`` is removed (cloud or licensed);
* local parts stay: silero VAD, the agent's own code, anything not from a provider package.

Provider constructors check for API keys before anything is sent, so the agent file can only
be imported and run if keys exist: :func:`offline_environment` gives placeholder values for the
known providers (never real ones; nothing is sent with them — the :mod:`network guard
<pytest_livekit.agent.netguard>` fails the test on any attempt to leave the machine).

Which doubles a call gets (the LLM's rules, the STT's vocabulary) is an :class:`OfflinePlan`,
registered per room name by the test (:func:`register_plan`), read by the agent wherever it runs:
in the test process, or in a worker's job process through a JSON file in
``PYTEST_LIVEKIT_OFFLINE_DIR``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PROVIDER_MODES",
    "OFFLINE_DIR_ENV",
    "OfflinePlan",
    "Substitution",
    "ViolationError",
    "current_room_name",
    "install",
    "is_cloud_part",
    "offline_environment",
    "plan_for_room",
    "register_plan",
    "report_violation",
    "substitutions_for_room",
    "unregister_plan",
    "watch_room",
]

PROVIDER_MODES = ("offline", "real")
"""``offline``: the agent's cloud parts are replaced by doubles; ``real``: kept as written."""

OFFLINE_DIR_ENV = "PYTEST_LIVEKIT_OFFLINE_DIR"
"""Environment variable naming the folder of per-room plans (``<room>.json``) for workers."""

VIOLATION_MARKER = "pytest-livekit offline violation:"
"""Prefix of the log line a worker's job writes when offline mode is broken (the test reads it)."""

PLACEHOLDER = "pytest-livekit-offline-placeholder"
"""The value of every placeholder credential: recognisable in any log, accepted by no service."""

#: Credentials the provider constructors check before anything is sent. Placeholders let an
#: agent file that builds ``deepgram.STT()`` at import or in its entrypoint run at all.
PLACEHOLDER_KEYS = (
    "LIVEKIT_INFERENCE_API_KEY",
    "LIVEKIT_INFERENCE_API_SECRET",
    "OPENAI_API_KEY",
    "DEEPGRAM_API_KEY",
    "CARTESIA_API_KEY",
    "ELEVEN_API_KEY",
    "ASSEMBLYAI_API_KEY",
    "GOOGLE_API_KEY",
    "ANTHROPIC_API_KEY",
    "GROQ_API_KEY",
)

#: The turn-detector plugin loads its language table from the model hub at construction unless
#: it is told to use a remote endpoint; the endpoint is never called (the detector is replaced).
TURN_DETECTOR_ENV = "LIVEKIT_REMOTE_EOT_URL"
PLACEHOLDER_EOT_URL = "http://turn-detector.pytest-livekit.invalid"
"""Its placeholder (``.invalid`` never resolves)."""

#: ``livekit.plugins.*`` packages that run on the machine and are kept in offline mode.
LOCAL_PLUGIN_PACKAGES = frozenset({"silero"})

logger = logging.getLogger("pytest_livekit.agent.substitution")


class ViolationError(RuntimeError):
    """Offline mode was broken during a call: an unsubstituted provider tried to reach the
    network, or a double was misconfigured (e.g. an LLM rule calls a tool the agent lacks).
    """


@dataclass(frozen=True)
class Substitution:
    """One cloud part replaced by a double, for the call's trace and messages."""

    where: str
    """Where the agent set it, e.g. ``AgentSession(stt=...)`` or ``SupportAgent(llm=...)``."""
    original: str
    """What the agent asked for, e.g. ``inference.STT deepgram/nova-3``."""
    replacement: str
    """The double that ran instead, e.g. ``SphinxSTT (suite vocabulary)``."""


@dataclass
class OfflinePlan:
    """What the offline doubles of one call do. JSON-serialisable (it travels to workers).

    The LLM rules are in the declarative form of :mod:`pytest_livekit.agent.llm_rules` (dicts), or
    :class:`~pytest_livekit.offline.Rule` objects for an in-process agent.
    """

    llm_rules: list[Any] = field(default_factory=list)
    """Rules of the scripted LLM, tried in order."""
    default_reply: str = "Okay."
    """What the scripted LLM says when no rule matches (latency and condition tests need no rules)."""
    greeting: str | None = None
    """What it says when the agent speaks first (``generate_reply`` before the caller spoke)."""
    stt_phrases: list[str] = field(default_factory=list)
    """The suite's vocabulary: the STT's domain language model is built from these once per run."""
    stt_model: str = "domain"
    """``domain`` (a model of :attr:`stt_phrases`) or ``generic`` (pocketsphinx's open vocabulary)."""
    time_to_first_token: float = 0.0
    """Simulated model latency of the scripted LLM, in seconds."""
    source: str = "default"
    """Where the rules came from, for messages (``call type refund``, ``marker``, ...)."""

    def to_json(self) -> str:
        """The plan as JSON (rules given as objects are not serialisable: use dicts for workers)."""
        data = asdict(self)
        data["llm_rules"] = [r if isinstance(r, dict) else _rule_to_dict(r) for r in self.llm_rules]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> OfflinePlan:
        """Read a plan written by :meth:`to_json`."""
        return cls(**json.loads(text))


def _rule_to_dict(rule: Any) -> Any:
    to_dict = getattr(rule, "to_dict", None)
    if to_dict is None:
        raise TypeError(
            f"an LLM rule for a worker must be declarative (a dict), got {rule!r}.\n"
            "Hint: write rules as dicts (see the README, 'Testing the agent you already have')."
        )
    return to_dict()


# ---------------------------------------------------------------------------------------------
# Plans per room, and who to tell when offline mode breaks

_lock = threading.Lock()
_plans: dict[str, OfflinePlan] = {}
_watchers: dict[str, list[Callable[[str], None]]] = {}
_applied: dict[str, list[Substitution]] = {}


def register_plan(room_name: str, plan: OfflinePlan, *, folder: Path | None = None) -> None:
    """Make ``plan`` the doubles' behaviour for the call in ``room_name``.

    Args:
        room_name: The call's room.
        plan: What the doubles do.
        folder: Also write it as ``<folder>/<room>.json`` for an agent in a worker process
            (the worker's ``PYTEST_LIVEKIT_OFFLINE_DIR``).
    """
    with _lock:
        _plans[room_name] = plan
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{room_name}.json.tmp"
        tmp.write_text(plan.to_json())
        tmp.replace(folder / f"{room_name}.json")  # a job never reads half a file


def unregister_plan(room_name: str, *, folder: Path | None = None) -> None:
    """Forget the room's plan, watchers and substitutions (the call ended)."""
    with _lock:
        _plans.pop(room_name, None)
        _watchers.pop(room_name, None)
        _applied.pop(room_name, None)
    if folder is not None:
        for name in (f"{room_name}.json", f"{room_name}.applied.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()


def plan_for_room(room_name: str | None) -> OfflinePlan:
    """The plan registered for ``room_name`` (in memory, else from the worker's folder), or the
    default plan (default reply only, generic vocabulary) when none is known.
    """
    if room_name is not None:
        with _lock:
            plan = _plans.get(room_name)
        if plan is not None:
            return plan
        folder = os.environ.get(OFFLINE_DIR_ENV)
        if folder:
            path = Path(folder) / f"{room_name}.json"
            if path.is_file():
                plan = OfflinePlan.from_json(path.read_text())
                with _lock:
                    _plans[room_name] = plan
                return plan
    return OfflinePlan(stt_model="generic")


def watch_room(room_name: str, callback: Callable[[str], None]) -> Callable[[], None]:
    """Call ``callback(message)`` (from any thread) when offline mode breaks in ``room_name``.

    Returns:
        A function that stops watching.
    """
    with _lock:
        _watchers.setdefault(room_name, []).append(callback)

    def stop() -> None:
        with _lock:
            callbacks = _watchers.get(room_name, [])
            if callback in callbacks:
                callbacks.remove(callback)

    return stop


def report_violation(message: str, room_name: str | None = None) -> None:
    """Say that offline mode broke: log it (a worker's test reads the line) and tell the watchers
    of ``room_name`` — or of every room, when the room is not known (a resolver thread).
    """
    logger.error("%s %s", VIOLATION_MARKER, message)
    with _lock:
        if room_name is not None and room_name in _watchers:
            targets = list(_watchers[room_name])
        else:
            targets = [cb for cbs in _watchers.values() for cb in cbs]
    for callback in targets:
        callback(message)


def substitutions_for_room(room_name: str, *, folder: Path | None = None) -> list[Substitution]:
    """What was replaced in the room's agent so far: in this process, or by a worker's job that
    wrote it next to the plan in ``folder``.
    """
    with _lock:
        found = list(_applied.get(room_name, []))
    path = folder / f"{room_name}.applied.jsonl" if folder is not None else None
    if path is not None and path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                found.append(Substitution(**json.loads(line)))
    return found


def current_room_name() -> str | None:
    """The room of the livekit-agents job this code runs in, if any."""
    try:
        from livekit.agents import get_job_context

        ctx = get_job_context()
    except Exception:
        return None
    with contextlib.suppress(Exception):
        return str(ctx.job.room.name) or ctx.room.name
    return None


def _note(where: str, original: Any, replacement: Any) -> None:
    room = current_room_name()
    sub = Substitution(where, describe_part(original), describe_part(replacement))
    logger.info("pytest-livekit offline: %s: %s -> %s", sub.where, sub.original, sub.replacement)
    if room is not None:
        with _lock:
            _applied.setdefault(room, []).append(sub)
        folder = os.environ.get(OFFLINE_DIR_ENV)
        if folder:  # a worker's job: the test reads what was replaced from the plan's folder
            with contextlib.suppress(OSError), open(Path(folder) / f"{room}.applied.jsonl", "a") as f:
                f.write(json.dumps(asdict(sub)) + "\n")


# ---------------------------------------------------------------------------------------------
# What is a cloud part


def _package_of(obj: Any) -> str:
    return getattr(type(obj), "__module__", "") or ""


def is_cloud_part(obj: Any) -> bool:
    """Whether ``obj`` is a provider that would reach a service: a LiveKit Inference model name
    or object, a ``livekit.plugins.*`` object (but the local ones such as silero), or a
    livekit fallback/stream adapter wrapping one.
    """
    from livekit.agents.types import NotGiven

    if obj is None or isinstance(obj, NotGiven):
        return False
    if isinstance(obj, str):
        return True  # "deepgram/nova-3": a LiveKit Inference model string
    module = _package_of(obj)
    if module.startswith("livekit.agents.inference"):
        return not module.startswith("livekit.agents.inference.vad")  # the local VAD stays
    if module.startswith("livekit.plugins."):
        return module.split(".")[2] not in LOCAL_PLUGIN_PACKAGES
    if module.startswith("livekit.agents.") and "Adapter" in type(obj).__name__:
        return any(is_cloud_part(inner) for inner in _wrapped_parts(obj))
    return False


def _wrapped_parts(adapter: Any) -> Iterator[Any]:
    """The providers a livekit adapter wraps (FallbackAdapter lists, StreamAdapter's inner one)."""
    for name, value in vars(adapter).items():
        if name in {"_stt", "_tts", "_llm", "_wrapped_stt", "_wrapped_tts"}:
            yield value
        elif isinstance(value, (list, tuple)) and name.endswith(("instances", "_stts", "_ttss", "_llms")):
            yield from value


def describe_part(obj: Any) -> str:
    """A short name for a provider: ``inference.STT deepgram/nova-3``, ``deepgram.STT``, ..."""
    if isinstance(obj, str):
        # "deepgram/nova-3" is a LiveKit Inference model; "vad", "none", ... are plain labels
        return f"LiveKit Inference {obj!r}" if "/" in obj else obj
    module = _package_of(obj)
    parts = module.split(".")
    if module.startswith("livekit.plugins.") and len(parts) > 2:
        prefix = parts[2]
    elif module.startswith("livekit.agents.inference"):
        prefix = "inference"
    else:
        prefix = parts[-1] if parts else "?"
    model = getattr(obj, "model", None)
    model_text = f" {model}" if isinstance(model, str) and model and model != "unknown" else ""
    return f"{prefix}.{type(obj).__name__}{model_text}"


# ---------------------------------------------------------------------------------------------
# The doubles


_stt_cache: dict[tuple[str, tuple[str, ...]], Any] = {}
_stt_cache_lock = threading.Lock()


def offline_stt(plan: OfflinePlan) -> Any:
    """The STT double of a plan: one prewarmed :class:`SphinxSTT` per vocabulary and process,
    shared by every call (a model per utterance would make the test answer itself).
    """
    from pytest_livekit.offline import SphinxSTT

    phrases = tuple(plan.stt_phrases) if plan.stt_model == "domain" else ()
    key = (plan.stt_model if phrases else "generic", phrases)
    with _stt_cache_lock:
        stt = _stt_cache.get(key)
        if stt is None:
            stt = SphinxSTT(phrases=list(phrases) or None)
            stt.prewarm()
            _stt_cache[key] = stt
    return stt


def offline_tts(plan: OfflinePlan) -> Any:
    """The TTS double: espeak-ng."""
    from pytest_livekit.offline import EspeakTTS

    return EspeakTTS()


def offline_llm(plan: OfflinePlan) -> Any:
    """The LLM double: a :class:`ScriptedLLM` with the plan's rules and default reply."""
    from pytest_livekit.agent.llm_rules import parse_rules
    from pytest_livekit.offline import ScriptedLLM

    rules = parse_rules(list(plan.llm_rules), plan.source)
    return ScriptedLLM(
        rules,
        fallback=plan.default_reply,
        greeting=plan.greeting,
        time_to_first_token=plan.time_to_first_token,
    )


# ---------------------------------------------------------------------------------------------
# Patching livekit-agents


_installed = False
_install_lock = threading.Lock()
_active = threading.Event()


def install() -> None:
    """Patch livekit-agents so that sessions and agents built from now on in this process get
    the doubles (idempotent; :func:`activate` / :func:`deactivate` switch it on and off).
    """
    global _installed
    with _install_lock:
        if not _installed:
            from livekit.agents import Agent, AgentSession

            _wrap(AgentSession, "__init__", _session_init)
            _wrap(AgentSession, "start", _session_start)
            _wrap(Agent, "__init__", _agent_init)
            if hasattr(Agent, "update_options"):  # livekit-agents 1.6.6+
                _wrap(Agent, "update_options", _agent_update_options)
            _installed = True
    _active.set()  # also after a deactivate(): the patches stay installed


def activate() -> None:
    """Substitute from now on (installs the patches if needed)."""
    install()
    _active.set()  # install() returns early once installed: switch on here too


def deactivate() -> None:
    """Stop substituting (the patches stay in place and pass through)."""
    _active.clear()


def is_active() -> bool:
    """Whether sessions and agents built now get the doubles."""
    return _active.is_set()


@contextlib.contextmanager
def offline_providers() -> Iterator[None]:
    """Substitute inside the block only (for a call driven without pytest)."""
    activate()
    try:
        yield
    finally:
        deactivate()


def _wrap(cls: type, name: str, replacement: Callable[..., Any]) -> None:
    original = getattr(cls, name)
    if getattr(original, "__pytest_livekit_original__", None) is not None:
        return

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _active.is_set():
            return original(self, *args, **kwargs)
        return replacement(original, self, *args, **kwargs)

    wrapper.__pytest_livekit_original__ = original  # type: ignore[attr-defined]
    setattr(cls, name, wrapper)


def _session_init(original: Callable[..., Any], session: Any, *args: Any, **kwargs: Any) -> None:
    plan = plan_for_room(current_room_name())
    _replace_models(kwargs, plan, "AgentSession", session_level=True)
    _offline_turn_handling(kwargs, "AgentSession", session_level=True)
    original(session, *args, **kwargs)
    _vad_interruption(session, "AgentSession", session_level=True)
    session.on("error", functools.partial(_on_session_error, current_room_name()))


def _agent_init(original: Callable[..., Any], agent: Any, *args: Any, **kwargs: Any) -> None:
    plan = plan_for_room(current_room_name())
    where = type(agent).__name__
    _replace_models(kwargs, plan, where, session_level=False)
    _offline_turn_handling(kwargs, where, session_level=False)
    original(agent, *args, **kwargs)
    _vad_interruption(agent, where, session_level=False)


def _vad_interruption(owner: Any, where: str, *, session_level: bool) -> None:
    """Adaptive interruption is a LiveKit Cloud model: offline, the VAD decides barge-in.

    The legacy keyword arguments (``turn_detection=``, ``preemptive_generation=``, as the starter
    template writes them) cannot say the interruption mode, and livekit may pick the adaptive
    one by itself, so the mode is set on the built object (its only attribute for it).
    """
    mode = getattr(owner, "_interruption_detection", None)
    if mode == "adaptive" or (session_level and mode != "vad"):
        if mode == "adaptive":
            _note(f"{where}(interruption mode)", "adaptive", "vad")
        owner._interruption_detection = "vad"  # noqa: SLF001


def _agent_update_options(original: Callable[..., Any], agent: Any, *args: Any, **kwargs: Any) -> None:
    plan = plan_for_room(current_room_name())
    _replace_models(kwargs, plan, f"{type(agent).__name__}.update_options", session_level=False)
    original(agent, *args, **kwargs)


def _replace_models(kwargs: dict[str, Any], plan: OfflinePlan, where: str, *, session_level: bool) -> None:
    from livekit.agents import llm as lk_llm

    model = kwargs.get("llm")
    realtime = model is not None and isinstance(model, lk_llm.RealtimeModel) and is_cloud_part(model)
    realtime = realtime or (isinstance(model, str) and "realtime" in model.lower())
    makers = {"stt": offline_stt, "llm": offline_llm, "tts": offline_tts}
    for key, make in makers.items():
        value = kwargs.get(key)
        if is_cloud_part(value):
            double = make(plan)
            _note(f"{where}({key}=...)", value, double)
            kwargs[key] = double
    if realtime:
        # A speech-to-speech model hears and speaks itself; its pipeline stand-in needs ears and a
        # voice, on the session or on the agent that carries the model (the session may have none).
        from livekit.agents.types import NotGiven

        for key, make in (("stt", offline_stt), ("tts", offline_tts)):
            if kwargs.get(key) is None or isinstance(kwargs.get(key), NotGiven):
                double = make(plan)
                _note(f"{where}({key}=...) for the realtime model", "none", double)
                kwargs[key] = double


def _offline_turn_handling(kwargs: dict[str, Any], where: str, *, session_level: bool) -> None:
    """Turn detector models become VAD turns; adaptive (cloud) interruption becomes VAD."""
    from livekit.agents.types import NotGiven

    handling = kwargs.get("turn_handling")
    if isinstance(handling, Mapping):
        handling = dict(handling)
        detector = handling.get("turn_detection", None if session_level else _ABSENT)
        if detector is not _ABSENT and _needs_vad_turns(detector):
            _note(f"{where}(turn_detection=...)", detector if detector is not None else "default", "vad")
            handling["turn_detection"] = "vad"
        interruption = handling.get("interruption")
        if isinstance(interruption, Mapping) and interruption.get("mode") == "adaptive":
            _note(f"{where}(interruption mode)", "adaptive", "vad")
            handling["interruption"] = {**interruption, "mode": "vad"}
        elif session_level and not isinstance(interruption, Mapping):
            handling["interruption"] = {"mode": "vad"}
        kwargs["turn_handling"] = handling
        return
    legacy = kwargs.get("turn_detection", _ABSENT)
    if legacy is not _ABSENT and not isinstance(legacy, NotGiven):
        if _needs_vad_turns(legacy):
            _note(f"{where}(turn_detection=...)", legacy, "vad")
            kwargs["turn_detection"] = "vad"
        return
    if session_level and not any(
        k in kwargs and not isinstance(kwargs[k], NotGiven)
        for k in ("min_endpointing_delay", "max_endpointing_delay", "allow_interruptions",
                  "min_interruption_duration", "min_interruption_words", "preemptive_generation",
                  "false_interruption_timeout", "resume_false_interruption",
                  "discard_audio_if_uninterruptible", "agent_false_interruption_timeout")
    ):
        # Nothing said: livekit's default is its own turn-detector model; offline, the VAD decides.
        _note(f"{where}(turn_detection default)", "LiveKit turn detector", "vad")
        kwargs["turn_handling"] = {"turn_detection": "vad", "interruption": {"mode": "vad"}}
    elif session_level:
        _note(f"{where}(turn_detection default)", "LiveKit turn detector", "vad")
        kwargs["turn_detection"] = "vad"


_ABSENT = object()


def _needs_vad_turns(detector: Any) -> bool:
    if detector is None:
        return True  # the session's default: LiveKit's turn-detector model
    if isinstance(detector, str):
        return detector == "realtime_llm"  # the realtime model is replaced by a pipeline
    return True  # a turn detector model object (LiveKit's or the turn-detector plugin's)


def _session_start(original: Callable[..., Any], session: Any, *args: Any, **kwargs: Any) -> Any:
    for key in ("room_options", "room_input_options"):
        options = kwargs.get(key)
        if options is not None:
            kwargs[key] = _without_noise_filter(options, key)
    agent = kwargs.get("agent", args[0] if args else None)
    if agent is not None:
        _check_rules_against(agent, session)
    return original(session, *args, **kwargs)


def _check_rules_against(agent: Any, session: Any) -> None:
    """Check the offline LLM's rules against the agent's real tool schemas as soon as the agent
    starts (a rule that would call a tool wrongly fails the call now, not when it fires).
    Tools not offered yet may belong to an agent handed over later: checked when they fire.
    """
    from pytest_livekit.offline import ScriptedLLM

    for model in (getattr(agent, "_llm", None), getattr(session, "_llm", None)):
        if isinstance(model, ScriptedLLM):
            tools = [*getattr(agent, "tools", []), *getattr(session, "tools", [])]
            model.check_rules(tools, allow_unknown_tools=True)
            return


def _without_noise_filter(options: Any, key: str) -> Any:
    """A copy of room options without the input noise filter (cloud or licensed, not offline)."""
    import copy

    audio_input = getattr(options, "audio_input", None)
    nested = audio_input is not None and not isinstance(audio_input, bool)  # RoomOptions.audio_input
    current = getattr(audio_input if nested else options, "noise_cancellation", None)
    if current is None:
        return options
    options = copy.copy(options)
    target: Any
    if nested:
        target = copy.copy(audio_input)
        options.audio_input = target
    else:
        target = options  # the copy (legacy RoomInputOptions): the agent's own object stays as it is
    target.noise_cancellation = None
    _note(f"session.start({key}=...noise_cancellation)", current, "none")
    return options


def _on_session_error(room_name: str | None, event: Any) -> None:
    """An error of one of our doubles is a test setup problem: fail the call with its text."""
    from pytest_livekit.offline import ScriptedLLM

    source = getattr(event, "source", None)
    error = getattr(event, "error", None)
    inner = getattr(error, "error", error)
    if isinstance(source, ScriptedLLM) and isinstance(inner, ValueError):
        report_violation(f"the offline LLM's rules: {inner}", room_name)


def drop_cloud_model_runners() -> None:
    """Unregister the turn-detector plugin's local model runners in a worker: importing the plugin
    registers them, and the worker's inference process would then load weights that come from a
    model hub (absent offline). The detector itself is replaced by VAD turns.
    """
    try:
        from livekit.agents.inference_runner import _InferenceRunner
    except ImportError:
        return
    runners = _InferenceRunner.registered_runners
    for method, runner in list(runners.items()):
        if getattr(runner, "__module__", "").startswith("livekit.plugins.turn_detector"):
            del runners[method]
            logger.info("pytest-livekit offline: not loading %s (turn detector replaced by VAD)", method)


# ---------------------------------------------------------------------------------------------
# Environment


def offline_environment(folder: Path, *, override: bool) -> dict[str, str]:
    """Placeholder credentials for an agent process in offline mode.

    Args:
        folder: Where to write the placeholder Google credentials file.
        override: Replace values already set (a worker: the agent must never see a real key);
            an in-process agent shares the test's environment, where a test may need a real key
            (e.g. an LLM judge), so there only unset values are filled.

    Returns:
        Variables to set.
    """
    env = {name: PLACEHOLDER for name in PLACEHOLDER_KEYS}
    env[TURN_DETECTOR_ENV] = PLACEHOLDER_EOT_URL
    # google.STT asks google-auth for application default credentials at construction; an
    # authorized-user file is accepted without any request (the request would be the first use).
    folder.mkdir(parents=True, exist_ok=True)
    creds = folder / "google-placeholder-credentials.json"
    if not creds.exists():
        creds.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": PLACEHOLDER,
                    "client_secret": PLACEHOLDER,
                    "refresh_token": PLACEHOLDER,
                }
            )
        )
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(creds)
    if not override and _has_gcloud_credentials():
        del env["GOOGLE_APPLICATION_CREDENTIALS"]  # google-auth would find the user's own file
    if not override:
        env = {k: v for k, v in env.items() if not os.environ.get(k)}
    return env


def _has_gcloud_credentials() -> bool:
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud")
    return Path(config, "application_default_credentials.json").is_file()


def is_placeholder(value: str) -> bool:
    """Whether an environment value is one of :func:`offline_environment`'s placeholders (a
    ``real`` agent must not inherit them from a test process that runs offline calls too).
    """
    return (
        value == PLACEHOLDER
        or value == PLACEHOLDER_EOT_URL
        or value.endswith("google-placeholder-credentials.json")
    )


def describe_substitutions(items: Sequence[Substitution]) -> list[dict[str, str]]:
    """Substitutions as JSON rows for the call's trace."""
    return [asdict(s) for s in items]
