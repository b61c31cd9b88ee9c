"""Integration: real livekit-server, real rtc rooms, real AgentSession (the example agent)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from pytest_livekit import (
    assert_asr_accuracy,
    assert_time_to_first_audio,
    assert_tool_called,
)
from pytest_livekit.errors import AgentCrashedError, AudioInputError

pytestmark = pytest.mark.integration

EXAMPLE_AGENT = "example_suite.support_agent:server"


def test_managed_server_is_ready_on_loopback(livekit_server: Any) -> None:
    assert livekit_server.mode == "binary"
    assert livekit_server.url.startswith("ws://127.0.0.1:")
    assert livekit_server.version == "1.13.5"
    assert len(livekit_server.api_secret) >= 32
    http = livekit_server.url.replace("ws://", "http://")
    with urllib.request.urlopen(http + "/", timeout=5) as resp:
        assert resp.status == 200
    assert livekit_server.api_secret not in repr(livekit_server)


@pytest.mark.livekit(agent=EXAMPLE_AGENT, call_type="refund")
async def test_refund_call_through_real_server(livekit_call: Any) -> None:
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    ttfa_ms = assert_time_to_first_audio(livekit_call, max_ms=3000)
    assert 100 < ttfa_ms  # endpointing alone takes longer: a smaller value is a measuring bug
    assert_asr_accuracy(livekit_call, max_wer=0.2)
    assert_tool_called(livekit_call, "lookup_order", order_id="1234")
    with pytest.raises(AssertionError, match=r"tool issue_refund\(\) was not called"):
        assert_tool_called(livekit_call, "issue_refund")
    rec = livekit_call.record
    # Every kind of session event reached the caller's record.
    assert any(t.is_final for t in rec.transcripts)
    assert {("agent", "thinking"), ("agent", "speaking")} <= {(s.who, s.new) for s in rec.state_changes}
    assert any(s.who == "user" and s.new == "speaking" for s in rec.state_changes)
    assistant = [i for i in rec.items if i.role == "assistant"]
    assert assistant and "refund" in assistant[-1].text
    assert "e2e_latency" in assistant[-1].metrics
    assert rec.tool_calls[0].output and "blue kettle" in rec.tool_calls[0].output


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_tokens_carry_least_grants(livekit_call: Any, livekit_server: Any) -> None:
    from livekit import api

    async with api.LiveKitAPI(
        livekit_server.url.replace("ws://", "http://"),
        livekit_server.api_key,
        livekit_server.api_secret,
    ) as lk:
        resp = await lk.room.list_participants(
            api.ListParticipantsRequest(room=livekit_call.room_name)
        )
    people = {p.identity: p for p in resp.participants}
    caller, agent = people["caller"], people[livekit_call.agent_identity]
    assert caller.kind == api.ParticipantInfo.Kind.STANDARD
    assert agent.kind == api.ParticipantInfo.Kind.AGENT
    assert not caller.permission.can_update_metadata
    assert not caller.permission.agent
    assert list(caller.permission.can_publish_sources) == [api.TrackSource.MICROPHONE]
    assert agent.permission.can_update_metadata  # RoomIO writes lk.agent.state
    assert agent.attributes.get("lk.agent.state") == "listening"


async def test_room_is_deleted_and_artifacts_kept(
    make_livekit_call: Any, livekit_server: Any, tmp_path: Path
) -> None:
    from livekit import api

    async with make_livekit_call(agent=EXAMPLE_AGENT) as call:
        await call.say("Hello")
        await call.wait_for_agent_reply()
        room = call.room_name
    async with api.LiveKitAPI(
        livekit_server.url.replace("ws://", "http://"),
        livekit_server.api_key,
        livekit_server.api_secret,
    ) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
    assert room not in {r.name for r in rooms.rooms}

    folder = Path(call.record.artifacts_dir)
    stereo, rate = sf.read(str(folder / "call.wav"), dtype="int16")
    assert rate == 48000 and stereo.shape[1] == 2
    turn = call.record.caller_turns[0]
    assert turn.ended_at is not None
    said = stereo[int(turn.started_at * rate) : int(turn.ended_at * rate), 0]
    assert np.abs(said).max() > 3000, "caller channel is silent while the caller spoke"
    heard = call.record.heard[0]
    agent_part = stereo[int(heard.start * rate) : int(heard.end * rate), 1]
    assert np.abs(agent_part).max() > 3000, "agent channel is silent where the agent was heard"
    saved = json.loads((folder / "call.json").read_text())
    assert saved["format_version"] == 1
    assert saved["caller_turns"][0]["text"] == "Hello"
    text = (folder / "call.json").read_text()
    assert livekit_server.api_secret not in text


async def test_agent_exception_fails_fast_with_agent_traceback(make_livekit_call: Any, request: Any) -> None:
    """The entrypoint raises before any session: the call fails at once with the agent's own
    traceback, and its folder keeps the recording and the crash (test_faults.py's matrix checks
    the trace.json a failing test leaves)."""
    from pytest_livekit.pytest_run.keys import CALL_KEY

    started = time.monotonic()
    with pytest.raises(AgentCrashedError) as excinfo:
        async with make_livekit_call(agent="agents.crashing_agent:entrypoint"):
            pass
    elapsed = time.monotonic() - started
    message = str(excinfo.value)
    assert "boom: the agent could not load its config" in message
    assert "_load_config" in message  # the agent's own frame, from its traceback
    assert elapsed < 10, f"crash was reported after {elapsed:.1f} s: that is a timeout, not a crash"
    (call,) = request.node.stash[CALL_KEY]  # failed while starting: the factory never handed it out
    folder = Path(call.record.artifacts_dir)
    assert sf.info(str(folder / "call.wav")).frames > 0
    saved = json.loads((folder / "call.json").read_text())
    assert any(e["source"] == "crash" and "_load_config" in e["message"] for e in saved["errors"])


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_missing_and_corrupt_wav_are_clear_errors(livekit_call: Any, tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="does not exist"):
        await livekit_call.play(tmp_path / "nope.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioInputError, match="cannot be read as audio"):
        await livekit_call.play(bad)
    # The call is still usable after bad input.
    await livekit_call.play(
        Path(__file__).parents[2] / "example_suite" / "audio" / "hello_16k_stereo.wav", text="hello"
    )
    await livekit_call.wait_for_agent_reply()
    assert_asr_accuracy(livekit_call, max_wer=0.0)


async def test_calls_at_once_each_have_their_own_room_recording_and_artifacts(
    make_livekit_call: Any,
) -> None:
    import asyncio

    from pytest_livekit.metrics.turns import time_to_first_audio

    async def one(text: str) -> Any:
        async with make_livekit_call(agent=EXAMPLE_AGENT) as call:
            await call.say(text)
            await call.wait_for_agent_reply()
            return call

    texts = ["Where is my order one two three four", "Can I speak to a human please", "Hello"]
    calls = await asyncio.gather(*(one(t) for t in texts))
    rooms = {c.room_name for c in calls}
    folders = {c.record.artifacts_dir for c in calls}
    assert len(rooms) == 3 and len(folders) == 3
    for call, text in zip(calls, texts, strict=True):
        rec = call.record
        assert rec.caller_turns[0].text == text
        ttfa = time_to_first_audio(rec)
        # answered, and by a figure an agent can reach (endpointing alone takes longer than 0.1 s);
        # speed at concurrency is benchmarks/concurrency.py's business, not this test's
        assert ttfa is not None and 0.1 < ttfa < 20.0, rec.timeline()
        # From the first word on, the caller kept real time. Before it, the three calls' room
        # joins share the caller process's event loop and can hold back a still-silent
        # microphone by ~30 ms (seen once in CI); the trace flags that, and nothing is measured then.
        # An odd 20-40 ms stall of the caller process on a loaded runner is flagged, not fatal.
        speaking = [m for m in rec.clock_misses if m["t"] >= rec.caller_turns[0].started_at - 0.05]
        assert all(m["late_ms"] <= 100 for m in speaking), rec.clock_misses
        assert (Path(rec.artifacts_dir) / "call.wav").exists()


@pytest.mark.livekit(agent="tests.agents.blocking_agent:entrypoint")
async def test_an_agent_that_blocks_the_test_process_cannot_change_what_the_caller_sends(
    livekit_call: Any,
) -> None:
    """The agent (in-process: in the test's event loop) stalls the loop for 300 ms at a time and
    holds the GIL from a thread; the caller's 2.5 s sentence still leaves on time, frame by frame.
    """
    clip = livekit_call.synthesize("I want a refund for order one two three four")
    turn = await livekit_call.speak(clip)
    rec = livekit_call.record
    assert rec.clock_misses == [], rec.clock_misses
    assert turn.ended_at is not None
    sent = turn.ended_at - turn.started_at
    # every frame left on schedule: within the slot clock's 20 ms, never stretched or squeezed
    assert abs(sent - clip.duration) <= 0.021, (sent, clip.duration)
    stereo = livekit_call.caller.recording.stereo()
    said = stereo[int(round(turn.started_at * 48000)) : int(round(turn.ended_at * 48000)), 0]
    # the same samples in the same order: nothing torn, dropped or repeated (a frame a few ms late
    # may sit one slot later, leaving one empty slot: compare the frames that carry sound)
    def frames(x: Any) -> Any:
        x = x[: len(x) // 480 * 480].reshape(-1, 480)
        return x[np.abs(x).max(axis=1) > 0]

    padded = np.concatenate([clip.pcm, np.zeros(-len(clip.pcm) % 480, dtype=np.int16)])
    np.testing.assert_array_equal(frames(said), frames(padded))


async def test_an_in_process_agent_that_blocks_the_loop_fails_the_call_naming_the_line(make_livekit_call: Any) -> None:
    """A 5 s synchronous call in the agent: the call fails as soon as the loop runs again, not
    after a 30 s timeout, and the call's folder keeps the stall and the caller's speech up to it
    (test_faults.py's matrix checks the trace.json a failing test leaves)."""
    from pytest_livekit.errors import EventLoopBlockedError

    started = None
    with pytest.raises(EventLoopBlockedError) as excinfo:
        async with make_livekit_call(agent="tests.agents.stalling_agent:server") as call:
            started = time.monotonic()  # the agent blocks the loop 1 s after its session started
            await call.say("I want a refund for order one two three four")
            await call.wait_for_agent_reply()
            await call.say("Can I speak to a human please")
            await call.wait_for_agent_reply()
    assert started is not None and time.monotonic() - started < 10.0
    message = str(excinfo.value)
    assert "did not run for 5." in message or "did not run for 4." in message
    assert "stalling_agent.py" in message and "_fetch_customer_record_synchronously" in message
    assert "--livekit-agent-mode=worker" in message
    assert any(e.source == "loop_blocked" for e in call.record.errors)  # the trace's "errors"
    folder = Path(call.record.artifacts_dir)
    saved = json.loads((folder / "call.json").read_text())
    assert any(e["source"] == "loop_blocked" and "_fetch_customer" in e["message"] for e in saved["errors"])
    # the caller (its own process) kept speaking while the loop was blocked: its turn is recorded
    stereo, rate = sf.read(str(folder / "call.wav"), dtype="int16")
    turn = call.record.caller_turns[0]
    said = stereo[int(turn.started_at * rate) : int((turn.ended_at or len(stereo) / rate) * rate), 0]
    assert said.size and np.abs(said).max() > 3000, "the caller's speech before the fault is not in call.wav"
