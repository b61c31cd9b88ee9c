"""Tests of the offline LLM's rule machinery: templates, spoken digits, checks against the real
function-tool schemas of a livekit Agent, and the declarative (pyproject/marker) form.

No mocks: the tools are real ``@function_tool`` methods of a real ``Agent`` subclass, their
schemas come from livekit, and the answers are collected from real ``ScriptedLLM`` streams.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import pytest
from livekit.agents import Agent, AgentSession, RunContext, RunResult, function_tool, llm
from pydantic import BaseModel

from pytest_livekit.agent.llm_rules import (
    LLMSettings,
    merge_llm_settings,
    parse_llm_settings,
    parse_rule,
    parse_rules,
)
from pytest_livekit.errors import ConfigError
from pytest_livekit.offline.llm import (
    CONVERTERS,
    Rule,
    RuleTemplateError,
    ScriptedLLM,
    ToolCallSpec,
    ToolSchemaError,
    check_rules,
    spoken_digits,
    tool,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class LineItem(BaseModel):
    sku: str
    quantity: int = 1


class ShopAgent(Agent):
    """An agent "the test did not write": the rules only know its tools' names and schemas."""

    def __init__(self) -> None:
        super().__init__(instructions="You help with orders.")
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @function_tool
    async def lookup_order(self, context: RunContext[Any], order_id: str) -> str:
        """Look up an order.

        Args:
            order_id: The order number.
        """
        self.calls.append(("lookup_order", {"order_id": order_id}))
        return f"order {order_id} shipped yesterday"

    @function_tool
    async def reorder(
        self,
        count: int,
        priority: Priority,
        items: list[LineItem],
        note: str | None,
        mode: Literal["mail", "pickup"] = "mail",
        gift: bool = False,
    ) -> str:
        """Order again."""
        self.calls.append(("reorder", {"count": count, "priority": priority, "note": note}))
        return "reordered"

    @function_tool(
        raw_schema={
            "name": "open_ticket",
            "description": "Open a support ticket.",
            "parameters": {
                "type": "object",
                "properties": {"topic": {"type": "string"}, "urgent": {"type": "boolean"}},
                "required": ["topic"],
            },
        }
    )
    async def open_ticket(self, raw_arguments: dict[str, object]) -> str:
        self.calls.append(("open_ticket", dict(raw_arguments)))
        return "ticket 7"


ORDER = r"order (?P<order_id>[a-z ]+)"


def _ctx(user_text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content=user_text)
    return ctx


async def _answer(
    scripted: ScriptedLLM, user_text: str, tools: list[Any]
) -> tuple[str, list[tuple[str, Any]]]:
    """Text and tool calls (name, parsed arguments) of one streamed answer."""
    chunks = [c async for c in scripted.chat(chat_ctx=_ctx(user_text), tools=tools)]
    text = "".join(c.delta.content or "" for c in chunks if c.delta)
    calls = [(tc.name, json.loads(tc.arguments)) for c in chunks if c.delta for tc in c.delta.tool_calls]
    return text, calls


# -- spoken numbers and templates ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("one two three four", "1234"),
        ("one two three four please", "1234"),
        ("oh seven zero", "070"),
        ("double three five", "335"),
        ("twelve thirty four", "1234"),
        ("nineteen eighty four", "1984"),
        ("one hundred and five", "105"),
        ("two thousand twenty four", "2024"),
        ("12-34", "1234"),
        ("no numbers here", ""),
    ],
)
def test_spoken_digits(said: str, digits: str) -> None:
    assert spoken_digits(said) == digits


def test_argument_templates_fill_from_named_groups_with_converters() -> None:
    rule = Rule(
        r"(?P<name>[a-z]+) wants (?P<n>[a-z ]+) of (?P<order_id>[a-z ]+?) now",
        reply="Okay {name:title}.",
        tools=(
            tool(
                "lookup_order",
                order_id="{order_id:digits}",
                label="{name:upper}-{n:int}",
                raw="{order_id}",
                count="{n:int}",
                nested={"ids": ["{order_id:digits}", "{{order_id}}"]},
                braces='{"a": 1} { x }',
            ),
        ),
    )
    assert set(CONVERTERS) == {"digits", "int", "number", "lower", "upper", "title"}
    said = "ann wants twenty three of one two three four now"
    assert rule.render_reply(said) == "Okay Ann."
    (call,) = rule.render_tool_calls(said)  # no tools given: native types, no schema check
    assert dict(call.arguments) == {
        "order_id": "1234",
        "label": "ANN-23",
        "raw": "one two three four",
        "count": 23,
        "nested": {"ids": ["1234", "{order_id}"]},
        "braces": '{"a": 1} { x }',
    }
    with pytest.raises(ValueError, match="does not match"):
        rule.render_tool_calls("something else")


def test_after_tools_uses_outputs_and_groups_and_leaves_other_braces() -> None:
    rule = Rule(
        ORDER,
        tools=(tool("lookup_order", order_id="{order_id:digits}"),),
        after_tools=("Order {order_id:digits}: {output} | {outputs} | {unknown} | {{output}}"),
    )
    text = rule.render_after_tools(["a", "b"], "order one two")
    assert text == "Order 12: b | a b | {unknown} | {output}"
    plain = Rule(ORDER, tools=(tool("lookup_order", order_id="1"),), after_tools="[{order_id}] {output}")
    assert plain.render_after_tools(["a"]) == "[] a", "without the user's text the groups are empty"


def test_template_errors_at_rule_construction() -> None:
    with pytest.raises(
        RuleTemplateError, match=r"'\{orderid:digits\}' names no group of the pattern; groups: order_id"
    ):
        Rule(ORDER, tools=(tool("lookup_order", order_id="{orderid:digits}"),))
    with pytest.raises(RuleTemplateError, match="unknown converter 'digit'.*converters: digits, int"):
        Rule(ORDER, tools=(tool("lookup_order", order_id="{order_id:digit}"),))
    with pytest.raises(RuleTemplateError, match=r"no group.*groups: none \(add a named group"):
        Rule("refund", tools=(tool("lookup_order", order_id="{order_id}"),))
    # In a reply an unknown {name} is text, but {name:converter} is clearly meant as a placeholder.
    assert Rule("refund", reply="Sure {thing}").render_reply("refund") == "Sure {thing}"
    with pytest.raises(RuleTemplateError, match="reply") as info:
        Rule("refund", reply="Sure {thing:digits}")
    assert info.value.part == ("reply",)
    with pytest.raises(ValueError, match="reserved"):
        Rule("(?P<output>x)", reply="y")
    assert issubclass(RuleTemplateError, ValueError)


def test_converter_failure_when_the_rule_fires_names_argument_and_words() -> None:
    rule = Rule(ORDER, tools=(tool("lookup_order", order_id="{order_id:digits}"),))
    with pytest.raises(
        RuleTemplateError,
        match=r"argument order_id: \{order_id:digits\} cannot convert 'please'.*caller said 'order please'",
    ):
        rule.render_tool_calls("order please")


# -- checks against the agent's real tool schemas -----------------------------------------------
def _error(rule: Rule, tools: list[Any]) -> ToolSchemaError:
    with pytest.raises(ToolSchemaError) as info:
        rule.check_tools(tools)
    return info.value


def test_schema_mismatch_messages_name_rule_tool_argument_and_schema() -> None:
    tools = ShopAgent().tools
    schema = '{"properties":{"order_id":{"type":"string"}},"required":["order_id"],"type":"object"}'

    missing = _error(Rule(ORDER, tools=(tool("lookup_order"),)), tools)
    assert str(missing) == (
        f"Rule(pattern={ORDER!r}) calls lookup_order without its required argument 'order_id'. "
        f"Parameters of lookup_order: {schema}"
    )
    assert (missing.tool, missing.argument, missing.pattern) == ("lookup_order", "order_id", ORDER)
    assert missing.schema is not None and missing.schema["required"] == ["order_id"]

    unknown = _error(Rule(ORDER, tools=(tool("lookup_order", orderid="{order_id}"),)), tools)
    assert "with argument 'orderid', which lookup_order does not take (its arguments: order_id)" in str(
        unknown
    )
    assert str(unknown).endswith(schema)

    wrong = _error(Rule(ORDER, tools=(tool("lookup_order", order_id=1234),)), tools)
    assert "with order_id=1234 (an integer), but order_id must be a string." in str(wrong)

    no_tool = _error(Rule(ORDER, tools=(tool("cancel_order", order_id="1"),)), tools)
    assert str(no_tool) == (
        f"Rule(pattern={ORDER!r}) calls ['cancel_order'], but the agent only offers "
        "['lookup_order', 'open_ticket', 'reorder']"
    )
    assert no_tool.argument is None and no_tool.offered == ("lookup_order", "open_ticket", "reorder")
    assert issubclass(ToolSchemaError, ValueError)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"priority": "urgent"}, 'priority="urgent" (a string), but priority must be one of ["low", "high"]'),
        ({"mode": "drone"}, 'mode="drone" (a string), but mode must be one of ["mail", "pickup"]'),
        ({"items": [{"sku": 3}]}, "items[0].sku=3 (an integer), but items[0].sku must be a string"),
        (
            {"items": [{"sku": "a", "colour": "red"}]},
            "'items[0].colour', which is not a field there (fields: sku, quantity)",
        ),
        ({"items": [{}]}, "without its required field 'items[0].sku'"),
        ({"items": "a, b"}, 'items="a, b" (a string), but items must be an array'),
        ({"gift": "{n}"}, "gift='{n}' (filled from the caller's words), but gift must be a boolean"),
        (
            {"count": "about {n:int}"},
            "count='about {n:int}' (filled from the caller's words), but count must be an integer",
        ),
        ({"count": True}, "count=true (a boolean), but count must be an integer"),
        ({"note": 5}, "note=5 (an integer), but note must be a string or null"),
    ],
)
def test_schema_mismatches_of_a_richer_tool(arguments: dict[str, Any], message: str) -> None:
    base = {"count": "{n:int}", "priority": "low", "items": [{"sku": "a"}]}
    error = _error(Rule(r"(?P<n>\w+)", tools=(tool("reorder", **{**base, **arguments}),)), ShopAgent().tools)
    assert message in str(error)
    assert '"$defs":{"LineItem":' in str(error) and '"title"' not in str(error)


def test_raw_function_tool_schema_is_checked() -> None:
    tools = ShopAgent().tools
    Rule("ticket", tools=(tool("open_ticket", topic="refund", urgent=True),)).check_tools(tools)
    error = _error(Rule("ticket", tools=(tool("open_ticket", topic="refund", urgent="yes"),)), tools)
    assert 'urgent="yes" (a string), but urgent must be a boolean' in str(error)
    assert 'Parameters of open_ticket: {"type":"object","properties":{"topic":' in str(error)


def test_check_rules_up_front_and_unknown_tools_of_other_agents() -> None:
    tools = ShopAgent().tools
    rules = [
        Rule(ORDER, tools=(tool("lookup_order", order_id="{order_id:digits}"),)),
        Rule("billing", tools=(tool("billing_refund", amount=5),)),  # a tool of a handoff target
        Rule("hi", reply="Hello."),
    ]
    with pytest.raises(ToolSchemaError, match=r"calls \['billing_refund'\]"):
        check_rules(rules, tools)
    check_rules(rules, tools, allow_unknown_tools=True)
    scripted = ScriptedLLM(rules)
    scripted.check_rules(tools, allow_unknown_tools=True)
    # Known tools are still checked when unknown ones are allowed.
    bad = ScriptedLLM([Rule("x", tools=(tool("lookup_order", order_id=1),))])
    with pytest.raises(ToolSchemaError, match="must be a string"):
        bad.check_rules(tools, allow_unknown_tools=True)
    # Tool sets are looked into.
    check_rules(rules[:1], [llm.Toolset(id="shop", tools=tools)])


async def test_scripted_llm_fills_and_types_arguments_from_the_schema() -> None:
    tools = ShopAgent().tools
    scripted = ScriptedLLM(
        [
            Rule(
                r"reorder (?P<n>\w+) of (?P<sku>\w+)",
                reply="Reordering {n} {sku}.",
                # {n:digits} is text, but count is an int: sent as a JSON integer. "note" is
                # required but nullable: sent as null, as a strict-mode model does.
                tools=(
                    tool(
                        "reorder", count="{n:digits}", priority="{sku:lower}", items=[{"sku": "{sku:upper}"}]
                    ),
                ),
            ),
            Rule(ORDER, tools=(tool("lookup_order", order_id="{order_id:int}"),)),
        ]
    )
    scripted.check_rules(tools)
    text, calls = await _answer(scripted, "Please reorder three of HIGH", tools)
    assert text == "Reordering three HIGH."
    assert calls == [("reorder", {"count": 3, "priority": "high", "items": [{"sku": "HIGH"}], "note": None})]

    # {order_id:int} for a string parameter: the number is sent as text.
    _, calls = await _answer(scripted, "my order twenty four", tools)
    assert calls == [("lookup_order", {"order_id": "24"})]

    # What the caller said breaks the schema only now: the error names the words.
    with pytest.raises(ToolSchemaError, match=r"priority=\"blue\".*The caller said 'reorder two of blue'"):
        await _answer(scripted, "reorder two of blue", tools)


async def test_default_reply_only_needs_no_rules() -> None:
    scripted = ScriptedLLM([], fallback="Okay.")
    assert scripted.fallback == "Okay." and scripted.greeting is None and scripted.rules == ()
    scripted.check_rules(ShopAgent().tools)
    assert await _answer(scripted, "anything at all", ShopAgent().tools) == ("Okay.", [])
    empty = llm.ChatContext.empty()
    assert (await scripted.chat(chat_ctx=empty).collect()).text == "Okay."


async def test_agent_session_runs_the_agents_real_tool_with_arguments_from_the_words() -> None:
    agent = ShopAgent()
    settings = parse_llm_settings(
        {
            "default_reply": "Okay.",
            "rules": [
                {
                    "when": r"refund .*order (?P<order_id>[a-z ]+)",
                    "say": "Let me check.",
                    "call": [{"tool": "lookup_order", "arguments": {"order_id": "{order_id:digits}"}}],
                    "then": "Order {order_id:digits}: {output}.",
                }
            ],
        },
        "test",
    )
    scripted = settings.build_llm()
    scripted.check_rules(agent.tools)
    async with AgentSession(llm=scripted) as session:
        await session.start(agent)
        result: RunResult[None] = await session.run(user_input="I want a refund for order one two three four")
        result.expect.next_event().is_message(role="assistant")
        result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
        result.expect.next_event().is_function_call_output(output="order 1234 shipped yesterday")
        reply = result.expect.next_event().is_message(role="assistant")
        assert reply.event().item.text_content == "Order 1234: order 1234 shipped yesterday."
        other: RunResult[None] = await session.run(user_input="what is the weather")
        assert other.expect.next_event().is_message(role="assistant").event().item.text_content == "Okay."
    assert agent.calls == [("lookup_order", {"order_id": "1234"})]


# -- the declarative form -----------------------------------------------------------------------
PYPROJECT = """
[tool.pytest_livekit.llm]
default_reply = "Okay."
greeting = "Hello, how can I help?"

[[tool.pytest_livekit.call_types.refund.llm.rules]]
when = "refund .*order (?P<order_id>[a-z ]+)"
say = "Let me check."
call = [{ tool = "lookup_order", arguments = { order_id = "{order_id:digits}" } }]
then = "I found it: {output}"

[[tool.pytest_livekit.call_types.refund.llm.rules]]
when = "human"
call = "open_ticket"
"""


def test_parse_pyproject_tables_and_merge_layers() -> None:
    data = tomllib.loads(PYPROJECT)["tool"]["pytest_livekit"]
    run_wide = parse_llm_settings(data["llm"], "tool.pytest_livekit.llm")
    refund = parse_llm_settings(
        data["call_types"]["refund"]["llm"], "tool.pytest_livekit.call_types.refund.llm"
    )
    assert run_wide == LLMSettings(default_reply="Okay.", greeting="Hello, how can I help?")
    first, second = refund.rules
    assert first == Rule(
        "refund .*order (?P<order_id>[a-z ]+)",
        reply="Let me check.",
        tools=(ToolCallSpec("lookup_order", {"order_id": "{order_id:digits}"}),),
        after_tools="I found it: {output}",
    )
    assert first.source == "tool.pytest_livekit.call_types.refund.llm.rules[0]"
    assert second.tools == (ToolCallSpec("open_ticket"),)

    test_rule = Rule("refund", reply="Test-specific.")
    marker = parse_rules([test_rule, {"when": "bye", "say": "Goodbye."}], "@pytest.mark.livekit(llm_rules)")
    assert marker[0] is test_rule and marker[1].source == "@pytest.mark.livekit(llm_rules)[1]"
    merged = merge_llm_settings(LLMSettings(rules=marker, time_to_first_token=0.2), refund, None, run_wide)
    assert merged.rules == (*marker, *refund.rules)
    assert (merged.default_reply, merged.greeting, merged.time_to_first_token) == (
        "Okay.",
        "Hello, how can I help?",
        0.2,
    )
    scripted = merged.build_llm()
    assert scripted.match("refund for order one") is test_rule
    assert (scripted.fallback, scripted.greeting, scripted.time_to_first_token) == (
        "Okay.",
        "Hello, how can I help?",
        0.2,
    )
    assert LLMSettings().build_llm().rules == ()


WHERE = "tool.pytest_livekit.call_types.refund.llm"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rules": [{"say": "x"}]}, f"{WHERE}.rules[0]: 'when' is missing"),
        (
            {"rules": [{"when": "a", "say": "x"}, {"when": "b"}]},
            f"{WHERE}.rules[1] (when = 'b'): needs 'say', 'call' or both.",
        ),
        (
            {"rules": [{"when": "a", "reply": "x"}]},
            "rules[0] (when = 'a'): unknown key 'reply'; valid keys: when, say, call, then.",
        ),
        (
            {"rules": [{"when": "a", "say": "x", "then": "y"}]},
            "'then' is said after the tools return, so it needs 'call'",
        ),
        (
            {"rules": [{"when": "a(", "say": "x"}]},
            "rules[0] (when = 'a('): 'when' is not a valid regular expression",
        ),
        (
            {"rules": [{"when": 3, "say": "x"}]},
            "rules[0]: 'when' must be a non-empty regular expression, got 3",
        ),
        ({"rules": [{"when": "a", "say": ""}]}, "'say' must be non-empty text"),
        ({"rules": [{"when": "a", "call": []}]}, "rules[0] (when = 'a').call is empty"),
        (
            {"rules": [{"when": "a", "call": [{"name": "x"}]}]},
            ".call[0]: unknown key 'name'; valid keys: tool, arguments",
        ),
        (
            {"rules": [{"when": "a", "call": [{"tool": "x", "order_id": "1"}]}]},
            "(the tool's own arguments go under 'arguments')",
        ),
        (
            {"rules": [{"when": "a", "call": [{"tool": ""}]}]},
            ".call[0]: 'tool' must be the name of one of the agent's tools",
        ),
        (
            {"rules": [{"when": "a", "call": [{"tool": "x", "arguments": [1]}]}]},
            ".call[0].arguments must be a table",
        ),
        (
            {"rules": [{"when": "a", "call": 5}]},
            ".call must be a list of { tool = ..., arguments = {...} } tables",
        ),
        (
            {
                "rules": [
                    {
                        "when": ORDER,
                        "call": [{"tool": "lookup_order", "arguments": {"order_id": "{orderid:digits}"}}],
                    }
                ]
            },
            f"{WHERE}.rules[0] (when = {ORDER!r}).call[0].arguments.order_id: '{{orderid:digits}}' names no group",
        ),
        (
            {"rules": [{"when": ORDER, "call": [{"tool": "t", "arguments": {"a": {"b": ["{x}"]}}}]}]},
            ".call[0].arguments.a.b[0]: '{x}' names no group",
        ),
        (
            {"rules": [{"when": ORDER, "call": "t", "then": "{order_id:int2}"}]},
            ".then: unknown converter 'int2'",
        ),
        (
            {"rules": [{"when": "a", "say": "{x:digits}"}]},
            "rules[0] (when = 'a').say: '{x:digits}' names no group",
        ),
        (
            {"rules": {"when": "a", "say": "x"}},
            f"{WHERE}.rules must be a list of rules (in TOML: [[{WHERE}.rules]] tables)",
        ),
        (
            {"rules": ["hi"]},
            f"{WHERE}.rules[0] must be a rule table with keys when, say, call, then (or a Rule)",
        ),
        ({"default_reply": 3}, f"{WHERE}: 'default_reply' must be non-empty text, got 3."),
        (
            {"time_to_first_token": -1},
            f"{WHERE}.time_to_first_token must be a number of seconds >= 0, got -1.",
        ),
        ({"time_to_first_token": True}, "time_to_first_token must be a number of seconds >= 0, got True."),
        (
            {"fallback": "x"},
            f"{WHERE}: unknown key 'fallback'; valid keys: rules, default_reply, greeting, time_to_first_token.",
        ),
    ],
)
def test_declarative_errors_say_where(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_llm_settings(table, WHERE)
    assert message in str(info.value)


def test_rule_to_dict_round_trips_through_json() -> None:
    rule = Rule(
        ORDER,
        reply="One moment.",
        tools=(tool("lookup_order", order_id="{order_id:digits}", extra={"ids": [1, 2]}),),
        after_tools="Found: {output}",
    )
    data = json.loads(json.dumps(rule.to_dict()))
    assert data == {
        "when": ORDER,
        "say": "One moment.",
        "call": [
            {"tool": "lookup_order", "arguments": {"order_id": "{order_id:digits}", "extra": {"ids": [1, 2]}}}
        ],
        "then": "Found: {output}",
    }
    assert parse_rule(data, "worker") == rule
    assert Rule("hi", reply="Hello.").to_dict() == {"when": "hi", "say": "Hello."}


def test_parse_rule_accepts_rule_objects_and_rejects_non_tables() -> None:
    rule = Rule("x", reply="y")
    assert parse_rule(rule, "here") is rule
    with pytest.raises(ConfigError, match=r"^here must be a rule table"):
        parse_rule(["x"], "here")
    with pytest.raises(ConfigError, match=r"^here must be a table with keys rules, default_reply"):
        parse_llm_settings("Okay.", "here")
    with pytest.raises(ConfigError, match=r"\.arguments: arguments of tool 'x' must be JSON-serialisable"):
        parse_rule({"when": "a", "call": {"tool": "x", "arguments": {"at": object()}}}, "here")
