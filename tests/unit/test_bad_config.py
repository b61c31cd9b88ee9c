"""The bad-input matrix for configuration: each mistake gets one message that names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_livekit.errors import ConfigError, did_you_mean
from pytest_livekit.metrics.thresholds import CALL_LIMITS, plugin_table, validate_limits

WHERE = "[tool.pytest_livekit.call_types.refund]"


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        ({"ttfa_ms_max": -5}, ["ttfa_ms_max = -5 must be >= 0"]),
        ({"ttfa_ms_max": "fast"}, ["ttfa_ms_max = 'fast' is not a number"]),
        ({"ttfa_ms_max": True}, ["is not a number"]),
        ({"wer_max": float("nan")}, ["is not a number"]),
        ({"tffa_ms_max": 900}, ["'tffa_ms_max' is not a known limit", "Valid names:", "Did you mean 'ttfa_ms_max'?"]),
        ({"wer": 0.2}, ["'wer' is not a known limit", "Did you mean 'wer_max'?"]),
        ({"outcome": "transfered"}, ["is not valid. Valid outcomes:", "Did you mean 'transferred'?"]),
        ({"expected_tools": "lookup_order"}, ["must be a list of names"]),
    ],
    ids=["negative", "string", "bool", "nan", "misspelt", "no-suffix", "misspelt-outcome", "tools-not-a-list"],
)
def test_bad_limits(limits: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        validate_limits(WHERE, limits, CALL_LIMITS)
    message = str(excinfo.value)
    assert message.startswith(WHERE)
    for word in words:
        assert word in message


def test_a_pyproject_with_a_toml_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.pytest_livekit.call_types.refund]\nttfa_ms_max = 1500\nwer_max = \n')
    with pytest.raises(ConfigError) as excinfo:
        plugin_table(pyproject)
    assert str(pyproject) in str(excinfo.value)
    assert "invalid TOML" in str(excinfo.value) and "line 3" in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "choices", "hint"),
    [
        ("refnd", ["refund", "booking"], " Did you mean 'refund'?"),
        ("worker", ["in-process", "worker"], " Did you mean 'worker'?"),
        ("in_process", ["in-process", "worker"], " Did you mean 'in-process'?"),
        ("zzz", ["refund", "booking"], ""),
        (3, ["refund"], ""),
    ],
)
def test_did_you_mean(value: object, choices: list[str], hint: str) -> None:
    assert did_you_mean(value, choices) == hint
