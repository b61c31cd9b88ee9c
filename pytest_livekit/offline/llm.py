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
    ...             r"refund .*order (?P<order_id>[a-z ]+)",
    ...             reply="Let me look that order up.",
    ...             tools=(Rule.tool("lookup_order", order_id="{order_id:digits}"),),
    ...             after_tools="Order {order_id:digits}: {output}",
    ...         ),
    ...         Rule(r"\bhuman\b", reply="Transferring you now."),
    ...     ],
    ...     greeting="Hello, how can I help?",
    ...     fallback="Okay.",
    ... )

Templates
---------
Tool argument strings, ``reply`` and ``after_tools`` may contain placeholders:

* ``{name}``: the named group ``name`` of the rule's pattern, as the caller said it (surrounding
  whitespace trimmed; a group that took no part in the match is empty).
* ``{name:converter}``: the group passed through a converter (:data:`CONVERTERS`):
  ``digits`` (spoken digits to digits: "one two three four" -> "1234"; also "oh", "zero",
  "double three", "twenty four", "one hundred five"), ``int`` and ``number`` (the spoken
  number as a JSON integer / number), ``lower``, ``upper``, ``title``.
* ``{output}`` / ``{outputs}`` in ``after_tools``: the last tool output / all outputs of the
  round joined by spaces.
* ``{{`` and ``}}`` are literal ``{`` and ``}``; write ``{{order_id}}`` for the literal text
  ``{order_id}``. Other braces (``{"a": 1}``, ``{ x }``) are literal as they are.

In tool arguments a placeholder must name a group of the pattern (checked when the rule is
built). An argument value that is exactly one placeholder takes the type the tool's schema
wants: ``"{count:int}"`` is sent as ``3`` to an ``int`` parameter and as ``"3"`` to a ``str``
one; ``"{order_id:digits}"`` is sent as ``1234`` to an ``int`` parameter. In replies an unknown
``{name}`` is left as it is (a reply may legitimately contain braces).

Tool calls are checked against the agent's real function-tool schemas (:func:`check_rules`
up front, or each time a rule fires): a mismatch raises :class:`ToolSchemaError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    llm,
    utils,
)
from livekit.agents.llm.utils import build_legacy_openai_schema
from livekit.agents.types import NOT_GIVEN, NotGivenOr

__all__ = [
    "CONVERTERS",
    "DEFAULT_AFTER_TOOLS",
    "DEFAULT_FALLBACK",
    "Rule",
    "RuleTemplateError",
    "ScriptedLLM",
    "ScriptedLLMStream",
    "ToolCallSpec",
    "ToolSchemaError",
    "check_rules",
    "function_tools",
    "spoken_digits",
    "tool",
    "tool_parameters_schema",
]

DEFAULT_FALLBACK = "Sorry, I did not catch that. Could you repeat?"
"""What :class:`ScriptedLLM` says when no rule matches."""

DEFAULT_AFTER_TOOLS = "Done."
"""What :class:`ScriptedLLM` says after tools ran, when the rule has no ``after_tools``."""

_RESERVED_NAMES = ("output", "outputs")
"""Placeholders ``after_tools`` fills with tool outputs, so no pattern group may use them."""


class RuleTemplateError(ValueError):
    """A placeholder of a :class:`Rule` is invalid, or the caller's words do not convert.

    Raised when the rule is built (unknown group or converter) or when it fires (e.g.
    ``{order_id:digits}`` but the caller said no digits).

    Attributes:
        part: Where in the rule: ``("reply",)``, ``("after_tools",)`` or
            ``("tools", i, argument, ...)`` (the path into the i-th tool call's arguments).
        detail: The message without the rule prefix, for callers that add their own location
            (e.g. a pyproject.toml key).
    """

    def __init__(self, message: str, *, part: tuple[str | int, ...] = (), detail: str = "") -> None:
        super().__init__(message)
        self.part = part
        self.detail = detail or message


class ToolSchemaError(ValueError):
    """A :class:`Rule`'s tool call does not fit the agent's tools.

    The tool is not offered, or its arguments break the tool's JSON schema: a required
    argument is missing, an argument is unknown, or a value has the wrong JSON type or is not
    one of the allowed values. The message names the rule, the tool, the argument and shows
    the tool's parameter schema as compact JSON.

    Attributes:
        pattern: The rule's pattern.
        tool: The tool called (the first unknown one, for an unknown-tool error).
        argument: Path of the offending argument (``"order_id"``, ``"items[0].sku"``), or
            ``None`` when the tool itself is unknown.
        schema: The tool's parameter schema as livekit sends it to a provider, or ``None``.
        offered: Names of the function tools the agent offers.
    """

    def __init__(
        self,
        message: str,
        *,
        pattern: str,
        tool: str,
        argument: str | None = None,
        schema: Mapping[str, Any] | None = None,
        offered: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.pattern = pattern
        self.tool = tool
        self.argument = argument
        self.schema = schema
        self.offered = tuple(offered)


# -- spoken numbers ------------------------------------------------------------------------------
_UNITS = {
    "zero": 0,
    "oh": 0,
    "nought": 0,
    "naught": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_SCALES = {"thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
_REPEATS = {"double": 2, "triple": 3}
_NUMBER_WORDS = {*_UNITS, *_TEENS, *_TENS}


def _number_tokens(text: str) -> list[str]:
    """Lower-case words and digit runs; hyphens, commas and other punctuation separate them."""
    return re.findall(r"\d+(?:\.\d+)?|[a-z]+", text.lower())


def _cardinal(tokens: Sequence[str], start: int) -> tuple[str, int]:
    """Read one spoken cardinal number ("twenty four", "one hundred and five") at ``start``.

    A number ends where its words stop composing ("one two" is two numbers, "nineteen eighty
    four" is 19 then 84), which is how people read out ids digit by digit or in pairs.

    Returns:
        ``(digits, next_index)``; ``("", start)`` if no number starts there.
    """
    total = 0
    current = 0
    state = "start"
    j = start
    while j < len(tokens):
        word = tokens[j]
        following = tokens[j + 1] if j + 1 < len(tokens) else ""
        if word == "a" and state == "start" and (following == "hundred" or following in _SCALES):
            current, state = 1, "unit"
        elif word in _UNITS and state in ("start", "tens", "hundred", "scale"):
            current, state = current + _UNITS[word], "unit"
        elif word in _TEENS and state in ("start", "hundred", "scale"):
            current, state = current + _TEENS[word], "teen"
        elif word in _TENS and state in ("start", "hundred", "scale"):
            current, state = current + _TENS[word], "tens"
        elif word == "hundred" and state in ("unit", "teen"):
            current, state = current * 100, "hundred"
        elif word in _SCALES and state in ("unit", "teen", "tens", "hundred"):
            total, current, state = total + current * _SCALES[word], 0, "scale"
        elif word == "and" and state in ("hundred", "scale") and following in _NUMBER_WORDS:
            pass  # "one hundred and five"
        else:
            break
        j += 1
    if j == start:
        return "", start
    return str(total + current), j


def _digit_segments(tokens: Sequence[str]) -> list[str]:
    """The numbers in ``tokens``, each as digits (decimals kept); other words are skipped."""
    segments: list[str] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word[0].isdigit():
            segments.append(word)
            i += 1
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word in _REPEATS and (following in _UNITS or (following.isdigit() and len(following) == 1)):
            digit = str(_UNITS[following]) if following in _UNITS else following
            segments.append(digit * _REPEATS[word])
            i += 2
            continue
        number, j = _cardinal(tokens, i)
        if j == i:
            i += 1  # not a number word: "please", "order", an STT filler
        else:
            segments.append(number)
            i = j
    return segments


def spoken_digits(text: str) -> str:
    """The digits a caller read out, in order.

    Digit words and digits are kept, other words are skipped (as a model extracting an id
    would): ``"one two three four please"`` -> ``"1234"``, ``"oh seven"`` -> ``"07"``,
    ``"double three five"`` -> ``"335"``, ``"twelve thirty four"`` -> ``"1234"``,
    ``"one hundred and five"`` -> ``"105"``, ``"12-34"`` -> ``"1234"``.

    Args:
        text: What the caller said (e.g. an STT transcript).

    Returns:
        The digits, possibly empty.
    """
    return "".join(_digit_segments(_number_tokens(text))).replace(".", "")


def _spoken_number(text: str, *, integer: bool) -> int | float:
    """A spoken number as a JSON integer or number ("minus three point five" -> -3.5).

    Raises:
        ValueError: If there is no number in ``text`` (or a fraction when ``integer``).
    """
    tokens = _number_tokens(text)
    sign = 1
    if tokens and tokens[0] in ("minus", "negative"):
        sign, tokens = -1, tokens[1:]
    elif re.match(r"\s*-\s*\d", text):
        sign = -1
    if "point" in tokens:
        at = tokens.index("point")
        whole = "".join(_digit_segments(tokens[:at]))
        fraction = "".join(_digit_segments(tokens[at + 1 :])).replace(".", "")
        digits = f"{whole or '0'}.{fraction}" if fraction else whole
    else:
        digits = "".join(_digit_segments(tokens))
    if not digits or digits.count(".") > 1:
        raise ValueError("no number in it")
    if "." in digits:
        value = float(digits)
        if integer:
            if not value.is_integer():
                raise ValueError("not a whole number")
            return sign * int(value)
        return sign * value
    return sign * int(digits)


def _convert_digits(text: str) -> str:
    digits = spoken_digits(text)
    if not digits:
        raise ValueError("no spoken digits in it")
    return digits


CONVERTERS: Mapping[str, Callable[[str], Any]] = MappingProxyType(
    {
        "digits": _convert_digits,
        "int": lambda text: _spoken_number(text, integer=True),
        "number": lambda text: _spoken_number(text, integer=False),
        "lower": str.lower,
        "upper": str.upper,
        "title": str.title,
    }
)
"""Converters usable as ``{group:converter}`` in templates, by name."""


# -- templates -----------------------------------------------------------------------------------
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_][A-Za-z0-9_]*))?\}")


@dataclass(frozen=True)
class _Placeholder:
    """``{name}`` or ``{name:converter}`` in a template."""

    name: str
    converter: str | None
    source: str


@dataclass(frozen=True)
class _Template:
    """A string with placeholders, parsed once when the rule is built."""

    source: str
    tokens: tuple[str | _Placeholder, ...]

    @property
    def single(self) -> bool:
        """Whether the template is exactly one placeholder (its value keeps its type)."""
        return len(self.tokens) == 1 and isinstance(self.tokens[0], _Placeholder)

    def render(self, values: Mapping[str, str]) -> Any:
        """Fill the placeholders from ``values``.

        Returns:
            The converted value for a single placeholder (``int`` for ``{n:int}``), else text.

        Raises:
            ValueError: If a converter cannot read its value (message: what failed).
        """
        parts: list[Any] = []
        for token in self.tokens:
            if isinstance(token, str):
                parts.append(token)
                continue
            raw = values.get(token.name, "").strip()
            if token.converter is None:
                parts.append(raw)
                continue
            try:
                parts.append(CONVERTERS[token.converter](raw))
            except ValueError as e:
                raise ValueError(f"{token.source} cannot convert {raw!r}: {e}") from None
        if self.single:
            return parts[0]
        return "".join(str(p) for p in parts)


def _parse_template(text: str, names: Iterable[str], *, strict: bool) -> _Template | str:
    """Parse ``text``; a text without placeholders comes back as a plain (unescaped) string.

    Args:
        text: The template.
        names: The placeholder names available.
        strict: Tool arguments: every ``{name}`` must be a known name. Replies: an unknown
            ``{name}`` is literal text, but ``{name:converter}`` must still be valid.

    Raises:
        ValueError: An unknown placeholder name or converter (the message says which).
    """
    known = set(names)
    tokens: list[str | _Placeholder] = []
    literal: list[str] = []
    position = 0
    for m in _TEMPLATE_TOKEN.finditer(text):
        literal.append(text[position : m.start()])
        position = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        name, converter = m.group(1), m.group(2)
        if converter is not None and converter not in CONVERTERS:
            raise ValueError(
                f"unknown converter {converter!r} in {token!r}; converters: {', '.join(CONVERTERS)}"
            )
        if name not in known:
            if strict or converter is not None:
                available = ", ".join(sorted(known)) or "none (add a named group: (?P<name>...))"
                raise ValueError(
                    f"{token!r} names no group of the pattern; groups: {available} "
                    "(write {{ and }} for literal braces)"
                )
            literal.append(token)  # a reply may contain "{something}" as plain text
            continue
        if "".join(literal):
            tokens.append("".join(literal))
        literal = []
        tokens.append(_Placeholder(name, converter, token))
    literal.append(text[position:])
    if "".join(literal):
        tokens.append("".join(literal))
    if not any(isinstance(t, _Placeholder) for t in tokens):
        return "".join(t for t in tokens if isinstance(t, str))
    return _Template(text, tuple(tokens))


def _parse_arguments(value: Any, names: Iterable[str], path: tuple[str | int, ...]) -> Any:
    """Parse the string leaves of a tool call's arguments into templates.

    Raises:
        RuleTemplateError: Without the rule prefix (the caller adds it); ``part`` is the path.
    """
    if isinstance(value, str):
        try:
            return _parse_template(value, names, strict=True)
        except ValueError as e:
            raise RuleTemplateError(
                f"argument {_format_path(path[2:])}: {e}", part=path, detail=str(e)
            ) from None
    if isinstance(value, Mapping):
        return {k: _parse_arguments(v, names, (*path, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_parse_arguments(v, names, (*path, i)) for i, v in enumerate(value)]
    return value


def _format_path(path: Sequence[str | int]) -> str:
    """``("items", 0, "sku")`` -> ``"items[0].sku"``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


# -- tool calls and rules ------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call a :class:`Rule` makes: the tool's name and its JSON-serialisable arguments.

    String values may be templates (see the module docstring), filled when the rule fires.

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
        **arguments: The call's arguments; must be JSON-serialisable. String values may be
            templates such as ``"{order_id:digits}"``.

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
            Its named groups (``(?P<order_id>...)``) feed the templates.
        reply: Said when the rule fires (before the tool calls, if any); may use the groups.
        tools: Tool calls made when the rule fires; livekit runs them against the agent.
            Argument strings may be templates, filled from the groups.
        after_tools: Said once the tools have returned. ``{output}`` (the last tool's output),
            ``{outputs}`` (all outputs of that round, joined by spaces) and the groups are
            substituted; other braces are left alone.
        source: Where the rule was declared (e.g. a pyproject.toml key), shown in errors.
    """

    pattern: str
    reply: str | None = None
    tools: tuple[ToolCallSpec, ...] = ()
    after_tools: str | None = None
    source: str = field(default="", compare=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _reply_template: _Template | str | None = field(init=False, repr=False, compare=False)
    _after_template: _Template | str | None = field(init=False, repr=False, compare=False)
    _argument_templates: tuple[dict[str, Any], ...] = field(init=False, repr=False, compare=False)

    tool = staticmethod(tool)

    def __post_init__(self) -> None:
        """Compile the pattern, parse the templates and check the rule makes sense.

        Raises:
            ValueError: If the pattern is not a valid regex, the rule would say and do
                nothing, or ``after_tools`` is given without tools.
            RuleTemplateError: If a placeholder names no group of the pattern or an unknown
                converter (a :class:`ValueError`).
            TypeError: If an item of ``tools`` is not a :class:`ToolCallSpec`.
        """
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except (re.error, TypeError) as e:
            raise ValueError(f"invalid regular expression in Rule(pattern={self.pattern!r}): {e}") from e
        object.__setattr__(self, "_regex", compiled)
        reserved = sorted(set(compiled.groupindex) & set(_RESERVED_NAMES))
        if reserved:
            raise ValueError(
                f"{self.label}: group names {', '.join(_RESERVED_NAMES)} are reserved for tool "
                f"outputs; rename {reserved}"
            )
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

        groups = list(compiled.groupindex)
        arguments: list[dict[str, Any]] = []
        for i, spec in enumerate(tools):
            try:
                arguments.append(_parse_arguments(dict(spec.arguments), groups, ("tools", i)))
            except RuleTemplateError as e:
                raise RuleTemplateError(
                    f"{self.label}, tool {spec.name!r}: {e}", part=e.part, detail=e.detail
                ) from None
        object.__setattr__(self, "_argument_templates", tuple(arguments))
        object.__setattr__(self, "_reply_template", self._parse_text(self.reply, "reply", groups))
        object.__setattr__(
            self,
            "_after_template",
            self._parse_text(self.after_tools, "after_tools", [*groups, *_RESERVED_NAMES]),
        )

    def _parse_text(self, text: str | None, part: str, names: Sequence[str]) -> _Template | str | None:
        """Parse ``reply`` or ``after_tools`` (lenient about unknown ``{names}``)."""
        if text is None:
            return None
        try:
            return _parse_template(text, names, strict=False)
        except ValueError as e:
            raise RuleTemplateError(f"{self.label}: {part}: {e}", part=(part,), detail=str(e)) from None

    @property
    def label(self) -> str:
        """How errors name the rule: ``Rule(pattern='...')``, plus where it was declared."""
        where = f" from {self.source}" if self.source else ""
        return f"Rule(pattern={self.pattern!r}){where}"

    def to_dict(self) -> dict[str, Any]:
        """The rule in the declarative form of :mod:`pytest_livekit.agent.llm_rules` (JSON-serialisable).

        ``parse_rule(rule.to_dict(), where)`` gives an equal rule, e.g. in an agent worker
        process that receives the rules as JSON.

        Returns:
            ``{"when": ..., "say": ..., "call": [{"tool": ..., "arguments": {...}}], "then": ...}``,
            without the keys the rule does not use.
        """
        data: dict[str, Any] = {"when": self.pattern}
        if self.reply is not None:
            data["say"] = self.reply
        if self.tools:
            # A JSON round trip turns the read-only mappings (and any tuples) into plain JSON.
            data["call"] = [
                {"tool": spec.name, "arguments": json.loads(spec.arguments_json())} for spec in self.tools
            ]
        if self.after_tools is not None:
            data["then"] = self.after_tools
        return data

    @property
    def group_names(self) -> tuple[str, ...]:
        """The named groups of :attr:`pattern`, usable as placeholders."""
        return tuple(self._regex.groupindex)

    def matches(self, text: str) -> bool:
        """Whether the rule fires for a user message.

        Args:
            text: The user's message.

        Returns:
            True if :attr:`pattern` is found anywhere in ``text`` (case-insensitive).
        """
        return self._regex.search(text) is not None

    def groups(self, text: str) -> dict[str, str] | None:
        """The named groups the pattern captures in a user message.

        Args:
            text: The user's message.

        Returns:
            Group name to captured text (``""`` for a group that took no part), or ``None``
            if the rule does not match.
        """
        m = self._regex.search(text)
        if m is None:
            return None
        return {name: value or "" for name, value in m.groupdict().items()}

    def _render(
        self, template: _Template | str | None, values: Mapping[str, str], part: str, text: str
    ) -> str | None:
        """Fill a reply template."""
        if template is None or isinstance(template, str):
            return template
        try:
            return str(template.render(values))
        except ValueError as e:
            raise RuleTemplateError(
                f"{self.label}: {part}: {e} (the caller said {text!r})", part=(part,), detail=f"{part}: {e}"
            ) from None

    def render_reply(self, text: str) -> str | None:
        """What the rule says before its tools, for a user message it matches.

        Args:
            text: The user's message.

        Returns:
            :attr:`reply` with the groups filled in, or ``None`` if there is none.

        Raises:
            RuleTemplateError: If a converter cannot read what the caller said.
        """
        return self._render(self._reply_template, self.groups(text) or {}, "reply", text)

    def render_tool_calls(
        self, text: str, tools: Sequence[llm.Tool | llm.Toolset] | None = None
    ) -> tuple[ToolCallSpec, ...]:
        """The rule's tool calls for a user message, with the templates filled in.

        Args:
            text: The user's message (the rule must match it).
            tools: The tools the agent offers. When given, each call is checked against its
                tool's schema and single-placeholder values take the type the schema wants;
                a required argument that may be null and is not given is sent as null, as a
                strict-mode model would. ``None`` skips the checks.

        Returns:
            The calls, ready to send.

        Raises:
            ValueError: If the rule does not match ``text``.
            RuleTemplateError: If a converter cannot read what the caller said.
            ToolSchemaError: If a call does not fit the agent's tools.
        """
        values = self.groups(text)
        if values is None:
            raise ValueError(f"{self.label} does not match {text!r}")
        offered = function_tools(tools) if tools is not None else None
        if offered is not None:
            self._check_tools_offered(offered)
        calls: list[ToolCallSpec] = []
        for i, (spec, template) in enumerate(zip(self.tools, self._argument_templates, strict=True)):
            fn = offered.get(spec.name) if offered is not None else None
            schema = tool_parameters_schema(fn) if fn is not None else None
            try:
                arguments = _render_node(template, values, schema, schema or {})
            except ValueError as e:
                raise RuleTemplateError(
                    f"{self.label}, tool {spec.name!r}: {e} (the caller said {text!r})",
                    part=("tools", i),
                    detail=str(e),
                ) from None
            if schema is not None:
                _fill_nullable(arguments, schema)
                problem = _check(arguments, schema, schema, ())
                if problem is not None:
                    raise self._schema_error(
                        spec.name, problem, schema, offered or {}, said=f" The caller said {text!r}."
                    )
            calls.append(ToolCallSpec(spec.name, arguments))
        return tuple(calls)

    def render_after_tools(self, outputs: Sequence[str], text: str | None = None) -> str:
        """The text to say after this rule's tools returned ``outputs``.

        Args:
            outputs: The tool outputs, in call order.
            text: The user's message, to fill the pattern's groups (optional).

        Returns:
            :attr:`after_tools` with placeholders filled, or :data:`DEFAULT_AFTER_TOOLS`.

        Raises:
            RuleTemplateError: If a converter cannot read what the caller said.
        """
        if self.after_tools is None:
            return DEFAULT_AFTER_TOOLS
        values = dict(self.groups(text) or {}) if text is not None else {}
        values["output"] = outputs[-1] if outputs else ""
        values["outputs"] = " ".join(outputs)
        return self._render(self._after_template, values, "after_tools", text or "") or ""

    def check_tools(
        self, tools: Sequence[llm.Tool | llm.Toolset], *, allow_unknown_tools: bool = False
    ) -> None:
        """Check the rule's tool calls against the agent's tools, before any call happens.

        Checks that each tool is offered and that the arguments fit its schema: required
        arguments present, no unknown ones, literal values of the right JSON type (and enum),
        placeholders only where text or a number can go. What the caller will say is not
        known yet, so placeholder values are checked again when the rule fires.

        Args:
            tools: The agent's tools (``agent.tools``); tool sets are looked into.
            allow_unknown_tools: Skip calls of tools not in ``tools`` (e.g. a tool of another
                agent the conversation hands off to); the offered ones are still checked.

        Raises:
            ToolSchemaError: On the first mismatch.
        """
        offered = function_tools(tools)
        if not allow_unknown_tools:
            self._check_tools_offered(offered)
        for spec, template in zip(self.tools, self._argument_templates, strict=True):
            fn = offered.get(spec.name)
            schema = tool_parameters_schema(fn) if fn is not None else None
            if schema is None:
                continue
            problem = _check(template, schema, schema, ())
            if problem is not None:
                raise self._schema_error(spec.name, problem, schema, offered)

    def _check_tools_offered(self, offered: Mapping[str, Any]) -> None:
        """Raise :class:`ToolSchemaError` if the rule calls a tool that is not offered."""
        missing = [spec.name for spec in self.tools if spec.name not in offered]
        if missing:
            # "calls [...], but the agent only offers [...]" is matched by existing tests.
            raise ToolSchemaError(
                f"{self.label} calls {missing}, but the agent only offers {sorted(offered)}",
                pattern=self.pattern,
                tool=missing[0],
                offered=sorted(offered),
            )

    def _schema_error(
        self,
        tool_name: str,
        problem: _Problem,
        schema: Mapping[str, Any],
        offered: Mapping[str, Any],
        said: str = "",
    ) -> ToolSchemaError:
        """Build the error for ``problem`` in a call of ``tool_name``."""
        path = _format_path(problem.path)
        if problem.kind == "missing":
            noun = "argument" if len(problem.path) == 1 else "field"
            what = f"without its required {noun} {path!r}"
        elif problem.kind == "unknown":
            accepted = ", ".join(problem.accepted) or "none"
            if len(problem.path) == 1:
                what = f"with argument {path!r}, which {tool_name} does not take (its arguments: {accepted})"
            else:
                what = f"with {path!r}, which is not a field there (fields: {accepted})"
        else:
            what = f"with {path}={_show(problem.value)}, but {path} must be {problem.expected}"
        compact = json.dumps(_compact_schema(schema), separators=(",", ":"))
        return ToolSchemaError(
            f"{self.label} calls {tool_name} {what}.{said} Parameters of {tool_name}: {compact}",
            pattern=self.pattern,
            tool=tool_name,
            argument=path,
            schema=schema,
            offered=sorted(offered),
        )


# -- tool schemas --------------------------------------------------------------------------------
def function_tools(
    tools: Iterable[llm.Tool | llm.Toolset],
) -> dict[str, llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]]:
    """The function tools in ``tools`` by name, looking into tool sets.

    Provider tools (built-in tools of a cloud model) are left out: a rule cannot call them.

    Args:
        tools: What the agent offers (``agent.tools``, or the ``tools`` of an LLM request).

    Returns:
        Name to tool; the first of two tools with one name wins.
    """
    found: dict[str, llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any]] = {}

    def add(item: Any) -> None:
        if isinstance(item, llm.FunctionTool | llm.RawFunctionTool):
            found.setdefault(item.info.name, item)
        elif isinstance(item, llm.Toolset):
            for inner in item.tools:
                add(inner)

    for item in tools:
        add(item)
    return found


def tool_parameters_schema(
    fn: llm.FunctionTool[..., Any] | llm.RawFunctionTool[..., Any],
) -> dict[str, Any] | None:
    """The JSON schema of a function tool's parameters, as livekit sends it to a provider.

    ``@function_tool`` methods get livekit's own (non-strict) OpenAI schema
    (:func:`livekit.agents.llm.utils.build_legacy_openai_schema`); raw function tools their
    declared ``parameters``.

    Args:
        fn: The tool.

    Returns:
        The schema, or ``None`` if it cannot be built (then the arguments are not checked).
    """
    if isinstance(fn, llm.RawFunctionTool):
        parameters = fn.info.raw_schema.get("parameters")
        return dict(parameters) if isinstance(parameters, Mapping) else None
    try:
        parameters = build_legacy_openai_schema(fn)["function"]["parameters"]
    except Exception:
        # An odd signature livekit cannot describe: the tool can still be called offline;
        # checking its arguments would need the schema a real provider would also choke on.
        return None
    return dict(parameters) if isinstance(parameters, Mapping) else None


def check_rules(
    rules: Iterable[Rule], tools: Sequence[llm.Tool | llm.Toolset], *, allow_unknown_tools: bool = False
) -> None:
    """Check every rule's tool calls against the agent's tools (see :meth:`Rule.check_tools`).

    Args:
        rules: The rules.
        tools: The agent's tools, e.g. ``agent.tools`` of the ``Agent`` the session starts with.
        allow_unknown_tools: Skip calls of tools that are not in ``tools``.

    Raises:
        ToolSchemaError: On the first mismatch.
    """
    for rule in rules:
        rule.check_tools(tools, allow_unknown_tools=allow_unknown_tools)


@dataclass(frozen=True)
class _Problem:
    """One way a value breaks a schema."""

    kind: Literal["missing", "unknown", "type", "enum"]
    path: tuple[str | int, ...]
    value: Any = None
    expected: str = ""
    accepted: tuple[str, ...] = ()


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _json_type(value: Any) -> str:
    """The JSON type name of a Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _type_matches(value: Any, typ: str) -> bool:
    """Whether ``value`` is an instance of the JSON type ``typ`` (an int is a number)."""
    actual = _json_type(value)
    return actual == typ or (typ == "number" and actual == "integer")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _deref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/Item``) merged in."""
    for _ in range(32):  # a self-referencing schema must not loop forever
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for step in ref[2:].split("/"):
            target = target.get(step) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            return schema
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: Any, root: Mapping[str, Any]) -> set[str] | None:
    """The JSON types a schema allows, or ``None`` if it does not constrain the type."""
    if not isinstance(schema, Mapping):
        return None
    schema = _deref(schema, root)
    typ = schema.get("type")
    if isinstance(typ, str):
        return {typ}
    if isinstance(typ, list):
        return {t for t in typ if isinstance(t, str)}
    if isinstance(schema.get("enum"), list):
        return {_json_type(v) for v in schema["enum"]}
    if "const" in schema:
        return {_json_type(schema["const"])}
    found: set[str] = set()
    constrained = False
    for key in ("anyOf", "oneOf", "allOf"):
        variants = schema.get(key)
        if not isinstance(variants, list):
            continue
        for variant in variants:
            sub = _types(variant, root)
            if sub is None and key != "allOf":
                return None
            if sub is not None:
                found |= sub
                constrained = True
    return found if constrained else None


def _allows_null(schema: Any, root: Mapping[str, Any]) -> bool:
    """Whether a schema explicitly allows ``null`` (``Optional[...]``, strict-mode defaults)."""
    types = _types(schema, root)
    return types is not None and "null" in types


def _describe(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """``"a string"``, ``"an integer or null"``, ``'one of ["low", "high"]'``."""
    schema = _deref(schema, root)
    enum = schema.get("enum")
    if isinstance(enum, list):
        return f"one of {json.dumps(enum)}"
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key)
        if isinstance(variants, list):
            return " or ".join(_describe(v, root) for v in variants if isinstance(v, Mapping))
    types = _types(schema, root)
    if not types:
        return "anything"
    order = list(_TYPE_NAMES)
    return " or ".join(_TYPE_NAMES.get(t, t) for t in sorted(types, key=lambda t: (order + [t]).index(t)))


def _check(value: Any, schema: Any, root: Mapping[str, Any], path: tuple[str | int, ...]) -> _Problem | None:
    """The first way ``value`` breaks ``schema``, or ``None``.

    ``value`` may contain templates (a rule checked before it fires): a template is accepted
    where text or a number can go; its actual value is checked when the rule fires.
    """
    if not isinstance(schema, Mapping):
        return None
    schema = _deref(schema, root)
    for key in ("anyOf", "oneOf"):
        variants = [v for v in schema.get(key) or () if isinstance(v, Mapping)]
        if variants:
            problems = [_check(value, v, root, path) for v in variants]
            if all(p is not None for p in problems):
                # A problem inside one variant (a wrong field of the object variant) says more
                # than "wrong type" for each of the others.
                deeper = [p for p in problems if p is not None and (p.path != path or p.kind != "type")]
                if len(deeper) == 1:
                    return deeper[0]
                return _Problem("type", path, value, _describe(schema, root))
    for variant in schema.get("allOf") or ():
        problem = _check(value, variant, root, path)
        if problem is not None:
            return problem

    if isinstance(value, _Template):
        types = _types(schema, root)
        fits = {"string", "integer", "number"} if value.single else {"string"}
        if types is None or types & fits:
            return None
        return _Problem("type", path, value, _describe(schema, root))

    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, e) for e in enum):
        return _Problem("enum", path, value, f"one of {json.dumps(enum)}")
    if "const" in schema and not _same(value, schema["const"]):
        return _Problem("enum", path, value, json.dumps(schema["const"]))
    typ = schema.get("type")
    allowed = [typ] if isinstance(typ, str) else [t for t in typ or () if isinstance(t, str)]
    if allowed and not any(_type_matches(value, t) for t in allowed):
        return _Problem("type", path, value, _describe(schema, root))

    if isinstance(value, Mapping):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        props = properties if isinstance(properties, Mapping) else None
        # Unknown before missing: a misspelt argument is reported by its own name.
        for key, item in value.items():
            if props is not None and key in props:
                sub: Any = props[key]
            elif isinstance(extra, Mapping):
                sub = extra
            elif props is not None and extra is not True:
                return _Problem("unknown", (*path, key), accepted=tuple(props))
            else:
                continue
            problem = _check(item, sub, root, (*path, key))
            if problem is not None:
                return problem
        for name in schema.get("required") or ():
            if name not in value and not _allows_null((props or {}).get(name), root):
                return _Problem("missing", (*path, name))
    elif isinstance(value, list):
        items = schema.get("items")
        for i, item in enumerate(value):
            problem = _check(item, items, root, (*path, i))
            if problem is not None:
                return problem
    return None


def _sub_schema(schema: Any, key: str | int, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of ``value[key]`` inside a value of ``schema`` (a property or an item)."""
    if not isinstance(schema, Mapping):
        return None
    schema = _deref(schema, root)
    if isinstance(key, str):
        properties = schema.get("properties")
        if isinstance(properties, Mapping) and isinstance(properties.get(key), Mapping):
            return properties[key]  # type: ignore[no-any-return]
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return extra
    else:
        items = schema.get("items")
        if isinstance(items, Mapping):
            return items
    for variant_key in ("anyOf", "oneOf", "allOf"):
        for variant in schema.get(variant_key) or ():
            found = _sub_schema(variant, key, root)
            if found is not None:
                return found
    return None


def _coerce(value: Any, types: set[str] | None) -> Any:
    """A single-placeholder value in the JSON type the schema wants, where it converts cleanly.

    ``"1234"`` (from ``{id:digits}``) becomes ``1234`` for an integer, ``3`` (from ``{n:int}``)
    becomes ``"3"`` for a string. What does not convert stays and fails the schema check.
    """
    if types is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if types & {"integer", "number"}:
            return value
        if "string" in types:
            return str(value)
    elif isinstance(value, float):
        if "number" in types:
            return value
        if "integer" in types and value.is_integer():
            return int(value)
        if "string" in types:
            return str(value)
    elif isinstance(value, str) and "string" not in types:
        if types & {"integer", "number"} and re.fullmatch(r"[+-]?\d+", value):
            return int(value)
        if "number" in types and re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)", value):
            return float(value)
    return value


def _render_node(
    node: Any,
    values: Mapping[str, str],
    schema: Any,
    root: Mapping[str, Any],
    path: tuple[str | int, ...] = (),
) -> Any:
    """Fill the templates in a parsed argument tree, shaping single placeholders by ``schema``.

    Raises:
        ValueError: If a converter cannot read its value (the message names the argument).
    """
    if isinstance(node, _Template):
        try:
            rendered = node.render(values)
        except ValueError as e:
            raise ValueError(f"argument {_format_path(path)}: {e}") from None
        return _coerce(rendered, _types(schema, root)) if node.single else rendered
    if isinstance(node, Mapping):
        return {
            k: _render_node(v, values, _sub_schema(schema, k, root), root, (*path, k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _render_node(v, values, _sub_schema(schema, i, root), root, (*path, i))
            for i, v in enumerate(node)
        ]
    return node


def _fill_nullable(arguments: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Send ``null`` for required arguments that allow it and were not given.

    A strict-mode model must send every argument and sends ``null`` for "not given"; and TOML,
    where declarative rules live, cannot write null at all.
    """
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for name in schema.get("required") or ():
        if name not in arguments and _allows_null(properties.get(name), schema):
            arguments[name] = None


def _compact_schema(schema: Any) -> Any:
    """``schema`` without titles and descriptions, which only lengthen an error message."""
    if isinstance(schema, Mapping):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in ("title", "description"):
                continue
            if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
                # Keys here are names (a parameter may be called "title"), values schemas.
                out[key] = {name: _compact_schema(sub) for name, sub in value.items()}
            else:
                out[key] = _compact_schema(value)
        return out
    if isinstance(schema, list):
        return [_compact_schema(item) for item in schema]
    return schema


def _show(value: Any) -> str:
    """A value for an error message: JSON plus its type, or the template as written."""
    if isinstance(value, _Template):
        return f"{value.source!r} (filled from the caller's words)"
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return f"{shown} ({_TYPE_NAMES.get(_json_type(value), _json_type(value))})"


# -- the LLM -------------------------------------------------------------------------------------
class ScriptedLLM(llm.LLM[Literal["metrics_collected", "error"]]):
    """A ``livekit.agents`` LLM that answers from a list of :class:`Rule` objects.

    For each request it looks at the conversation:

    * The last items are tool outputs: it says the matching rule's ``after_tools`` text (it
      never calls tools twice for one user message, so a tool loop cannot happen).
    * A user message has not been answered yet: the first rule whose pattern matches it fires;
      if none matches, it says the fallback (the default reply). With no rules at all it
      always says the fallback, which is all latency and barge-in tests need.
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
            rules: Tried in order; the first match wins. May be empty.
            fallback: The default reply: said when no rule matches (and for the greeting if
                ``greeting`` is None).
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
    def fallback(self) -> str:
        """The default reply, said when no rule matches."""
        return self._fallback

    @property
    def greeting(self) -> str | None:
        """Said before the user has spoken; ``None`` means the fallback."""
        return self._greeting

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

    def check_rules(
        self, tools: Sequence[llm.Tool | llm.Toolset], *, allow_unknown_tools: bool = False
    ) -> None:
        """Check every rule's tool calls against the agent's tools, before the call starts.

        Args:
            tools: The agent's tools (``agent.tools``).
            allow_unknown_tools: Skip calls of tools not in ``tools`` (e.g. tools of an agent
                handed off to later); they are still checked when their rule fires.

        Raises:
            ToolSchemaError: On the first mismatch.
        """
        check_rules(self._rules, tools, allow_unknown_tools=allow_unknown_tools)

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
            tools: The tools the agent offers; a rule may only call these, with arguments
                that fit their schemas.
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
            ToolSchemaError: If a rule calls a tool the agent does not offer, or with
                arguments its schema rejects; a real model could not make that call either,
                and an error here is clearer than livekit's "unknown function" tool output.
            RuleTemplateError: If a template converter cannot read what the caller said.
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
            return rule.render_after_tools([o.output for o in last_round], user_text), ()

        if any(_is_message(i, "assistant") for i in after):
            # Already answered (e.g. generate_reply() with instructions only). Re-running the
            # rule would repeat its tool calls and their side effects, so stay generic.
            return scripted._fallback, ()

        scripted.requests.append(user_text)
        rule = scripted.match(user_text)
        if rule is None:
            return scripted._fallback, ()
        calls = rule.render_tool_calls(user_text, self._tools) if self._allow_tools and rule.tools else ()
        text = rule.render_reply(user_text) or ""
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
