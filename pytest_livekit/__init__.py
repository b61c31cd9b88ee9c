"""pytest-livekit: regression-test LiveKit voice agents with real calls through a real server.

Public names are imported lazily so that loading the plugin in a pytest run that uses no LiveKit
fixture imports nothing heavy (no livekit, numpy or jiwer).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

# Must run before anything imports the module, so pytest rewrites its asserts.
pytest.register_assert_rewrite("pytest_livekit.assertions")

from pytest_livekit import _moved  # noqa: E402 - after the rewrite registration

_moved.install()  # old flat module paths (pytest_livekit.scenarios, ...) keep working

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
    "Scenario": "pytest_livekit.call.scenarios",
    "load_scenarios": "pytest_livekit.call.scenarios",
    "compute_metrics": "pytest_livekit.metrics.call_metrics",
    "LivekitServer": "pytest_livekit.server.binary",
    "find_server_binary": "pytest_livekit.server.binary",
    "LivekitCall": "pytest_livekit.call.livekit_call",
    "LivekitSession": "pytest_livekit.session",
    "ScriptedCaller": "pytest_livekit.call.caller",
    "InProcessAgent": "pytest_livekit.agent.in_process",
    "AgentTarget": "pytest_livekit.agent.in_process",
    "resolve_agent_target": "pytest_livekit.agent.in_process",
    "CallRecord": "pytest_livekit.call.record",
    "time_to_first_audio": "pytest_livekit.metrics.turns",
    "word_error_rate": "pytest_livekit.metrics.turns",
    "user_transcript": "pytest_livekit.metrics.turns",
    "PytestLivekitError": "pytest_livekit.errors",
    "CallReplay": "pytest_livekit.outputs.replay",
    "build_trace": "pytest_livekit.outputs.trace",
    "load_trace": "pytest_livekit.outputs.trace",
    "write_report": "pytest_livekit.outputs.report",
    "voice_run_result": "pytest_livekit.call.expect",
    "OfflinePlan": "pytest_livekit.agent.substitution",
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
    from pytest_livekit.agent.in_process import AgentTarget, InProcessAgent, resolve_agent_target
    from pytest_livekit.agent.substitution import OfflinePlan
    from pytest_livekit.assertions import (
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
    from pytest_livekit.call.caller import ScriptedCaller
    from pytest_livekit.call.expect import voice_run_result
    from pytest_livekit.call.livekit_call import LivekitCall
    from pytest_livekit.call.record import CallRecord
    from pytest_livekit.call.scenarios import Scenario, load_scenarios
    from pytest_livekit.errors import PytestLivekitError
    from pytest_livekit.metrics.call_metrics import compute_metrics
    from pytest_livekit.metrics.turns import time_to_first_audio, user_transcript, word_error_rate
    from pytest_livekit.outputs.replay import CallReplay
    from pytest_livekit.outputs.report import write_report
    from pytest_livekit.outputs.trace import build_trace, load_trace
    from pytest_livekit.server.binary import LivekitServer, find_server_binary
    from pytest_livekit.session import LivekitSession


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_livekit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
