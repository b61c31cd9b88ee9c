"""Unit tests of :mod:`pytest_livekit.call.expect`: livekit-agents' own ``RunResult.expect`` over a
call's record (no server), and the observer's additions it relies on (conversation order,
handoffs) fed with the agent session's real event encoding."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import Agent, llm
from livekit.agents.utils.aio.channel import ChanEmpty
from livekit.agents.voice.events import ConversationItemAddedEvent, FunctionToolsExecutedEvent
from livekit.agents.voice.remote_session import SessionHost
from livekit.agents.voice.run_result import (
    AgentHandoffEvent,
    ChatMessageEvent,
    FunctionCallEvent,
    FunctionCallOutputEvent,
    RunAssert,
    RunResult,
)

from pytest_livekit.call.expect import RemoteAgent, voice_run_events, voice_run_result
from pytest_livekit.call.observer import SessionObserver
from pytest_livekit.call.record import CallRecord, ConversationItem, Handoff, ToolCall
from pytest_livekit.offline import Rule, ScriptedLLM, tool

START = 1_800_000_000.0


class BillingAgent(Agent):
    """A second agent of the conversation (default id ``billing_agent``)."""


class FrontDeskAgent(Agent):
    """Its ids are given (``Agent(id="desk")``), so it has to be named to be found."""


def _refund_record(*, seq: bool = True) -> CallRecord:
    """The example agent's refund turn, as the observer records it: the lists are separate, and
    ``seq`` says in which order the session emitted their entries."""
    rec = CallRecord(call_id="room", call_type="refund", started_at_epoch=START)
    rec.items = [
        ConversationItem(t=3.4, role="user", text="i want a refund for order one two three four", seq=0),
        ConversationItem(
            t=5.0,
            role="assistant",
            text="I found your order. Shall I refund it to your card?",
            metrics={"e2e_latency": 0.8, "started_speaking_at": START + 4.0},
            seq=2,
        ),
    ]
    rec.tool_calls = [
        ToolCall(
            t=3.6,
            name="lookup_order",
            arguments={"order_id": "1234"},
            output="order 1234: blue kettle, forty two dollars, refundable=True",
            call_id="call_1",
            seq=1,
        )
    ]
    if not seq:
        for item in rec.items:
            item.seq = -1
        for call in rec.tool_calls:
            call.seq = -1
    return rec


# -- the events ---------------------------------------------------------------------------------
def test_result_is_livekits_own_run_result_with_its_event_classes() -> None:
    result = voice_run_result(_refund_record())
    assert type(result) is RunResult
    assert type(result.expect) is RunAssert
    assert result.done()
    assert [type(e) for e in result.events] == [
        ChatMessageEvent,
        FunctionCallEvent,
        FunctionCallOutputEvent,
        ChatMessageEvent,
    ]
    user, call, output, reply = result.events
    assert isinstance(user, ChatMessageEvent) and isinstance(reply, ChatMessageEvent)
    assert user.item.role == "user" and user.item.text_content == "i want a refund for order one two three four"
    assert reply.item.role == "assistant" and not reply.item.interrupted
    assert reply.item.metrics["e2e_latency"] == 0.8
    assert isinstance(call, FunctionCallEvent) and isinstance(output, FunctionCallOutputEvent)
    assert (call.item.name, json.loads(call.item.arguments), call.item.call_id) == (
        "lookup_order",
        {"order_id": "1234"},
        "call_1",
    )
    assert output.item.call_id == "call_1" and "blue kettle" in output.item.output
    assert output.item.is_error is False
    # times are the call's, as epochs (livekit's created_at)
    assert user.item.created_at == pytest.approx(START + 3.4)


def test_next_event_walks_the_call_in_conversation_order() -> None:
    result = voice_run_result(_refund_record())
    result.expect.next_event().is_message(role="user")
    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
    result.expect.next_event().is_function_call_output(is_error=False)
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()


def test_order_follows_the_session_not_the_clock() -> None:
    # Two entries reported in the same instant: the session's order decides.
    rec = _refund_record()
    rec.tool_calls[0].t = rec.items[0].t
    rec.items.reverse()  # the lists' own order does not matter either
    result = voice_run_result(rec)
    assert [e.type for e in result.events] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert result.events[0].item.role == "user"  # type: ignore[union-attr]


def test_records_without_seq_are_ordered_by_time() -> None:
    result = voice_run_result(_refund_record(seq=False))
    assert result.expect.next_event(type="message").event().item.role == "user"
    assert result.expect.next_event(type="function_call").event().item.name == "lookup_order"
    assert result.expect.next_event(type="message").event().item.role == "assistant"
    result.expect.no_more_events()


def test_tools_reported_together_come_as_calls_then_outputs() -> None:
    rec = CallRecord(call_id="room", call_type=None, started_at_epoch=START)
    rec.items = [ConversationItem(t=1.0, role="user", text="refund both", seq=0)]
    rec.tool_calls = [
        ToolCall(t=2.0, name="issue_refund", arguments={"order_id": "1234"}, output="ok", call_id="a", seq=1),
        ToolCall(t=2.0, name="issue_refund", arguments={"order_id": "5678"}, output="no", call_id="b",
                 is_error=True, seq=1),
        ToolCall(t=3.0, name="send_email", arguments={}, output=None, call_id="c", seq=2),
    ]
    events = voice_run_events(rec)
    assert [(e.type, e.item.call_id) for e in events[1:]] == [  # type: ignore[union-attr]
        ("function_call", "a"),
        ("function_call", "b"),
        ("function_call_output", "a"),
        ("function_call_output", "b"),
        ("function_call", "c"),  # reported without an output: no output event
    ]
    result = voice_run_result(rec)
    result.expect.contains_function_call_output(is_error=True)
    result.expect[3].is_function_call_output(output="ok", is_error=False)
    result.expect[-1].is_function_call(name="send_email", arguments={})


def test_arguments_that_were_not_a_json_object_keep_their_json() -> None:
    rec = CallRecord(call_id="room", call_type=None, started_at_epoch=START)
    rec.tool_calls = [
        ToolCall(t=1.0, name="a", arguments={"<value>": [1, 2]}, seq=0),
        ToolCall(t=2.0, name="b", arguments={"<unparsed>": "{order: 12"}, seq=1),
        ToolCall(t=3.0, name="c", arguments={}, seq=2),
    ]
    assert [e.item.arguments for e in voice_run_events(rec)] == ["[1, 2]", "{order: 12", "{}"]  # type: ignore[union-attr]


def test_interrupted_reply_and_empty_call() -> None:
    rec = CallRecord(call_id="room", call_type=None, started_at_epoch=START)
    assert voice_run_result(rec).events == []
    voice_run_result(rec).expect.no_more_events()
    rec.items = [ConversationItem(t=1.0, role="assistant", text="Hello, how can", interrupted=True, seq=0)]
    (event,) = voice_run_events(rec)
    assert isinstance(event, ChatMessageEvent) and event.item.interrupted


def test_accepts_a_call_or_a_record_only() -> None:
    class FakeCall:
        record = _refund_record()

    assert len(voice_run_result(FakeCall()).events) == 4  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a LivekitCall or CallRecord"):
        voice_run_result("call.json")  # type: ignore[arg-type]


def test_a_saved_call_json_gives_the_same_events(tmp_path: Any) -> None:
    rec = _refund_record()
    rec.handoffs = [Handoff(t=6.0, old_agent_id="support_agent", new_agent_id="billing_agent", seq=3)]
    back = CallRecord.load(rec.save(tmp_path / "call.json"))
    assert back == rec
    assert [e.type for e in voice_run_events(back)] == [e.type for e in voice_run_events(rec)]


def test_each_result_has_its_own_cursor_and_sees_new_events() -> None:
    rec = _refund_record()
    first = voice_run_result(rec)
    first.expect.skip_next(4).no_more_events()
    rec.items.append(ConversationItem(t=9.0, role="user", text="yes please refund it", seq=3))
    first.expect.no_more_events()  # a snapshot
    again = voice_run_result(rec)
    again.expect.skip_next(4)
    again.expect.next_event().is_message(role="user")


async def test_works_inside_a_running_loop_and_awaits_at_once() -> None:
    result = voice_run_result(_refund_record())
    assert await result is result
    with pytest.raises(RuntimeError, match="no final output"):
        _ = result.final_output


def test_awaiting_a_result_built_in_a_sync_test_returns_at_once() -> None:
    result = voice_run_result(_refund_record())  # no loop running: built in a private one

    async def main() -> RunResult[None]:
        return await result

    assert asyncio.run(main()) is result


# -- livekit's vocabulary -----------------------------------------------------------------------
def test_contains_and_skip_next_event_if() -> None:
    result = voice_run_result(_refund_record())
    found = result.expect.contains_function_call(name="lookup_order", arguments={"order_id": "1234"})
    assert found.event().item.call_id == "call_1"
    result.expect.contains_message(role="assistant")
    result.expect[0:2].contains_message(role="user")
    assert result.expect.skip_next_event_if(type="message", role="assistant") is None  # it is the user's
    assert result.expect.skip_next_event_if(type="message", role="user") is not None
    assert result.expect.skip_next_event_if(type="function_call", name="lookup_order") is not None
    result.expect.skip_next_event_if(type="function_call_output")
    result.expect.next_event().is_message(role="assistant")


def test_wrong_tool_name_fails_with_livekits_message_and_the_events_around_it() -> None:
    result = voice_run_result(_refund_record())
    result.expect.next_event().is_message(role="user")
    with pytest.raises(AssertionError) as info:
        result.expect.next_event().is_function_call(name="issue_refund")
    message = str(info.value)
    assert "Expected call name 'issue_refund', got 'lookup_order'" in message
    assert "Context around failure:" in message
    assert ">>> [1] FunctionCallEvent(" in message
    assert "'name': 'lookup_order'" in message
    assert "i want a refund for order one two three four" in message  # the user's turn, as heard


def test_wrong_argument_and_missing_call_fail() -> None:
    result = voice_run_result(_refund_record())
    with pytest.raises(AssertionError, match="No FunctionCallEvent satisfying criteria found"):
        result.expect.contains_function_call(name="lookup_order", arguments={"order_id": "5678"})
    with pytest.raises(AssertionError, match="For key 'order_id', expected 5678, got 1234"):
        result.expect[1].is_function_call(name="lookup_order", arguments={"order_id": "5678"})
    with pytest.raises(AssertionError, match="No FunctionCallEvent satisfying criteria found"):
        result.expect.contains_function_call(name="issue_refund")
    with pytest.raises(AssertionError, match="Expected role 'assistant', got 'user'"):
        result.expect[0].is_message(role="assistant")
    result.expect.skip_next(4)
    with pytest.raises(AssertionError, match="Expected another event, but none left"):
        result.expect.next_event()


def test_no_more_events_fails_when_the_agent_said_more() -> None:
    result = voice_run_result(_refund_record())
    result.expect.skip_next(2)
    with pytest.raises(AssertionError, match="Expected no more events, but found: FunctionCallOutputEvent"):
        result.expect.no_more_events()


# -- handoffs -----------------------------------------------------------------------------------
def _handoff_record() -> CallRecord:
    rec = CallRecord(call_id="room", call_type=None, started_at_epoch=START)
    rec.handoffs = [
        Handoff(t=0.5, new_agent_id="support_agent", old_agent_id=None, seq=0),  # session start
        Handoff(t=4.0, new_agent_id="billing_agent", old_agent_id="support_agent", seq=2),
        Handoff(t=8.0, new_agent_id="desk", old_agent_id="billing_agent", seq=4),
    ]
    rec.items = [
        ConversationItem(t=3.0, role="user", text="i have a billing question", seq=1),
        ConversationItem(t=5.0, role="assistant", text="Billing here.", seq=3),
    ]
    return rec


def test_handoffs_are_livekit_events_with_agents_of_the_right_class() -> None:
    result = voice_run_result(_handoff_record())
    # the session's start is not an event (it depends on who joined the room first)
    assert [e.type for e in result.events] == ["message", "agent_handoff", "message", "agent_handoff"]
    result.expect.next_event().is_message(role="user")
    handoff = result.expect.next_event().is_agent_handoff(new_agent_type=BillingAgent)
    event = handoff.event()
    assert isinstance(event, AgentHandoffEvent)
    assert event.new_agent.id == "billing_agent"
    assert event.item.old_agent_id == "support_agent"
    # no loaded class has the id "support_agent" in this test module... unless the example is
    # imported; either way the agent carries its id
    assert event.old_agent is not None and event.old_agent.id == "support_agent"
    result.expect.contains_agent_handoff(new_agent_type=Agent)
    with pytest.raises(AssertionError, match="Expected new_agent 'FrontDeskAgent', got 'RemoteAgent'"):
        result.expect[-1].is_agent_handoff(new_agent_type=FrontDeskAgent)
    last = result.events[-1]
    assert isinstance(last, AgentHandoffEvent) and repr(last.new_agent) == "RemoteAgent(id='desk')"
    assert isinstance(last.new_agent, RemoteAgent)


def test_agents_with_given_ids_are_named_by_the_test() -> None:
    result = voice_run_result(_handoff_record(), agents={"desk": FrontDeskAgent})
    result.expect[-1].is_agent_handoff(new_agent_type=FrontDeskAgent)
    result = voice_run_result(_handoff_record(), agents=[BillingAgent])
    result.expect.contains_agent_handoff(new_agent_type=BillingAgent)


# -- judge --------------------------------------------------------------------------------------
def _judge_llm() -> ScriptedLLM:
    """A judge that answers livekit's ``check_intent`` tool call, like a real model would."""
    return ScriptedLLM([
        Rule(r"Intent:\s*offers to refund the order",
             tools=(tool("check_intent", success=True, reason="it offers a refund to the card"),)),
        Rule(r"Intent:\s*says goodbye",
             tools=(tool("check_intent", success=False, reason="it asks a question instead"),)),
    ])


async def test_judge_runs_through_livekit_with_the_given_llm() -> None:
    judge = _judge_llm()
    result = voice_run_result(_refund_record())
    result.expect.skip_next(3)
    message = result.expect.next_event().is_message(role="assistant")
    assert await message.judge(judge, intent="offers to refund the order") is message
    # the judge saw what the agent said
    assert "Shall I refund it to your card?" in judge.requests[-1]

    with pytest.raises(AssertionError, match="Judgement failed: it asks a question instead") as info:
        await result.expect[-1].is_message(role="assistant").judge(judge, intent="says goodbye")
    assert ">>> [3] ChatMessageEvent(" in str(info.value)


# -- the observer's additions, fed with the agent session's real encoding -----------------------
async def test_observer_records_handoffs_and_the_session_order() -> None:
    host = SessionHost(transport=None)  # type: ignore[arg-type]  # only its encoder is used
    rec = CallRecord(call_id="room", call_type=None, started_at_epoch=START)
    observer = SessionObserver(rtc.Room(), rec)

    user = llm.ChatMessage(role="user", content=["i want a refund"], created_at=START + 3.0)
    call = llm.FunctionCall(call_id="call_1", name="lookup_order", arguments='{"order_id": "1234"}')
    output = llm.FunctionCallOutput(call_id="call_1", name="lookup_order", output="found", is_error=False)
    reply = llm.ChatMessage(role="assistant", content=["Found it."])
    host._on_conversation_item_added(
        ConversationItemAddedEvent(item=llm.AgentHandoff(old_agent_id=None, new_agent_id="support_agent"))
    )
    host._on_conversation_item_added(ConversationItemAddedEvent(item=user))
    host._on_function_tools_executed(FunctionToolsExecutedEvent(function_calls=[call], function_call_outputs=[output]))
    host._on_conversation_item_added(ConversationItemAddedEvent(item=reply))
    host._on_conversation_item_added(
        ConversationItemAddedEvent(item=llm.AgentHandoff(old_agent_id="support_agent", new_agent_id="billing_agent"))
    )
    # what RemoteSession's receive loop does with each message
    while True:
        try:
            msg = host._event_ch.recv_nowait()
        except ChanEmpty:
            break
        observer.remote.emit(msg.event.WhichOneof("event"), msg.event)

    assert [(h.old_agent_id, h.new_agent_id, h.seq) for h in rec.handoffs] == [
        (None, "support_agent", 0),
        ("support_agent", "billing_agent", 4),
    ]
    assert [(i.role, i.text, i.seq) for i in rec.items] == [("user", "i want a refund", 1), ("assistant", "Found it.", 3)]
    assert [(c.name, c.arguments, c.output, c.call_id, c.seq) for c in rec.tool_calls] == [
        ("lookup_order", {"order_id": "1234"}, "found", "call_1", 2)
    ]
    assert "handoff" in rec.timeline() and "support_agent -> billing_agent" in rec.timeline()

    result = voice_run_result(rec)
    result.expect.next_event().is_message(role="user")
    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
    result.expect.next_event().is_function_call_output(output="found")
    result.expect.next_event().is_message(role="assistant")
    result.expect.next_event().is_agent_handoff(new_agent_type=BillingAgent)
    result.expect.no_more_events()
