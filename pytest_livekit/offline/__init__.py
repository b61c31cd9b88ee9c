"""Offline test doubles for the cloud AI providers of a LiveKit voice agent.

Each is a real ``livekit.agents`` plugin, so an agent under test runs unchanged, but nothing
leaves the machine and nothing is downloaded: the models ship inside the Python wheels.

* :class:`EspeakTTS` / :func:`synthesize_speech`: text-to-speech with espeak-ng.
* :class:`SphinxSTT` / :func:`build_domain_lm`: speech-to-text with pocketsphinx, streaming
  (decodes while the caller speaks) or batch.
* :class:`ScriptedLLM` / :class:`Rule`: a rule-based, deterministic LLM that calls tools.

Names are imported lazily: importing this package loads none of livekit, numpy, espeak-ng or
pocketsphinx until one of the names is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EspeakTTS": "pytest_livekit.offline.tts",
    "SpeechSynthesisError": "pytest_livekit.offline.tts",
    "synthesize_speech": "pytest_livekit.offline.tts",
    "SphinxSTT": "pytest_livekit.offline.stt",
    "SphinxSpeechStream": "pytest_livekit.offline.stt",
    "build_domain_lm": "pytest_livekit.offline.stt",
    "normalize_phrase": "pytest_livekit.offline.stt",
    "ScriptedLLM": "pytest_livekit.offline.llm",
    "Rule": "pytest_livekit.offline.llm",
    "ToolCallSpec": "pytest_livekit.offline.llm",
    "tool": "pytest_livekit.offline.llm",
}

__all__ = [
    "EspeakTTS",
    "Rule",
    "ScriptedLLM",
    "SpeechSynthesisError",
    "SphinxSTT",
    "SphinxSpeechStream",
    "ToolCallSpec",
    "build_domain_lm",
    "normalize_phrase",
    "synthesize_speech",
    "tool",
]

if TYPE_CHECKING:
    from pytest_livekit.offline.llm import Rule, ScriptedLLM, ToolCallSpec, tool
    from pytest_livekit.offline.stt import SphinxSpeechStream, SphinxSTT, build_domain_lm, normalize_phrase
    from pytest_livekit.offline.tts import EspeakTTS, SpeechSynthesisError, synthesize_speech


def __getattr__(name: str) -> Any:
    """Import a public name on first access.

    Args:
        name: The attribute asked for.

    Returns:
        The object from its submodule.

    Raises:
        AttributeError: If ``name`` is not exported.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_livekit.offline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """List the public names, including the not-yet-imported ones."""
    return sorted(set(globals()) | set(__all__))
