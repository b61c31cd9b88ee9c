"""pytest-livekit: regression-test LiveKit voice agents with real calls through a real server.

Public names are imported lazily so that loading the plugin in a pytest run that uses no LiveKit
fixture imports nothing heavy (no livekit, numpy or jiwer).

PYTEST_DONT_REWRITE: only ``assertions`` needs pytest's assert rewriting; skipping it for
the rest keeps imports fast (and avoids a CPython 3.11 ast.parse bug seen under deep stacks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

# Must run before anything imports the module, so pytest rewrites its asserts.
pytest.register_assert_rewrite("pytest_livekit.assertions")

__version__ = "0.1.0"

_EXPORTS = {
    "assert_time_to_first_audio": "pytest_livekit.assertions",
    "assert_asr_accuracy": "pytest_livekit.assertions",
    "assert_tool_called": "pytest_livekit.assertions",
    "assert_tool_not_called": "pytest_livekit.assertions",
    "assert_tools_called_in_order": "pytest_livekit.assertions",
    "assert_within_limits": "pytest_livekit.assertions",
    "assert_no_duplicated_turns": "pytest_livekit.assertions",
    "assert_outcome": "pytest_livekit.assertions",
    "assert_barge_in_stopped": "pytest_livekit.assertions",
    "assert_answers_interruption": "pytest_livekit.assertions",
    "assert_no_reply_during_pause": "pytest_livekit.assertions",
    "assert_reply_after_reconnect": "pytest_livekit.assertions",
    "assert_backchannel_ignored": "pytest_livekit.assertions",
    "assert_task_completed": "pytest_livekit.assertions",
    "Scenario": "pytest_livekit.scenarios",
    "load_scenarios": "pytest_livekit.scenarios",
    "compute_metrics": "pytest_livekit.call_metrics",
    "LivekitServer": "pytest_livekit.server",
    "find_server_binary": "pytest_livekit.server",
    "LivekitCall": "pytest_livekit.call",
    "LivekitSession": "pytest_livekit.session",
    "ScriptedCaller": "pytest_livekit.caller",
    "InProcessAgent": "pytest_livekit.agent_runner",
    "AgentTarget": "pytest_livekit.agent_runner",
    "resolve_agent_target": "pytest_livekit.agent_runner",
    "CallRecord": "pytest_livekit.record",
    "time_to_first_audio": "pytest_livekit.metrics",
    "word_error_rate": "pytest_livekit.metrics",
    "user_transcript": "pytest_livekit.metrics",
    "PytestLivekitError": "pytest_livekit.errors",
    "CallReplay": "pytest_livekit.replay",
    "build_trace": "pytest_livekit.trace",
    "load_trace": "pytest_livekit.trace",
    "write_report": "pytest_livekit.report",
    "voice_run_result": "pytest_livekit.expect",
    "OfflinePlan": "pytest_livekit.substitution",
}

# written out (not computed from _EXPORTS) so type checkers see the exports; a unit test keeps
# the two equal
__all__ = [
    "AgentTarget",
    "CallRecord",
    "CallReplay",
    "InProcessAgent",
    "LivekitCall",
    "LivekitServer",
    "LivekitSession",
    "OfflinePlan",
    "PytestLivekitError",
    "Scenario",
    "ScriptedCaller",
    "assert_answers_interruption",
    "assert_asr_accuracy",
    "assert_backchannel_ignored",
    "assert_barge_in_stopped",
    "assert_no_duplicated_turns",
    "assert_no_reply_during_pause",
    "assert_outcome",
    "assert_reply_after_reconnect",
    "assert_task_completed",
    "assert_time_to_first_audio",
    "assert_tool_called",
    "assert_tool_not_called",
    "assert_tools_called_in_order",
    "assert_within_limits",
    "build_trace",
    "compute_metrics",
    "find_server_binary",
    "load_scenarios",
    "load_trace",
    "resolve_agent_target",
    "time_to_first_audio",
    "user_transcript",
    "voice_run_result",
    "word_error_rate",
    "write_report",
    "__version__",
]

if TYPE_CHECKING:
    from .agent_runner import AgentTarget, InProcessAgent, resolve_agent_target
    from .assertions import (
        assert_answers_interruption,
        assert_asr_accuracy,
        assert_backchannel_ignored,
        assert_barge_in_stopped,
        assert_no_duplicated_turns,
        assert_no_reply_during_pause,
        assert_outcome,
        assert_reply_after_reconnect,
        assert_task_completed,
        assert_time_to_first_audio,
        assert_tool_called,
        assert_tool_not_called,
        assert_tools_called_in_order,
        assert_within_limits,
    )
    from .call import LivekitCall
    from .call_metrics import compute_metrics
    from .caller import ScriptedCaller
    from .errors import PytestLivekitError
    from .expect import voice_run_result
    from .metrics import time_to_first_audio, user_transcript, word_error_rate
    from .record import CallRecord
    from .replay import CallReplay
    from .report import write_report
    from .scenarios import Scenario, load_scenarios
    from .server import LivekitServer, find_server_binary
    from .session import LivekitSession
    from .substitution import OfflinePlan
    from .trace import build_trace, load_trace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_livekit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
