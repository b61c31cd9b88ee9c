r"""A scripted, deterministic stand-in for a cloud LLM, as a ``livekit.agents.llm.LLM`` plugin.

A test lists :class:`Rule` objects: "when the caller says something matching this regex, say
this and/or call these tools, then say that". :class:`ScriptedLLM` answers through the real
livekit LLM interface (streamed chunks, real tool calls that livekit executes against the
agent's ``@function_tool`` methods), so the agent code under test runs exactly as with a cloud
model, minus the network, the cost and the randomness.

Example:
    >>> llm = ScriptedLLM(
    ...     [
    ...         Rule(
    ...             r"refund",
    ...             reply="Let me look that order up.",
    ...             tools=(Rule.tool("lookup_order", order_id="1234"),),
    ...             after_tools="Your order status is: {output}",
    ...         ),
    ...         Rule(r"\bhuman\b", reply="Transferring you now."),
    ...     ],
    ...     greeting="Hello, how can I help?",
    ... )

PYTEST_DONT_REWRITE (only ``pytest_livekit.assertions`` is rewritten).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    llm,
    utils,
)
from livekit.agents.llm.tool_context import get_fnc_tool_names
from livekit.agents.types import NOT_GIVEN, NotGivenOr

__all__ = [
    "DEFAULT_AFTER_TOOLS",
    "DEFAULT_FALLBACK",
    "Rule",
    "ScriptedLLM",
    "ScriptedLLMStream",
    "ToolCallSpec",
    "tool",
]

DEFAULT_FALLBACK = "Sorry, I did not catch that. Could you repeat?"
"""What :class:`ScriptedLLM` says when no rule matches."""

DEFAULT_AFTER_TOOLS = "Done."
"""What :class:`ScriptedLLM` says after tools ran, when the rule has no ``after_tools``."""


@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call a :class:`Rule` makes: the tool's name and its JSON-serialisable arguments.

    Attributes:
        name: Name of a ``@function_tool`` the agent offers.
        arguments: Keyword arguments for it; stored as a read-only copy.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate and freeze the arguments.

        Raises:
            ValueError: If the name is empty or the arguments are not JSON-serialisable.
        """
        if not self.name:
            raise ValueError("a tool call needs a tool name")
        try:
            json.dumps(dict(self.arguments))
        except (TypeError, ValueError) as e:
            raise ValueError(f"arguments of tool {self.name!r} must be JSON-serialisable: {e}") from e
        # The caller's dict could be mutated later; a frozen rule must not change under it.
        object.__setattr__(self, "arguments", MappingProxyType(dict(self.arguments)))

    def arguments_json(self) -> str:
        """The arguments as the JSON object string an LLM provider would send.

        Returns:
            A JSON object, e.g. ``'{"order_id": "1234"}'``.
        """
        return json.dumps(dict(self.arguments))


def tool(name: str, /, **arguments: Any) -> ToolCallSpec:
    """Describe a tool call for a :class:`Rule`.

    Args:
        name: Name of a ``@function_tool`` the agent offers (positional, so a tool argument
            may itself be called ``name``).
        **arguments: The call's arguments; must be JSON-serialisable.

    Returns:
        The tool call specification.

    Example:
        >>> tool("lookup_order", order_id="1234")
    """
    return ToolCallSpec(name, arguments)


@dataclass(frozen=True)
class Rule:
    """One scripted behaviour of :class:`ScriptedLLM`.

    Attributes:
        pattern: Regular expression, searched case-insensitively in the latest user message.
        reply: Said when the rule fires (before the tool calls, if any).
        tools: Tool calls made when the rule fires; livekit runs them against the agent.
        after_tools: Said once the tools have returned. The literal placeholders ``{output}``
            (the last tool's output) and ``{outputs}`` (all outputs of that round, joined by
            spaces) are substituted; other braces are left alone.
    """

    pattern: str
    reply: str | None = None
    tools: tuple[ToolCallSpec, ...] = ()
    after_tools: str | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    tool = staticmethod(tool)

    def __post_init__(self) -> None:
        """Compile the pattern and check the rule makes sense.

        Raises:
            ValueError: If the pattern is not a valid regex, the rule would say and do
                nothing, or ``after_tools`` is given without tools.
            TypeError: If an item of ``tools`` is not a :class:`ToolCallSpec`.
        """
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except (re.error, TypeError) as e:
            raise ValueError(f"invalid regular expression in Rule(pattern={self.pattern!r}): {e}") from e
        object.__setattr__(self, "_regex", compiled)
        # Accept a list for convenience, but store a tuple so the rule stays immutable.
        tools = tuple(self.tools)
        for spec in tools:
            if not isinstance(spec, ToolCallSpec):
                raise TypeError(
                    f"Rule(pattern={self.pattern!r}): tools must be ToolCallSpec items "
                    f"(use Rule.tool(name, **arguments)), got {spec!r}"
                )
        object.__setattr__(self, "tools", tools)
        if not self.reply and not tools:
            raise ValueError(f"Rule(pattern={self.pattern!r}) needs a reply, tools, or both")
        if self.after_tools is not None and not tools:
            raise ValueError(f"Rule(pattern={self.pattern!r}) has after_tools but no tools")

    def matches(self, text: str) -> bool:
        """Whether the rule fires for a user message.

        Args:
            text: The user's message.

        Returns:
            True if :attr:`pattern` is found anywhere in ``text`` (case-insensitive).
        """
        return self._regex.search(text) is not None

    def render_after_tools(self, outputs: Sequence[str]) -> str:
        """The text to say after this rule's tools returned ``outputs``.

        Args:
            outputs: The tool outputs, in call order.

        Returns:
            :attr:`after_tools` with placeholders filled, or :data:`DEFAULT_AFTER_TOOLS`.
        """
        if self.after_tools is None:
            return DEFAULT_AFTER_TOOLS
        last = outputs[-1] if outputs else ""
        # Plain replacement, not str.format: replies may legitimately contain other braces.
        return self.after_tools.replace("{outputs}", " ".join(outputs)).replace("{output}", last)


class ScriptedLLM(llm.LLM[Literal["metrics_collected", "error"]]):
    """A ``livekit.agents`` LLM that answers from a list of :class:`Rule` objects.

    For each request it looks at the conversation:

    * The last items are tool outputs: it says the matching rule's ``after_tools`` text (it
      never calls tools twice for one user message, so a tool loop cannot happen).
    * A user message has not been answered yet: the first rule whose pattern matches it fires;
      if none matches, it says the fallback.
    * No user message at all (the agent greets first, via ``generate_reply``): it says the
      greeting, or the fallback if there is none.

    Text is streamed word by word, like a real model, so livekit's sentence splitting and
    TTS streaming are exercised. Deterministic: same conversation, same answer.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        fallback: str = DEFAULT_FALLBACK,
        greeting: str | None = None,
        time_to_first_token: float = 0.0,
    ) -> None:
        """Create the scripted model.

        Args:
            rules: Tried in order; the first match wins.
            fallback: Said when no rule matches (and for the greeting if ``greeting`` is None).
            greeting: Said when the agent speaks before the user has said anything.
            time_to_first_token: Simulated latency in seconds before the first chunk, to test
                how the agent behaves with a slow model. Must be >= 0.

        Raises:
            ValueError: If ``time_to_first_token`` is negative or ``fallback`` is empty.
            TypeError: If a rule is not a :class:`Rule`.
        """
        super().__init__()
        rules = tuple(rules)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"ScriptedLLM rules must be Rule objects, got {rule!r}")
        if time_to_first_token < 0:
            raise ValueError(f"time_to_first_token must be >= 0 seconds, got {time_to_first_token}")
        if not fallback:
            raise ValueError("fallback must be a non-empty reply")
        self._rules = rules
        self._fallback = fallback
        self._greeting = greeting
        self._time_to_first_token = time_to_first_token
        self.requests: list[str] = []
        """The user messages answered so far (one per rule/fallback answer), for inspection."""

    @property
    def model(self) -> str:
        """The model name, ``"scripted"``."""
        return "scripted"

    @property
    def provider(self) -> str:
        """The provider name, ``"offline"``."""
        return "offline"

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in the order they are tried."""
        return self._rules

    @property
    def time_to_first_token(self) -> float:
        """Simulated latency in seconds before the first chunk of each answer."""
        return self._time_to_first_token

    def match(self, text: str) -> Rule | None:
        """The rule that fires for a user message.

        Args:
            text: The user's message.

        Returns:
            The first matching rule, or ``None``.
        """
        for rule in self._rules:
            if rule.matches(text):
                return rule
        return None

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ScriptedLLMStream:
        """Answer a conversation (livekit calls this for every agent turn).

        Args:
            chat_ctx: The conversation so far.
            tools: The tools the agent offers; a rule may only call these.
            conn_options: Accepted for API compatibility; nothing can fail transiently.
            parallel_tool_calls: Ignored: a rule's tool calls are always sent together.
            tool_choice: ``"none"`` suppresses tool calls (the rule's ``reply`` is still said);
                other values are ignored.
            extra_kwargs: Ignored.

        Returns:
            The streamed answer.
        """
        return ScriptedLLMStream(
            self,
            chat_ctx=chat_ctx,
            tools=list(tools or []),
            conn_options=conn_options,
            allow_tools=tool_choice != "none",
        )


class ScriptedLLMStream(llm.LLMStream):
    """One :meth:`ScriptedLLM.chat` answer."""

    _llm: ScriptedLLM

    def __init__(
        self,
        scripted: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        allow_tools: bool,
    ) -> None:
        """Start answering (livekit streams run from construction).

        Args:
            scripted: The model.
            chat_ctx: The conversation so far.
            tools: The tools the agent offers.
            conn_options: livekit connection options (unused).
            allow_tools: False when the caller asked for ``tool_choice="none"``.
        """
        # Set before super().__init__, which starts the task that runs _run.
        self._allow_tools = allow_tools
        super().__init__(scripted, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)

    async def _run(self) -> None:
        """Work out the answer and emit it as chunks.

        Raises:
            ValueError: If a rule calls a tool the agent does not offer; a real model could
                not call it either, and an error here is clearer than livekit's
                "unknown function" tool output.
        """
        text, calls = self._decide()
        request_id = utils.shortuuid("scripted_")
        if self._llm.time_to_first_token > 0:
            await asyncio.sleep(self._llm.time_to_first_token)

        # Word-sized deltas (each keeps its leading space) so downstream streaming is exercised.
        for piece in re.findall(r"\s*\S+", text):
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )
        if calls:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(
                        role="assistant",
                        tool_calls=[
                            llm.FunctionToolCall(
                                name=spec.name,
                                arguments=spec.arguments_json(),
                                call_id=utils.shortuuid("call_"),
                            )
                            for spec in calls
                        ],
                    ),
                )
            )
        # Token counts are approximated by whitespace-separated words: there is no tokenizer.
        prompt_tokens = sum(len(t.split()) for t in _all_text(self._chat_ctx))
        completion_tokens = len(text.split()) + sum(
            len(spec.name.split()) + len(spec.arguments_json().split()) for spec in calls
        )
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion_tokens,
                    prompt_tokens=prompt_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )
        )

    def _decide(self) -> tuple[str, tuple[ToolCallSpec, ...]]:
        """Choose what to say and which tools to call for the current conversation.

        Returns:
            ``(text, tool_calls)``; ``text`` may be empty when only tools are called.
        """
        scripted = self._llm
        items = list(self._chat_ctx.items)
        user_index: int | None = None
        user_text = ""
        for i in range(len(items) - 1, -1, -1):
            item = items[i]
            if isinstance(item, llm.ChatMessage) and item.role == "user":
                user_text = item.text_content or ""
                if user_text.strip():
                    user_index = i
                    break
        if user_index is None:
            return (scripted._greeting or scripted._fallback), ()
        after = items[user_index + 1 :]

        if after and isinstance(after[-1], llm.FunctionCallOutput):
            # Second step of a tool-using turn: the tools of this user message have returned.
            rule = scripted.match(user_text)
            # Only the latest round: the trailing run of tool calls and their outputs.
            last_round = _trailing_outputs(after)
            if rule is None:
                return DEFAULT_AFTER_TOOLS, ()
            return rule.render_after_tools([o.output for o in last_round]), ()

        if any(_is_message(i, "assistant") for i in after):
            # Already answered (e.g. generate_reply() with instructions only). Re-running the
            # rule would repeat its tool calls and their side effects, so stay generic.
            return scripted._fallback, ()

        scripted.requests.append(user_text)
        rule = scripted.match(user_text)
        if rule is None:
            return scripted._fallback, ()
        calls = rule.tools if self._allow_tools else ()
        if calls:
            offered = set(get_fnc_tool_names(self._tools))
            missing = [c.name for c in calls if c.name not in offered]
            if missing:
                raise ValueError(
                    f"Rule(pattern={rule.pattern!r}) calls {missing}, but the agent only offers "
                    f"{sorted(offered)}"
                )
        text = rule.reply or ""
        if not calls and not text:
            # tool_choice="none" on a tools-only rule: a real model would still say something.
            text = scripted._fallback
        return text, calls


def _is_message(item: Any, role: str) -> bool:
    """Whether a chat item is a message from ``role``."""
    return isinstance(item, llm.ChatMessage) and item.role == role


def _trailing_outputs(items: Sequence[Any]) -> list[llm.FunctionCallOutput]:
    """The tool outputs at the end of ``items`` (the latest tool round), in order.

    Tool calls (``FunctionCall`` items) interleaved with their outputs are skipped over.
    """
    outputs: list[llm.FunctionCallOutput] = []
    for item in reversed(items):
        if isinstance(item, llm.FunctionCallOutput):
            outputs.append(item)
        elif not isinstance(item, llm.FunctionCall):
            break
    outputs.reverse()
    return outputs


def _all_text(chat_ctx: llm.ChatContext) -> list[str]:
    """Every piece of text in the conversation, for the approximate prompt token count."""
    texts: list[str] = []
    for item in chat_ctx.items:
        if isinstance(item, llm.ChatMessage):
            texts.append(item.text_content or "")
        elif isinstance(item, llm.FunctionCall):
            texts.append(f"{item.name} {item.arguments}")
        elif isinstance(item, llm.FunctionCallOutput):
            texts.append(item.output)
    return texts
