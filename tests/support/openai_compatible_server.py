"""A scripted OpenAI Chat Completions server on loopback: a test double for a real provider.

Real provider clients (livekit's ``openai.LLM(base_url=...)``, the ``openai`` SDK) talk to it
over HTTP exactly as they talk to api.openai.com, so a test proves the whole path: the agent
found the user's key and base URL, built a streamed request with its tools, parsed the streamed
answer, ran the tool, and sent the tool's output back.

What it does, like OpenAI:

* ``POST /v1/chat/completions`` with ``"stream": true`` answers in server-sent events: a role
  delta, content deltas, or ``tool_calls`` deltas (index, id, function name, then the JSON
  arguments split across chunks), a ``finish_reason`` of ``tool_calls`` or ``stop``, a final
  usage chunk (empty ``choices``) when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``.
* ``GET /v1/models`` lists the models (livekit's ``LLM.prewarm()`` calls it).
* ``Authorization: Bearer <key>`` must be the key the server was told to expect: anything else
  is a 401 with OpenAI's error body. This is how a test proves the user's key reached the agent.
* Malformed requests are a 400 with OpenAI's error body (no model, no messages, a ``tool``
  message that answers no tool call, an unanswered tool call), and so are non-streamed
  requests: this double only streams, and says so instead of answering in a shape nobody tests.

What it says is scripted with :class:`Rule`: the last user message is matched against each rule
in order; a matching rule calls a tool (if the request offers it) or replies with text. After
tool results, it replies with a text that includes the tools' outputs.

Every request is recorded (:class:`RecordedRequest`: path, status, body) for assertions.

Async use (the server runs in the caller's event loop)::

    async with OpenAICompatibleServer([Rule(r"refund", tool="lookup_order",
                                            arguments={"order_id": "1234"})]) as server:
        llm = openai.LLM(base_url=server.base_url, api_key=server.api_key)

Thread use (for callers that block, e.g. a subprocess run, or a fixture wider than one test's
event loop; the server gets its own loop in a daemon thread)::

    with OpenAICompatibleServer(rules) as server:
        ...
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["OpenAICompatibleServer", "RecordedRequest", "Rule"]

#: Models ``GET /v1/models`` lists (the request's model is echoed whatever it is).
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
#: Characters of tool-call arguments per streamed chunk: small, so a client that does not join
#: the pieces of one call fails loudly.
ARGUMENT_CHUNK_CHARS = 5


@dataclass(frozen=True)
class Rule:
    """What the scripted model does when the last user message matches ``pattern``.

    Args:
        pattern: regular expression searched (case-insensitive) in the last user message.
        tool: name of the tool to call; the rule is skipped when the request does not offer it
            (a model cannot call a tool it was not given) or forbids tools (``tool_choice:
            "none"``).
        arguments: the tool's arguments (sent as JSON, streamed in pieces).
        reply: the text reply of a rule without a tool.
        after_tool: the text reply once the tool's result came back; ``{output}`` is replaced by
            the tool outputs (joined with spaces).
    """

    pattern: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    reply: str = ""
    after_tool: str = "Here is what I found. {output}"

    def matches(self, text: str) -> bool:
        """True if ``pattern`` occurs in ``text`` (case-insensitive)."""
        return re.search(self.pattern, text, re.IGNORECASE) is not None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, with what it answered."""

    method: str
    """HTTP method."""
    path: str
    """URL path, e.g. ``/v1/chat/completions``."""
    status: int
    """HTTP status the server answered with."""
    authorized: bool
    """True if the ``Authorization`` header carried the expected key."""
    body: dict[str, Any] | None = None
    """The JSON body, if it was a JSON object."""
    answer: dict[str, Any] = field(default_factory=dict)
    """What the scripted model answered: ``{"text": ...}`` or ``{"tool_calls": [...]}``, or
    ``{"error": message}`` for a rejected request."""

    @property
    def is_chat(self) -> bool:
        """True for an accepted, streamed chat completion."""
        return self.path == "/v1/chat/completions" and self.status == 200

    @property
    def model(self) -> str | None:
        """The requested model."""
        return (self.body or {}).get("model")

    @property
    def stream(self) -> bool:
        """True if the request asked for a streamed answer."""
        return (self.body or {}).get("stream") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's messages."""
        return list((self.body or {}).get("messages") or [])

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        """Offered tools by name: each one's ``function`` object (description, JSON schema)."""
        return _offered_tools(self.body or {})

    @property
    def last_user_text(self) -> str:
        """Text of the last user message ("" if none)."""
        return _last_text(self.messages, "user")

    def tool_outputs(self) -> list[str]:
        """Contents of the request's ``tool`` messages, in order."""
        return [_text(m.get("content")) for m in self.messages if m.get("role") == "tool"]


class OpenAIError(Exception):
    """A request the server rejects, with OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAICompatibleServer:
    """A scripted OpenAI Chat Completions server on ``127.0.0.1`` (random free port).

    Args:
        rules: what the model does, tried in order (see :class:`Rule`).
        api_key: the key clients must send as ``Authorization: Bearer <key>``; a random
            ``sk-test-...`` key by default.
        default_reply: the text reply when no rule matches.
        models: what ``GET /v1/models`` lists.
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        api_key: str | None = None,
        default_reply: str = "Sorry, I can not help with that.",
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        self.rules = tuple(rules)
        self.api_key = api_key or f"sk-test-{secrets.token_hex(16)}"
        self.default_reply = default_reply
        self.models = tuple(models)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._requests: list[RecordedRequest] = []
        # Requests are recorded in the server's loop (maybe another thread) and waited for in
        # the test's: a condition serves both (async waiters wait in a worker thread).
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<OpenAICompatibleServer {self.base_url if self.port else '(stopped)'}>"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` / ``OPENAI_BASE_URL``: ``http://127.0.0.1:<port>/v1``."""
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    # -- recorded requests -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._changed:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The accepted chat completions so far, in arrival order."""
        return [r for r in self.requests if r.is_chat]

    def clear(self) -> None:
        """Forget the recorded requests (e.g. between tests sharing one server)."""
        with self._changed:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """Block until ``predicate(requests)`` holds or ``timeout`` s passed; returns whether it
        held. Do not call it from the event loop the server runs in: use :meth:`await_for`.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._requests)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    async def await_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """:meth:`wait_for` without blocking the running event loop (which may be the server's)."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> OpenAICompatibleServer:
        """Listen on a free loopback port in the running event loop."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        # A short shutdown: a client still holding a keep-alive connection must not hold up the
        # test's teardown for aiohttp's default minute.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        # Bind the socket ourselves: port 0 picks a free port, and we can read which one.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None

    async def __aenter__(self) -> OpenAICompatibleServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> OpenAICompatibleServer:
        """Run the server in its own event loop in a daemon thread; returns once it listens."""
        if self._thread is not None:
            raise RuntimeError("the server already runs in a thread")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException:  # reported to start_in_thread through `failure`
                if not failure:
                    raise

        self._thread = threading.Thread(target=run, name="openai-compatible-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the OpenAI-compatible server did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            raise failure[0]
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and wait for its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._thread_loop is not None and self._thread_stop is not None
        self._thread_loop.call_soon_threadsafe(self._thread_stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the OpenAI-compatible server did not stop within {timeout} s")

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -- handlers ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            raise OpenAIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        if not secrets.compare_digest(key.strip(), self.api_key):
            # OpenAI shows the key's last four characters; so do we, never the whole key
            raise OpenAIError(
                401, f"Incorrect API key provided: ...{key.strip()[-4:]}.", code="invalid_api_key"
            )

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorized(request)
        except OpenAIError as exc:
            self._record(RecordedRequest(request.method, request.path, exc.status, False,
                                         answer={"error": str(exc)}))
            return web.json_response(exc.body, status=exc.status)
        self._record(RecordedRequest(request.method, request.path, 200, True))
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "pytest-livekit"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] | None = None
        authorized = False
        try:
            # OpenAI checks the key before it reads the body
            self._authorized(request)
            authorized = True
            try:
                parsed = await request.json()
            except ValueError:
                raise OpenAIError(400, "We could not parse the JSON body of your request.") from None
            if not isinstance(parsed, dict):
                raise OpenAIError(400, "The request body must be a JSON object.")
            body = parsed
            _validate(body)
            answer = self._decide(body)
        except OpenAIError as exc:
            self._record(RecordedRequest(request.method, request.path, exc.status, authorized, body,
                                         {"error": str(exc)}))
            return web.json_response(exc.body, status=exc.status)
        self._record(RecordedRequest(request.method, request.path, 200, True, body, answer))
        return await self._stream(request, body, answer)

    def _decide(self, body: dict[str, Any]) -> dict[str, Any]:
        """The scripted model: what to answer to these messages."""
        messages = body["messages"]
        user_text = _last_text(messages, "user")
        trailing: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            trailing.insert(0, _text(message.get("content")))
        if trailing:  # tool results came back: say what they were
            rule = next((r for r in self.rules if r.tool and r.matches(user_text)), None)
            template = rule.after_tool if rule else Rule("").after_tool
            return {"text": template.format(output=" ".join(trailing))}
        offered = _offered_tools(body)
        tools_allowed = body.get("tool_choice") != "none"
        for rule in self.rules:
            if not rule.matches(user_text):
                continue
            if rule.tool is None:
                return {"text": rule.reply}
            if tools_allowed and rule.tool in offered:
                call = {"id": f"call_{secrets.token_hex(12)}", "name": rule.tool,
                        "arguments": json.dumps(dict(rule.arguments))}
                return {"tool_calls": [call]}
        return {"text": self.default_reply}

    async def _stream(
        self, request: web.Request, body: dict[str, Any], answer: dict[str, Any]
    ) -> web.StreamResponse:
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_{secrets.token_hex(12)}",
            },
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for chunk in _chunks(completion_id, str(body["model"]), answer, include_usage, _prompt_tokens(body)):
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# -- request checks ------------------------------------------------------------------------


def _validate(body: dict[str, Any]) -> None:
    """Reject what OpenAI rejects (the parts a voice agent can get wrong)."""
    if not body.get("model"):
        raise OpenAIError(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "Invalid 'messages': empty array. Expected an array with minimum "
                          "length 1.", param="messages", code="empty_array")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise OpenAIError(400, "Invalid type for 'tools': expected an array.", param="tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                    or not fn.get("name"):
                raise OpenAIError(400, f"Invalid 'tools[{i}]': expected a function tool with a name.",
                                  param=f"tools[{i}]")
    _validate_tool_turns(messages)
    if body.get("stream") is not True:
        raise OpenAIError(400, "This OpenAI-compatible test double only answers streamed requests "
                          "(\"stream\": true).", param="stream")


def _validate_tool_turns(messages: list[Any]) -> None:
    """Every tool call is answered by a ``tool`` message, and every ``tool`` message answers one."""
    pending: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not message.get("role"):
            raise OpenAIError(400, f"Invalid 'messages[{i}]': expected an object with a role.",
                              param=f"messages[{i}]")
        role = message["role"]
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                raise OpenAIError(400, "Invalid parameter: messages with role 'tool' must be a response "
                                  "to a preceeding message with 'tool_calls'.", param=f"messages.[{i}].role")
            pending.discard(message["tool_call_id"])
            continue
        if pending:
            raise OpenAIError(400, "An assistant message with 'tool_calls' must be followed by tool "
                              "messages responding to each 'tool_call_id'. The following tool_call_ids "
                              f"did not have response messages: {', '.join(sorted(pending))}",
                              param="messages")
        if role == "assistant":
            pending = {str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)}
    if pending:
        raise OpenAIError(400, "An assistant message with 'tool_calls' must be followed by tool "
                          "messages responding to each 'tool_call_id'.", param="messages")


def _offered_tools(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        t["function"]["name"]: t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    }


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last_text(messages: Sequence[Mapping[str, Any]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return _text(message.get("content"))
    return ""


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    """A rough prompt size (words); real tokenisation is beside the point of this double."""
    words = sum(len(_text(m.get("content")).split()) for m in body.get("messages") or [])
    return words + 10 * len(body.get("tools") or [])


# -- streamed answer -----------------------------------------------------------------------


def _chunks(completion_id: str, model: str, answer: Mapping[str, Any], include_usage: bool,
            prompt_tokens: int) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one answer, in OpenAI's order and shape."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_test_double",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:  # OpenAI sends usage: null on every chunk before the usage chunk
            out["usage"] = None
        return out

    completion_tokens = 0
    if "tool_calls" in answer:
        for index, call in enumerate(answer["tool_calls"]):
            head = {"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["name"], "arguments": ""}}
            if index == 0:
                yield chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})
            else:
                yield chunk({"tool_calls": [head]})
            arguments = call["arguments"]
            for start in range(0, len(arguments), ARGUMENT_CHUNK_CHARS):
                piece = arguments[start:start + ARGUMENT_CHUNK_CHARS]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            completion_tokens += 5 + len(arguments) // 4
        yield chunk({}, "tool_calls")
    else:
        text = str(answer["text"])
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        # word by word, each with its leading space, as OpenAI's tokens come; joined, the exact text
        for piece in re.findall(r"\s*\S+|\s+$", text) or [text]:
            yield chunk({"content": piece})
            completion_tokens += 1
        yield chunk({}, "stop")
    if include_usage:
        yield {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_test_double",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0},
            },
        }
