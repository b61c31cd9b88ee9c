"""The OpenAI-compatible test double speaks OpenAI's streamed Chat Completions well enough for
livekit's own OpenAI plugin (``openai.LLM(base_url=...)``): text, tool calls with streamed
arguments, the reply after a tool result, and a 401 for a wrong key. No livekit-server needed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.llm import ChatContext, FunctionCall, FunctionCallOutput, function_tool
from livekit.plugins import openai

from tests.support.openai_compatible_server import OpenAICompatibleServer, Rule

RULES = [
    Rule(r"refund.*order", tool="lookup_order", arguments={"order_id": "1234"},
         after_tool="I found it. {output}. Shall I refund it?"),
    Rule(r"hello", reply="Hello. How can I help you today?"),
]

#: One attempt: a failure must surface here, not be retried behind the test's back.
NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)


@function_tool
async def lookup_order(order_id: str) -> str:
    """Look up an order by its id.

    Args:
        order_id: the order number, digits only.
    """
    return f"order {order_id}: blue kettle"


@pytest.fixture(params=["same-loop", "thread"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[OpenAICompatibleServer]:
    """The double in the test's own event loop (in-process agents) and in a thread of its own
    (what a blocking caller or a wider-scoped fixture uses)."""
    if request.param == "same-loop":
        async with OpenAICompatibleServer(RULES) as srv:
            yield srv
    else:
        with OpenAICompatibleServer(RULES) as srv:
            yield srv


@pytest.fixture
async def llm(server: OpenAICompatibleServer) -> AsyncIterator[openai.LLM]:
    """livekit's OpenAI plugin pointed at the double, with the double's key."""
    model = openai.LLM(model="gpt-4o-mini", base_url=server.base_url, api_key=server.api_key)
    try:
        yield model
    finally:
        await model.aclose()


def _user(text: str) -> ChatContext:
    ctx = ChatContext()
    ctx.add_message(role="system", content="You help callers with refunds and orders.")
    ctx.add_message(role="user", content=text)
    return ctx


async def _collect(
    llm: openai.LLM, ctx: ChatContext, tools: list[Any] | None = None
) -> tuple[str, list[Any], list[Any]]:
    """(text, tool calls, usage) of one streamed chat."""
    text, calls, usage = "", [], []
    async with llm.chat(chat_ctx=ctx, tools=tools or [], conn_options=NO_RETRY) as stream:
        async for chunk in stream:
            if chunk.delta is not None:
                text += chunk.delta.content or ""
                calls.extend(chunk.delta.tool_calls)
            if chunk.usage is not None:
                usage.append(chunk.usage)
    return text, calls, usage


async def test_text_reply_is_streamed(server: OpenAICompatibleServer, llm: openai.LLM) -> None:
    text, calls, usage = await _collect(llm, _user("hello there"))
    assert text == "Hello. How can I help you today?"
    assert calls == []
    assert len(usage) == 1 and usage[0].completion_tokens > 0  # the include_usage chunk arrived
    [request] = server.chat_requests
    assert request.stream and request.model == "gpt-4o-mini"
    assert request.body is not None and request.body["stream_options"] == {"include_usage": True}
    assert request.last_user_text == "hello there"
    assert request.authorized


async def test_tool_call_with_streamed_arguments(
    server: OpenAICompatibleServer, llm: openai.LLM
) -> None:
    ctx = _user("I want a refund for order one two three four")
    text, calls, _ = await _collect(llm, ctx, [lookup_order])
    assert text == ""
    [call] = calls
    assert call.name == "lookup_order"
    assert json.loads(call.arguments) == {"order_id": "1234"}  # joined from 5-character pieces
    assert call.call_id.startswith("call_")
    [request] = server.chat_requests
    schema = request.tools["lookup_order"]
    assert schema["description"].startswith("Look up an order by its id.")
    assert schema["parameters"]["properties"]["order_id"]["type"] == "string"
    assert schema["parameters"]["required"] == ["order_id"]


async def test_no_tool_call_when_the_tool_is_not_offered(
    server: OpenAICompatibleServer, llm: openai.LLM
) -> None:
    """A model cannot call a tool it was not given: the rule is skipped, the default reply comes."""
    text, calls, _ = await _collect(llm, _user("I want a refund for order one two three four"))
    assert calls == []
    assert text == server.default_reply


async def test_reply_after_tool_output_includes_it(server: OpenAICompatibleServer, llm: openai.LLM) -> None:
    ctx = _user("I want a refund for order one two three four")
    ctx.insert([
        FunctionCall(call_id="call_abc", name="lookup_order", arguments='{"order_id": "1234"}'),
        FunctionCallOutput(call_id="call_abc", name="lookup_order", output="order 1234: blue kettle",
                           is_error=False),
    ])
    text, calls, _ = await _collect(llm, ctx, [lookup_order])
    assert calls == []
    assert text == "I found it. order 1234: blue kettle. Shall I refund it?"
    [request] = server.chat_requests
    assert request.tool_outputs() == ["order 1234: blue kettle"]
    assert [m["role"] for m in request.messages][-2:] == ["assistant", "tool"]


async def test_wrong_key_is_a_401_status_error(server: OpenAICompatibleServer) -> None:
    model = openai.LLM(model="gpt-4o-mini", base_url=server.base_url, api_key="sk-not-the-users-key")
    try:
        with pytest.raises(APIStatusError) as excinfo:
            await _collect(model, _user("hello"))
    finally:
        await model.aclose()
    assert excinfo.value.status_code == 401
    assert excinfo.value.retryable is False
    assert "Incorrect API key provided" in str(excinfo.value)
    assert "sk-not-the-users-key" not in str(excinfo.value)  # only the last 4 characters
    [request] = server.requests
    assert request.status == 401 and not request.authorized
    assert server.chat_requests == []


async def test_non_streamed_request_is_a_clear_400(server: OpenAICompatibleServer) -> None:
    import openai as openai_sdk

    client = openai_sdk.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    try:
        with pytest.raises(openai_sdk.BadRequestError, match="only answers streamed requests"):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
        # a tool result that answers no tool call is refused, as OpenAI refuses it
        with pytest.raises(openai_sdk.BadRequestError, match="must be a response to a preceeding"):
            await client.chat.completions.create(
                model="gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": "hi"},
                          {"role": "tool", "tool_call_id": "call_x", "content": "stray"}],
            )
        # the models list answers (livekit's LLM.prewarm() asks for it)
        models = await client.models.list()
        assert "gpt-4o-mini" in [m.id async for m in models]
    finally:
        await client.close()
    assert [r.status for r in server.requests] == [400, 400, 200]


async def test_waiting_for_requests(server: OpenAICompatibleServer, llm: openai.LLM) -> None:
    assert not await server.await_for(lambda rs: len(rs) > 0, timeout=0.05)
    await _collect(llm, _user("hello"))
    assert await server.await_for(lambda rs: any(r.is_chat for r in rs), timeout=5.0)
    server.clear()
    assert server.requests == []
