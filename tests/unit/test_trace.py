"""The call trace, session JSONL, JUnit properties, progress line and replay set-up (pure code)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pytest_livekit.call.record import (
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    StateChange,
    ToolCall,
    Transcript,
)
from pytest_livekit.errors import ConfigError
from pytest_livekit.outputs.artifacts import junit_properties, read_session_jsonl, write_session_jsonl
from pytest_livekit.outputs.replay import CallReplay
from pytest_livekit.outputs.trace import (
    TRACE_SCHEMA,
    TRACE_SCHEMA_VERSION,
    build_trace,
    load_trace,
    redact_text,
    write_trace,
)
from pytest_livekit.pytest_run.progress import CallProgress, ProgressLine, describe_step

SECRET = "s3cr3t-" + "x" * 57
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYWxsZXIiLCJ2aWRlbyI6e319.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _record() -> CallRecord:
    rec = CallRecord(call_id="test_refund-abcd", call_type="refund", started_at_epoch=1_800_000_000.0)
    rec.agent_spec = "agents.support:server"
    rec.room_sid = "RM_x"
    rec.participants = [{"identity": "caller", "sid": "PA_1", "role": "caller", "kind": "standard"}]
    rec.conditions = {"format_version": 1, "seed": 7, "items": [{"kind": "noise", "snr_db": 10.0}]}
    rec.caller_turns = [CallerTurn(0, "tts:en-us@140wpm", "I want a refund", 0.5, 2.0)]
    rec.state_changes = [
        StateChange(2.9, "agent", "listening", "thinking"),
        StateChange(3.1, "agent", "thinking", "speaking"),
        StateChange(5.0, "agent", "speaking", "listening"),
    ]
    rec.items = [
        ConversationItem(2.8, "user", "i want a refund"),
        ConversationItem(5.0, "assistant", "Sure.", metrics={"e2e_latency": 0.9, "llm_node_ttft": 0.01}),
    ]
    rec.heard = [HeardSegment(3.2, 4.9)]
    rec.transcripts = [Transcript(2.5, "i want", False), Transcript(2.7, "i want a refund", True)]
    rec.tool_calls = [ToolCall(3.0, "lookup_order", {"order_id": "1234"}, output="found")]
    rec.script = [{"action": "say", "t": 0.4, "text": "I want a refund", "wait_for_listening": True,
                   "conditions": None, "pause": None},
                  {"action": "wait_for_agent_reply", "t": 2.0, "timeout": 30.0}]
    return rec


METRICS = {"turns": [{"index": 0, "ttfa": 1.2, "wer": 0.0, "stt_text": "i want a refund"}],
           "wer": 0.0, "cer": 0.0, "ttfa_p50": 1.2, "outcome": "resolved"}


def test_trace_carries_the_schema_and_every_section() -> None:
    trace = build_trace(_record(), metrics=METRICS, limits={"ttfa_ms_max": 1500}, breaches=[],
                        test={"nodeid": "t.py::test_refund", "outcome": "passed"})
    assert (trace["schema"], trace["schema_version"]) == (TRACE_SCHEMA, TRACE_SCHEMA_VERSION)
    assert trace["call"]["started_at"] == "2027-01-15T08:00:00Z"
    assert trace["call"]["outcome"] == "resolved"
    assert trace["conditions"]["seed"] == 7
    assert [t["who"] for t in trace["turns"]] == ["caller", "agent"]
    caller, agent = trace["turns"]
    assert caller["ttfa_ms"] == 1200.0 and caller["stt_text"] == "i want a refund"
    # the agent turn spans its "speaking" state, not the moment the item was added
    assert (agent["start"], agent["end"], agent["added_at"]) == (3.1, 5.0, 5.0)
    assert agent["latency"] == {"e2e_latency_s": 0.9, "llm_node_ttft_s": 0.01}
    assert trace["transcripts"]["final"] == [{"t": 2.7, "text": "i want a refund"}]
    assert len(trace["transcripts"]["raw"]) == 2
    assert trace["tool_calls"][0]["output"] == "found"
    assert trace["script"][0]["text"] == "I want a refund"
    assert trace["limits"] == {"ttfa_ms_max": 1500}
    assert set(trace["versions"]) == {"plugin", "livekit_server", "livekit_agents", "livekit_rtc", "python"}
    assert len(trace["machine"]["hostname_hash"]) == 12


def test_trace_write_is_atomic_redacted_and_loads_back(tmp_path: Path) -> None:
    rec = _record()
    rec.tool_calls[0].output = f"token {JWT} and secret {SECRET}"
    trace = build_trace(rec, metrics={**METRICS, "snr": float("nan")})
    path = write_trace(trace, tmp_path, secrets=[SECRET])
    text = path.read_text()
    assert JWT not in text and SECRET not in text and "[redacted]" in text
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    loaded = load_trace(tmp_path)
    assert loaded["metrics"]["snr"] is None  # NaN is not JSON
    assert loaded["call"]["call_id"] == "test_refund-abcd"


def test_short_strings_are_not_treated_as_secrets() -> None:
    assert redact_text("the key is devkey", ["devkey"]) == "the key is devkey"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": "something/else"}, "not a pytest-livekit call trace"),
        ({"schema": TRACE_SCHEMA, "schema_version": TRACE_SCHEMA_VERSION + 1}, "Upgrade pytest-livekit"),
    ],
)
def test_load_trace_refuses_unknown_documents(tmp_path: Path, data: dict[str, object], message: str) -> None:
    (tmp_path / "trace.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_trace(tmp_path)


def test_load_trace_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="trace.json"):
        load_trace(tmp_path)


def test_session_jsonl_round_trip(tmp_path: Path) -> None:
    traces = [build_trace(_record(), metrics=METRICS), build_trace(_record())]
    path = write_session_jsonl(tmp_path / "calls.jsonl", traces)
    assert len(path.read_text().splitlines()) == 2
    assert read_session_jsonl(path)[0]["turns"][0]["ttfa_ms"] == 1200.0


def test_junit_properties_are_flat_with_units() -> None:
    summary = {"call_type": "refund", "metrics": METRICS, "tools": ["lookup_order(order_id='1234')"],
               "breaches": ["ttfa_ms_max: 1600 > 1500 allowed (turn 1)"], "outcome_test": "failed",
               "artifacts": "/x"}
    props = dict(junit_properties(summary, build_trace(_record(), metrics=METRICS)))
    assert props["livekit.ttfa_ms"] == "1200.0"
    assert props["livekit.wer"] == "0.0"
    assert props["livekit.breaches"] == "1"
    assert props["livekit.test_outcome"] == "failed"
    assert props["livekit.seed"] == "7"
    assert all(isinstance(v, str) for v in props.values())


def test_progress_line_erases_exactly_what_it_wrote() -> None:
    out = io.StringIO()
    line = ProgressLine(out, width=200)
    line.show("first status that is long")
    line.show("short")
    line.clear()
    # replay the stream on a one-line "terminal": backspace moves left, characters overwrite
    screen: list[str] = []
    cursor = 0
    for ch in "test_x.py " + out.getvalue():
        if ch == "\b":
            cursor -= 1
            continue
        if cursor == len(screen):
            screen.append(ch)
        else:
            screen[cursor] = ch
        cursor += 1
    assert "".join(screen).rstrip() == "test_x.py" and cursor == len("test_x.py ")


def test_progress_text_names_call_turn_step_and_elapsed() -> None:
    text = describe_step("test_refund[refund]", "say", 2, {"text": "I want a refund for order 1234 please"}, 4.25)
    assert text == "livekit ▸ test_refund[refund] · turn 2 · 4.2 s · say 'I want a refund for order 1234…'"


def test_progress_line_per_step_when_not_a_terminal() -> None:
    lines: list[str] = []
    progress = CallProgress("test_a", write_line=lines.append)
    progress(None, "say", 1, {"text": "hello"})
    progress(None, "wait_for_agent_reply", 1, {})
    progress.close()
    progress(None, "say", 2, {"text": "late"})  # after close: nothing
    assert [[p for i, p in enumerate(line.split(" · ")) if i in (1, 3)] for line in lines] == [
        ["turn 1", "say 'hello'"], ["turn 1", "wait for agent reply"]
    ]


def _folder_with(tmp_path: Path, **changes: object) -> Path:
    trace = build_trace(_record(), metrics=METRICS, test={"nodeid": "t.py::test_refund"})
    trace.update(changes)
    write_trace(trace, tmp_path)
    return tmp_path


def test_replay_refuses_unknown_steps(tmp_path: Path) -> None:
    folder = _folder_with(tmp_path, script=[{"action": "dance", "t": 0.0}])
    with pytest.raises(ConfigError, match="unknown script step.*dance"):
        CallReplay(folder, url="ws://127.0.0.1:1", api_key="k", api_secret="s")


def test_replay_needs_caller_steps(tmp_path: Path) -> None:
    folder = _folder_with(tmp_path, script=[{"action": "wait_for_agent_state", "t": 0.0, "state": "listening"}])
    with pytest.raises(ConfigError, match="no caller steps"):
        CallReplay(folder, url="ws://127.0.0.1:1", api_key="k", api_secret="s")


def test_replay_defaults_to_a_sibling_folder_and_the_recorded_agent(tmp_path: Path) -> None:
    folder = _folder_with(tmp_path / "test_refund")
    replay = CallReplay(folder, url="ws://127.0.0.1:1", api_key="k", api_secret="s")
    assert replay.out_dir == tmp_path / "test_refund-replay"
    assert replay.agent_spec == "agents.support:server"
    assert [s["action"] for s in replay.script] == ["say", "wait_for_agent_reply"]


def test_finish_call_redacts_every_file_and_what_it_returns(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_livekit.outputs.artifacts import finish_call

    rec = _record()
    rec.artifacts_dir = str(tmp_path)
    rec.tool_calls[0].output = f"token {JWT} secret {SECRET}"
    rec.tool_calls[0].arguments = {"note": SECRET}
    call = SimpleNamespace(record=rec, caller=None, limits={}, timings={}, condition_kinds=(), reconnects=(0, 0))
    summary, trace = finish_call(call, nodeid="t.py::test_x", outcome={"outcome": "failed",
                                 "message": f"assert {SECRET!r} == x"}, secrets=[SECRET])
    rec.save(tmp_path / "call.json", secrets=[SECRET])
    for text in [json.dumps(summary), json.dumps(trace), *(p.read_text() for p in tmp_path.iterdir())]:
        assert SECRET not in text and JWT not in text
    assert {p.name for p in tmp_path.iterdir()} == {"trace.json", "metrics.json", "call.json"}
    assert trace["test"]["outcome"] == "failed" and "[redacted]" in trace["test"]["message"]


def test_keep_failed_removes_only_a_passed_calls_recordings(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_livekit.outputs.artifacts import finish_call

    for outcome in ("passed", "xfailed", "failed"):
        folder = tmp_path / outcome
        folder.mkdir()
        for name in ("call.wav", "caller.wav", "agent.wav"):
            (folder / name).write_bytes(b"RIFF")
        rec = _record()
        rec.artifacts_dir = str(folder)
        call = SimpleNamespace(record=rec, caller=None, limits={}, timings={}, condition_kinds=(), reconnects=(0, 0))
        _, trace = finish_call(call, outcome={"outcome": outcome}, keep="failed")
        kept = (folder / "call.wav").exists()
        assert kept is (outcome != "passed"), outcome
        assert (trace["artifacts"]["recording"] is None) is (outcome == "passed")
        assert (folder / "trace.json").exists()


def test_replay_accepts_speak_steps_with_a_saved_clip_only(tmp_path: Path) -> None:
    speak = {"action": "speak", "t": 0.5, "path": str(tmp_path / "clips" / "turn-1.wav"), "text": None,
             "source": "x.wav", "wait_for_listening": True, "kind": "say", "start_at": None,
             "conditions": None, "pause": None}
    folder = _folder_with(tmp_path / "a", script=[speak])
    assert [s["action"] for s in CallReplay(folder, url="ws://x", api_key="k", api_secret="s").script] == ["speak"]
    folder = _folder_with(tmp_path / "b", script=[{**speak, "path": None}])
    with pytest.raises(ConfigError, match="no saved clip"):
        CallReplay(folder, url="ws://x", api_key="k", api_secret="s")


def test_a_turn_that_never_started_has_no_start_time() -> None:
    rec = _record()
    rec.caller_turns.append(CallerTurn(1, "tts:en-us@140wpm", "queued", -1.0))
    trace = build_trace(rec)
    assert trace["turns"][-1]["start"] is None and trace["turns"][-1]["text"] == "queued"


def test_previous_run_folders_are_removed_but_nothing_else(tmp_path: Path) -> None:
    from pytest_livekit.outputs.artifacts import remove_previous_calls

    for name, marker in (("old_call", "trace.json"), ("older_call", "call.json"), ("notes", "README.txt")):
        (tmp_path / name).mkdir()
        (tmp_path / name / marker).write_text("{}")
    (tmp_path / "loose.txt").write_text("mine")
    assert remove_previous_calls(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loose.txt", "notes"]
    assert remove_previous_calls(tmp_path / "missing") == 0


def test_livekit_loggers_never_show_an_access_token(caplog: pytest.LogCaptureFixture) -> None:
    """livekit's rtc logs a rejected connection's URL with its token (seen on a 401); the
    session's log filter turns it into [redacted] before pytest captures it."""
    import logging

    from pytest_livekit.redaction import install_log_redaction

    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYWxsZXIiLCJ2aWRlbyI6e319.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    install_log_redaction()
    install_log_redaction()  # idempotent: one filter per logger
    assert sum(type(f).__name__ == "TokenRedactingFilter" for f in logging.getLogger("livekit").filters) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger("livekit").warning("failed to connect: ws://127.0.0.1:7880/rtc?access_token=%s 401", token)
        logging.getLogger("livekit.agents").error("job token %s", token)
    assert token not in caplog.text
    assert caplog.text.count("[redacted]") == 2 and "401" in caplog.text
