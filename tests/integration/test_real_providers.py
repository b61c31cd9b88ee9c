"""Integration: with ``providers="real"`` the agent keeps its own provider, and the user's settings
reach it, in-process and in a worker.

The provider is the real client, livekit's OpenAI plugin (``tests/agents/openai_agent.py``),
talking over HTTP to an OpenAI-compatible server on loopback that this module starts
(``tests/support/openai_compatible_server.py``). The server accepts only the key the test gave the
user's environment (or ``.env.local``), so every accepted request proves the key arrived; what
it recorded proves the agent streamed the caller's words with its tool schema, and the call
record proves the tool ran and its output was spoken.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit import assert_tool_called
from tests.support.openai_compatible_server import OpenAICompatibleServer, RecordedRequest, Rule

ROOT = Path(__file__).resolve().parents[2]
AGENT = "tests.agents.openai_agent:server"

pytestmark = [pytest.mark.integration, pytest.mark.livekit(agent=AGENT, providers="real")]

#: The scripted model: look the order up, then read the lookup back.
RULES = [
    Rule(
        r"refund.*order",
        tool="lookup_order",
        arguments={"order_id": "1234"},
        after_tool="Found it. {output}.",
    ),
]

#: What ``lookup_order("1234")`` in the agent returns.
TOOL_OUTPUT = "order 1234: blue kettle"

MODES = [
    pytest.param("in-process", marks=pytest.mark.livekit(agent_mode="in-process"), id="in-process"),
    pytest.param("worker", marks=pytest.mark.livekit(agent_mode="worker"), id="worker"),
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAICompatibleServer]:
    """One server (one base URL, one key) for the whole module, in a thread of its own.

    Module scope on purpose: the session's worker pool starts one worker per agent and reuses it,
    and a worker keeps the environment it was started with. Tests sharing that worker must give
    it the same settings, or the second one would talk to the first one's (stopped) server.
    """
    with OpenAICompatibleServer(RULES) as server:
        yield server


@pytest.fixture
def user_environment(
    openai_server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> OpenAICompatibleServer:
    """The user's shell: the provider's key and base URL in the environment, and nothing
    recorded yet."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    openai_server.clear()
    return openai_server


@pytest.mark.parametrize("mode", MODES)
async def test_user_key_reaches_the_agents_own_llm(
    mode: str, user_environment: OpenAICompatibleServer, make_livekit_call: Callable[..., Any]
) -> None:
    server = user_environment
    # The call starts here, in the body, so the environment above is certainly in place when the
    # in-process agent builds its LLM or the worker process is started.
    async with make_livekit_call() as call:
        await call.say("I want a refund for order one two three four")
        await call.wait_for_agent_reply()
        rec = call.record
        assert rec.agent_mode == mode
        assert rec.providers == "real"

        # the tool ran, with the model's streamed arguments, and its output went back to the model
        tool = assert_tool_called(call, "lookup_order", order_id="1234")
        assert tool.output == TOOL_OUTPUT and not tool.is_error

        # the agent spoke the model's reply, which carries the tool output
        replies = [i.text for i in rec.items if i.role == "assistant"]
        assert any(TOOL_OUTPUT in r for r in replies), replies

    _assert_provider_traffic(server, rec, tool)


def _assert_provider_traffic(server: OpenAICompatibleServer, rec: Any, tool: Any) -> None:
    """What the provider saw: two streamed, authorised requests from the agent, the first with the
    caller's transcript and the tool schema, the second with the tool's output."""
    rejected = [r for r in server.requests if not r.authorized]
    assert not rejected, f"requests without the user's key: {rejected}"
    chats = server.chat_requests
    assert len(chats) == 2, [(r.last_user_text, r.answer) for r in chats]
    ask, follow_up = chats

    heard = [i.text for i in rec.items if i.role == "user"]
    assert heard and ask.last_user_text == heard[-1]  # the agent's own transcript of the caller
    assert re.search(r"refund.*order one two three four", ask.last_user_text), ask.last_user_text
    assert ask.model == "gpt-4o-mini" and ask.stream
    assert ask.body is not None and ask.body["stream_options"] == {"include_usage": True}
    _assert_lookup_schema(ask)
    assert ask.answer["tool_calls"][0]["id"] == tool.call_id  # the call the agent executed

    assert follow_up.stream
    assert follow_up.tool_outputs() == [TOOL_OUTPUT]
    assert [m.get("tool_call_id") for m in follow_up.messages if m["role"] == "tool"] == [tool.call_id]


def _assert_lookup_schema(request: RecordedRequest) -> None:
    schema = request.tools.get("lookup_order")
    assert schema is not None, f"tools offered: {sorted(request.tools)}"
    assert schema["description"].startswith("Look up an order by its id.")
    params = schema["parameters"]
    assert params["type"] == "object"
    assert params["properties"]["order_id"]["type"] == "string"
    assert params["required"] == ["order_id"]


# -- the key only in .env.local -----------------------------------------------------------------

#: The inner project's test: the same call in both modes, the key coming from .env.local.
_DOTENV_TEST = '''
import pytest

from pytest_livekit import assert_tool_called

TOOL_OUTPUT = {tool_output!r}


@pytest.mark.livekit(agent="voice_agent:server", providers="real")
@pytest.mark.parametrize("mode", [
    pytest.param("in-process", marks=pytest.mark.livekit(agent_mode="in-process")),
    pytest.param("worker", marks=pytest.mark.livekit(agent_mode="worker")),
])
async def test_refund(mode, livekit_call):
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()
    assert livekit_call.record.agent_mode == mode
    tool = assert_tool_called(livekit_call, "lookup_order", order_id="1234")
    assert tool.output == TOOL_OUTPUT
    replies = [i.text for i in livekit_call.record.items if i.role == "assistant"]
    assert any(TOOL_OUTPUT in r for r in replies), replies
'''


def test_key_only_in_dotenv_file_of_the_project(
    pytester: pytest.Pytester, livekit_server: Any
) -> None:
    """A project whose key lives only in ``.env.local`` at its root (the starter template's
    layout), tested with pytest started there: both modes reach the provider with that key.

    Its own server and key: nothing in this process's environment can stand in for the file.
    The file's ``OPENAI_BASE_URL`` is deliberately wrong, and the environment's must win (the
    agent loads the file without overriding what is set).

    How the key travels: the plugin imports the agent module in the test process in both modes
    (to resolve ``voice_agent:server``), so its ``load_dotenv(".env.local")``, relative to the
    working directory like the starter template's, fills the test process's environment; an
    in-process agent reads it there, and a worker inherits it (and, started in the rootdir, also
    finds the file itself). Started from a subfolder, only the worker would find the file.
    """
    from tests.agents import openai_agent

    with OpenAICompatibleServer(RULES) as server:
        pytester.makeini(
            "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        )
        pytester.makepyfile(voice_agent=Path(openai_agent.__file__).read_text())
        pytester.makepyfile(test_voice=_DOTENV_TEST.format(tool_output=TOOL_OUTPUT))
        (pytester.path / ".env.local").write_text(
            f"OPENAI_API_KEY={server.api_key}\n"
            # a port nobody listens on: used only if the file wrongly overrode the environment
            "OPENAI_BASE_URL=http://127.0.0.1:9/v1\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTEST_"))}
        env.update(
            OPENAI_BASE_URL=server.base_url,
            LIVEKIT_API_KEY=livekit_server.api_key,
            LIVEKIT_API_SECRET=livekit_server.api_secret,
            # pytest-livekit from this checkout (the agent itself is the project's own file)
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        # The session's own server (external mode): the inner run starts no second one. It blocks
        # this thread; the provider double answers from its own.
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
             f"--livekit-url={livekit_server.url}"],
            cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert re.search(r"\b2 passed\b", proc.stdout), output
        assert livekit_server.api_secret not in output

        rejected = [r for r in server.requests if not r.authorized]
        assert not rejected, f"requests without the key from .env.local: {rejected}"
        chats = server.chat_requests
        # two per mode: the question with the tool schema, the follow-up with the tool output
        assert len(chats) == 4, [(r.last_user_text, r.answer) for r in chats]
        for request in chats[0::2]:
            assert re.search(r"refund.*order", request.last_user_text)
            _assert_lookup_schema(request)
        for request in chats[1::2]:
            assert request.tool_outputs() == [TOOL_OUTPUT]
