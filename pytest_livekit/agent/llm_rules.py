"""The offline LLM declared as data: ``llm`` tables in pyproject.toml and marker arguments.

A test of an agent it did not write states what the "LLM" does, with the agent's own tools::

    [tool.pytest_livekit.llm]                 # run-wide
    default_reply = "Okay."                   # when no rule matches (latency tests need no rules)
    greeting = "Hello, how can I help?"       # before the caller has said anything
    time_to_first_token = 0.3                 # simulated model latency, seconds

    [[tool.pytest_livekit.call_types.refund.llm.rules]]
    when = "refund .*order (?P<order_id>[a-z ]+)"   # regex, searched case-insensitively
    say = "Let me check."                           # optional, said before the tools
    call = [{ tool = "lookup_order", arguments = { order_id = "{order_id:digits}" } }]
    then = "I found it: {output}"                   # said after the tools, with their output

The same rule tables are accepted from Python, e.g.
``@pytest.mark.livekit(llm_rules=[{"when": "human", "say": "Transferring you."}])``, mixed
freely with :class:`~pytest_livekit.offline.llm.Rule` objects.

``call`` is a list of ``{ tool, arguments }`` tables; a single table, or a bare tool name for a
tool without arguments, also works. Argument strings and ``say``/``then`` are templates (see
:mod:`pytest_livekit.offline.llm`): ``{group}``, ``{group:digits}``, ``{group:int}``, ...,
``{output}``/``{outputs}`` in ``then``, ``{{``/``}}`` for literal braces.

Every error is a :class:`~pytest_livekit.errors.ConfigError` that says where, e.g.
``tool.pytest_livekit.call_types.refund.llm.rules[1] (when = 'refund'): 'then' needs 'call'``
(list indices count from 0).

Parsing builds real :class:`Rule` objects, which imports ``livekit.agents`` (about 1.5 s) on the
first call; importing this module does not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_livekit.errors import ConfigError

if TYPE_CHECKING:
    from pytest_livekit.offline.llm import Rule, ScriptedLLM, ToolCallSpec

__all__ = [
    "CALL_KEYS",
    "LLM_KEYS",
    "RULE_KEYS",
    "LLMSettings",
    "merge_llm_settings",
    "parse_llm_settings",
    "parse_rule",
    "parse_rules",
]

RULE_KEYS: tuple[str, ...] = ("when", "say", "call", "then")
"""Keys of one rule table."""

CALL_KEYS: tuple[str, ...] = ("tool", "arguments")
"""Keys of one tool call table of a rule's ``call``."""

LLM_KEYS: tuple[str, ...] = ("rules", "default_reply", "greeting", "time_to_first_token")
"""Keys of an ``llm`` table."""


@dataclass(frozen=True)
class LLMSettings:
    """What the offline LLM does, from one ``llm`` table (or merged layers of them).

    ``None`` means "not set here", so a less specific layer (call type, run-wide) or the
    :class:`~pytest_livekit.offline.llm.ScriptedLLM` default applies.

    Attributes:
        rules: Tried in order; the first match wins.
        default_reply: Said when no rule matches.
        greeting: Said when the agent speaks before the caller has said anything.
        time_to_first_token: Simulated model latency in seconds.
    """

    rules: tuple[Rule, ...] = ()
    default_reply: str | None = None
    greeting: str | None = None
    time_to_first_token: float | None = None

    def build_llm(self) -> ScriptedLLM:
        """The scripted LLM these settings describe.

        Returns:
            A new :class:`~pytest_livekit.offline.llm.ScriptedLLM` (one per call: it records
            the requests it answered).
        """
        from pytest_livekit.offline.llm import DEFAULT_FALLBACK, ScriptedLLM

        return ScriptedLLM(
            self.rules,
            fallback=self.default_reply or DEFAULT_FALLBACK,
            greeting=self.greeting,
            time_to_first_token=self.time_to_first_token or 0.0,
        )


def merge_llm_settings(*layers: LLMSettings | None) -> LLMSettings:
    """Combine layers of settings, the most specific first (test, call type, run-wide).

    Rules are concatenated in that order, so a test's rule wins over a call type's for the same
    words; each other setting comes from the most specific layer that sets it.

    Args:
        *layers: The layers; ``None`` items are skipped.

    Returns:
        The combined settings.
    """
    present = [layer for layer in layers if layer is not None]

    def first(name: str) -> Any:
        return next((getattr(layer, name) for layer in present if getattr(layer, name) is not None), None)

    return LLMSettings(
        rules=tuple(rule for layer in present for rule in layer.rules),
        default_reply=first("default_reply"),
        greeting=first("greeting"),
        time_to_first_token=first("time_to_first_token"),
    )


def parse_llm_settings(table: Any, where: str) -> LLMSettings:
    """Parse an ``llm`` table (pyproject.toml or a marker's dict).

    Args:
        table: The table: ``rules``, ``default_reply``, ``greeting``, ``time_to_first_token``
            (all optional).
        where: Its location for messages, e.g. ``"tool.pytest_livekit.call_types.refund.llm"``.

    Returns:
        The settings.

    Raises:
        ConfigError: Naming the key and what is wrong with it.
    """
    if isinstance(table, LLMSettings):
        return table
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table with keys {', '.join(LLM_KEYS)}, got {_kind(table)}.")
    _reject_unknown(table, LLM_KEYS, where)
    rules = parse_rules(table["rules"], f"{where}.rules") if "rules" in table else ()
    ttft = table.get("time_to_first_token")
    if ttft is not None and (
        isinstance(ttft, bool) or not isinstance(ttft, int | float) or not math.isfinite(ttft) or ttft < 0
    ):
        raise ConfigError(f"{where}.time_to_first_token must be a number of seconds >= 0, got {ttft!r}.")
    return LLMSettings(
        rules=rules,
        default_reply=_text(table, "default_reply", where),
        greeting=_text(table, "greeting", where),
        time_to_first_token=float(ttft) if ttft is not None else None,
    )


def parse_rules(data: Any, where: str) -> tuple[Rule, ...]:
    """Parse a list of rules: rule tables and/or :class:`Rule` objects.

    Args:
        data: The list (``[[...rules]]`` in TOML, a list in a marker).
        where: Its location for messages, e.g. ``"tool.pytest_livekit.llm.rules"``; the items
            are ``where[0]``, ``where[1]``, ...

    Returns:
        The rules, in order.

    Raises:
        ConfigError: Naming the rule and key and what is wrong with it.
    """
    if isinstance(data, str | bytes | Mapping) or not isinstance(data, Sequence):
        raise ConfigError(
            f"{where} must be a list of rules (in TOML: [[{where}]] tables), got {_kind(data)}."
        )
    return tuple(parse_rule(item, f"{where}[{i}]") for i, item in enumerate(data))


def parse_rule(data: Any, where: str) -> Rule:
    """Parse one rule table (``when``, ``say``, ``call``, ``then``); a :class:`Rule` passes as is.

    Args:
        data: The table or rule.
        where: Its location for messages.

    Returns:
        The rule, with ``source=where``.

    Raises:
        ConfigError: Naming the key and what is wrong with it.
    """
    from pytest_livekit.offline.llm import Rule, RuleTemplateError

    if isinstance(data, Rule):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where} must be a rule table with keys {', '.join(RULE_KEYS)} (or a Rule), got {_kind(data)}."
        )
    when = data.get("when")
    # Naming the rule by its pattern finds it in a long list faster than an index does.
    here = f"{where} (when = {when!r})" if isinstance(when, str) and when else where
    _reject_unknown(data, RULE_KEYS, here)
    if "when" not in data:
        raise ConfigError(f"{here}: 'when' is missing (a regular expression for what the caller says).")
    if not isinstance(when, str) or not when.strip():
        raise ConfigError(f"{here}: 'when' must be a non-empty regular expression, got {when!r}.")
    try:
        re.compile(when, re.IGNORECASE)
    except re.error as e:
        raise ConfigError(f"{here}: 'when' is not a valid regular expression: {e}.") from None
    say = _text(data, "say", here)
    then = _text(data, "then", here)
    calls = _parse_calls(data["call"], f"{here}.call") if "call" in data else ()
    if not say and not calls:
        raise ConfigError(f"{here}: needs 'say', 'call' or both.")
    if then is not None and not calls:
        raise ConfigError(f"{here}: 'then' is said after the tools return, so it needs 'call'.")
    try:
        return Rule(when, reply=say, tools=calls, after_tools=then, source=where)
    except RuleTemplateError as e:
        raise ConfigError(f"{here}{_template_location(e.part)}: {e.detail}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{here}: {e}") from None


def _parse_calls(data: Any, where: str) -> tuple[ToolCallSpec, ...]:
    """Parse a rule's ``call``: a list of ``{tool, arguments}`` tables, one table, or a tool name."""
    from pytest_livekit.offline.llm import ToolCallSpec

    if isinstance(data, str | Mapping):
        items: Sequence[Any] = [data]
        places = [where]
    elif isinstance(data, Sequence) and not isinstance(data, bytes):
        items = data
        places = [f"{where}[{i}]" for i in range(len(data))]
    else:
        raise ConfigError(
            f"{where} must be a list of {{ tool = ..., arguments = {{...}} }} tables, got {_kind(data)}."
        )
    if not items:
        raise ConfigError(f"{where} is empty; leave 'call' out for a rule that only speaks.")
    calls: list[ToolCallSpec] = []
    for item, place in zip(items, places, strict=True):
        if isinstance(item, ToolCallSpec):
            calls.append(item)
            continue
        if isinstance(item, str):
            item = {"tool": item}
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{place} must be a table {{ tool = ..., arguments = {{...}} }}, got {_kind(item)}."
            )
        unknown = sorted(str(k) for k in item if k not in CALL_KEYS)
        if unknown:
            raise ConfigError(
                f"{place}: unknown key {unknown[0]!r}; valid keys: {', '.join(CALL_KEYS)} "
                "(the tool's own arguments go under 'arguments')."
            )
        name = item.get("tool")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{place}: 'tool' must be the name of one of the agent's tools, got {name!r}.")
        arguments = item.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise ConfigError(
                f"{place}.arguments must be a table of the tool's arguments, got {_kind(arguments)}."
            )
        try:
            calls.append(ToolCallSpec(name, dict(arguments)))
        except ValueError as e:
            raise ConfigError(f"{place}.arguments: {e}") from None
    return tuple(calls)


def _template_location(part: Sequence[str | int]) -> str:
    """The declarative key of a template error's ``part`` (``say``, ``then``, ``call[0]...``)."""
    if not part:
        return ""
    if part[0] == "reply":
        return ".say"
    if part[0] == "after_tools":
        return ".then"
    location = f".call[{part[1]}].arguments" if len(part) > 1 else ".call"
    for step in part[2:]:
        location += f"[{step}]" if isinstance(step, int) else f".{step}"
    return location


def _reject_unknown(table: Mapping[Any, Any], valid: Sequence[str], where: str) -> None:
    """Raise for the first key of ``table`` that is not in ``valid``, listing the valid ones."""
    unknown = sorted(str(k) for k in table if k not in valid)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}.")


def _text(table: Mapping[str, Any], key: str, where: str) -> str | None:
    """``table[key]`` as non-empty text, or ``None`` if absent."""
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be non-empty text, got {value!r}.")
    return value


def _kind(value: Any) -> str:
    """How a wrong value is described: its type and a short repr."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(value).__name__} {shown}"
