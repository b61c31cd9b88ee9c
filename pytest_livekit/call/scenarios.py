"""Declarative conversations: scenarios a caller plays against the agent, from a file or a table.

A scenario says what the caller wants and knows, not a fixed list of lines: a goal, facts
(name, order number, ...), answers keyed by what the agent asks, a fallback for anything else,
when to hang up, a turn budget, conditions, an optional barge-in point and a persona. The
caller answers whatever the agent asks, in whatever order it asks. Files are TOML, YAML or JSON::

    # scenarios/refund.toml
    [defaults]                              # every scenario of the file starts from these
    call_type = "verified_refund"
    goal = "get the order refunded"
    hang_up_when = "on its way"             # regex over the agent's reply: the goal is reached
    max_turns = 6                           # agent replies before the scenario gives up
    fallback = "Sorry what was that"        # said to a reply no answer matches
    expect_tools = [{ tool = "record_name", arguments = { name = "{name:lower}" } },
                    { tool = "confirm_refund" }]

    [defaults.responses]                    # regex over the agent's reply -> what to say
    "your name" = "My name is {name}"
    "order number" = "It is order {order_number}"
    "refund it" = "Yes please refund it"

    [scenario.order_number_first]           # one test id per scenario
    opening = "I want a refund for my order"
    facts = { name = "Alice Martin", order_number = "one two three four" }
    noise = { color = "white", snr_db = 20 }
    interrupt = { reply = 1, after_s = 0.8, say = "My name is {name}" }
    persona = { character = "hesitant" }

    [scenario.table]                        # one test id per row of the table
    variations = "refund_variations.csv"    # columns: id, facts, and the keys below

A variation table (CSV with a header, or JSON Lines) gives one scenario per row: ``id`` (the
test id's suffix, required and unique), ``cohort`` (the run summary groups by it), ``seed``,
``opening``, ``noise`` (a colour) with ``snr_db``, ``character``; every other column is a fact.

Lines are templates over the facts: ``{name}``, ``{order_number:digits}`` (spoken digits as
digits), ``{name:lower}``; ``{repeat}`` is the caller's previous line. Everything is checked when the file is loaded (at collection):
unknown keys, a fact a template names but no one gives, a bad regex, a bad condition.

Run one with :meth:`pytest_livekit.call.livekit_call.LivekitCall.run_scenario` (or :func:`run_scenario`);
in a suite, ``@pytest.mark.livekit(scenarios="scenarios/refund.toml")`` parametrizes a test
over them (the ``livekit_scenario`` fixture). Task completion is judged from what happened: the
goal was said, the expected tools ran with the expected arguments, the outcome matches.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_livekit.config import DEFAULT_REPLY_TIMEOUT
from pytest_livekit.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pytest_livekit.call.livekit_call import LivekitCall

__all__ = [
    "CHARACTERS",
    "ExpectedTool",
    "Interrupt",
    "Persona",
    "Response",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "ScenarioStep",
    "load_scenarios",
    "load_variations",
    "scenario_row",
]

SCENARIO_KEYS: tuple[str, ...] = (
    "call_type", "description", "goal", "facts", "opening", "responses", "fallback", "hang_up_when",
    "max_turns", "conditions", "noise", "interrupt", "persona", "expect_tools", "outcome", "judge",
    "cohort", "seed", "variations",
)
"""Keys of a scenario table (and of ``defaults``)."""

ROW_KEYS: tuple[str, ...] = ("id", "cohort", "seed", "opening", "noise", "snr_db", "character")
"""Columns of a variation table that are not facts."""

CHARACTERS: dict[str, str] = {
    "plain": "answers what is asked, once the agent has finished",
    "hesitant": "thinks before answering (1.2 s of silence) and pauses mid-sentence (0.25 s)",
    "impatient": "answers at once, and talks over an agent that repeats itself or apologises",
    "talks_over": "says 'mhm' over every longer reply of the agent",
}
"""The persona characters the offline rule engine plays, with what each does to the call."""

_CONVERTERS = ("digits", "lower", "upper")
REPEAT = "repeat"
"""The template name of the caller's previous line (``"say it again" = "{repeat}"``)."""
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}


class ScenarioError(ConfigError):
    """A scenario file, table or value is invalid; the message says where and what to fix."""


def _digits(text: str) -> str:
    """``"one two three four"`` -> ``"1234"`` (digits are kept, other words dropped)."""
    out = []
    for word in re.findall(r"[a-z]+|\d", text.lower()):
        out.append(_DIGIT_WORDS.get(word, word if word.isdigit() else ""))
    return "".join(out)


def _template_fields(template: str, where: str) -> list[tuple[str, str]]:
    """The ``(fact, converter)`` pairs a template uses.

    Raises:
        ScenarioError: a malformed template or an unknown converter.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ScenarioError(f"{where}: {template!r} is not a valid template ({exc}); write {{{{ for a brace.") from None
    fields_: list[tuple[str, str]] = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ScenarioError(f"{where}: {{{name}}} in {template!r} is not a fact name.")
        if spec and spec not in _CONVERTERS:
            raise ScenarioError(
                f"{where}: {{{name}:{spec}}} in {template!r}: unknown converter {spec!r}; "
                f"valid: {', '.join(_CONVERTERS)}."
            )
        fields_.append((name, spec or ""))
    return fields_


def render(template: str, facts: Mapping[str, str]) -> str:
    """Fill ``{fact}`` / ``{fact:digits}`` / ``{fact:lower}`` / ``{fact:upper}`` from ``facts``.

    Raises:
        KeyError: a fact the template names is not given.
    """
    out: list[str] = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        value = str(facts[name])
        if spec == "digits":
            value = _digits(value)
        elif spec == "lower":
            value = value.lower()
        elif spec == "upper":
            value = value.upper()
        out.append(value)
    return "".join(out)


@dataclass(frozen=True)
class Response:
    """What the caller says when the agent's reply matches ``when`` (regex, case-insensitive)."""

    when: str
    say: str


@dataclass(frozen=True)
class ExpectedTool:
    """A tool the agent must call for the task to count as done; ``arguments`` are templates,
    compared after rendering (case- and space-insensitively for strings); arguments not listed
    are not checked.
    """

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Interrupt:
    """Talk over the agent's ``reply``-th reply (1 = the first), ``after_s`` seconds after it
    became audible, saying ``say`` (a template), instead of waiting for it to finish.
    """

    reply: int
    after_s: float
    say: str


@dataclass(frozen=True)
class Persona:
    """Who the caller is. ``character`` is one of :data:`CHARACTERS` (what the offline rule
    engine plays); ``description`` is free text for a real LLM caller; ``llm`` names a
    ``livekit.agents`` LLM (``"module:attribute"``, an instance or a factory) that chooses the
    caller's lines when the call's providers are ``real``.
    """

    character: str = "plain"
    description: str = ""
    llm: str | None = None


@dataclass(frozen=True)
class Scenario:
    """One conversation the caller plays (see the module docstring for the keys).

    Attributes:
        name: The test id (``table-row07`` for a table row).
        call_type: The call type whose limits and SLOs apply (``None``: the test's).
        goal: What the caller wants (for people, the trace and a real LLM caller).
        facts: What the caller knows; lines are templates over them.
        opening: The caller's first line (``None``: wait for the agent's greeting).
        responses: Tried in order against each agent reply; the first match is said.
        fallback: Said to a reply no response matches (``None``: the scenario fails there).
        hang_up_when: Regex over the agent's reply: the goal was reached, the caller hangs up.
        max_turns: Agent replies to answer before giving up.
        conditions: The caller's speech conditions (:meth:`Conditions.to_dict` form) or None.
        interrupt: A barge-in point, or None.
        persona: The caller's character.
        expect_tools: Tools (with arguments) the task needs.
        outcome: The call outcome the task needs (``None``: not checked).
        judge: An intent for livekit's LLM judge (run only where a real LLM is configured).
        cohort: Label the run summary groups scenarios by.
        variation: The table row this scenario came from (``{}`` for a plain one).
        source: Where it was declared (``file.toml: scenario.name``, ``table.csv:8``).
    """

    name: str
    call_type: str | None = None
    description: str = ""
    goal: str = ""
    facts: Mapping[str, str] = field(default_factory=dict)
    opening: str | None = None
    responses: tuple[Response, ...] = ()
    fallback: str | None = None
    hang_up_when: str | None = None
    max_turns: int = 8
    conditions: Mapping[str, Any] | None = None
    interrupt: Interrupt | None = None
    persona: Persona = field(default_factory=Persona)
    expect_tools: tuple[ExpectedTool, ...] = ()
    outcome: str | None = None
    judge: str | None = None
    cohort: str = ""
    variation: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def line(self, template: str) -> str:
        """``template`` filled from the facts."""
        return render(template, self.facts)

    def caller_lines(self) -> list[str]:
        """Every line the rule-engine caller may say (for the offline STT vocabulary)."""
        lines = [self.opening] if self.opening else []
        lines += [r.say for r in self.responses]
        lines += [self.fallback] if self.fallback else []
        lines += [self.interrupt.say] if self.interrupt else []
        return [self.line(t) for t in lines if "{" + REPEAT + "}" not in t]

    def conditions_object(self) -> Any:
        """The :class:`~pytest_livekit.conditions.media.Conditions` of the caller's speech, or None."""
        if not self.conditions:
            return None
        from pytest_livekit.conditions.media import Conditions

        return Conditions.from_dict(self.conditions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (in the trace)."""
        out = dataclasses.asdict(self)
        out["facts"] = dict(self.facts)
        out["variation"] = dict(self.variation)
        return out


@dataclass(frozen=True)
class ScenarioStep:
    """One exchange: what the agent said, what the caller chose to say and why."""

    agent_said: str
    caller_said: str | None
    chosen_by: str
    """``opening``, ``response 'your name'``, ``fallback``, ``interrupt``, ``llm``, ``hang up``."""


@dataclass
class ScenarioResult:
    """How a scenario went, judged from what happened in the call.

    ``completed`` needs the goal (``hang_up_when``) to have been said, every expected tool to
    have run with its arguments, and the outcome (if any) to match.
    """

    scenario: Scenario
    steps: list[ScenarioStep] = field(default_factory=list)
    goal_reached: bool = False
    stopped: str = ""
    """Why the conversation ended: ``goal``, ``max_turns``, ``off-script``, ``stalled``, ``caller hung up``."""
    tools_matched: list[str] = field(default_factory=list)
    tools_missing: list[str] = field(default_factory=list)
    outcome: str | None = None
    outcome_ok: bool = True
    judge: dict[str, Any] | None = None
    """The LLM judge's verdict ``{"intent", "ok", "reason"}``, or ``{"skipped": why}``."""
    test_id: str = ""

    @property
    def tool_accuracy(self) -> float | None:
        """Fraction of the expected tool calls that happened with the expected arguments (None
        when the scenario expects none).
        """
        expected = len(self.tools_matched) + len(self.tools_missing)
        return len(self.tools_matched) / expected if expected else None

    @property
    def completed(self) -> bool:
        """The task was done: goal said, tools right, outcome right (and the judge, if it ran)."""
        judged = self.judge is None or "skipped" in self.judge or bool(self.judge.get("ok"))
        return self.goal_reached and not self.tools_missing and self.outcome_ok and judged

    def explain(self) -> str:
        """Why the task counts as done or not, the conversation, and how to re-run this one."""
        s = self.scenario
        head = f"scenario {s.name!r} ({s.source})" + (f", goal: {s.goal}" if s.goal else "")
        lines = [f"{head}: {'completed' if self.completed else 'NOT completed'} (ended: {self.stopped})"]
        if not self.goal_reached and s.hang_up_when:
            lines.append(f"  the agent never said {s.hang_up_when!r}")
        for missing in self.tools_missing:
            lines.append(f"  missing tool call: {missing}")
        if not self.outcome_ok:
            lines.append(f"  outcome {self.outcome!r}, expected {s.outcome!r}")
        if self.judge and "skipped" not in self.judge and not self.judge.get("ok"):
            lines.append(f"  the judge found the intent not met: {self.judge.get('reason')}")
        lines.append("  conversation:")
        for step in self.steps:
            lines.append(f"    agent: {step.agent_said!r}" if step.agent_said else "    agent: (nothing yet)")
            if step.caller_said is not None:
                lines.append(f"    caller ({step.chosen_by}): {step.caller_said!r}")
        if s.variation:
            lines.append(f"  table row: {dict(s.variation)}")
        if self.test_id:
            lines.append(f"  re-run it alone: pytest {self.test_id!r}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The trace's ``scenario`` section."""
        return {
            "name": self.scenario.name,
            "source": self.scenario.source,
            "goal": self.scenario.goal,
            "cohort": self.scenario.cohort,
            "character": self.scenario.persona.character,
            "facts": dict(self.scenario.facts),
            "variation": dict(self.scenario.variation),
            "completed": self.completed,
            "goal_reached": self.goal_reached,
            "stopped": self.stopped,
            "tool_accuracy": self.tool_accuracy,
            "tools_matched": list(self.tools_matched),
            "tools_missing": list(self.tools_missing),
            "outcome": self.outcome,
            "judge": self.judge,
            "steps": [dataclasses.asdict(step) for step in self.steps],
        }


def scenario_row(scenario: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the run summary keeps of a call's scenario (None when it played none): ``name``,
    ``cohort``, ``completed``, ``tool_accuracy`` (0-1 or None).
    """
    if not scenario or "completed" not in scenario:
        return None
    return {k: scenario.get(k) for k in ("name", "cohort", "completed", "tool_accuracy")}


# -- loading -------------------------------------------------------------------------------------


def _read_document(path: Path) -> Mapping[str, Any]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario file {path} cannot be read: {exc}") from None
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ScenarioError(f"{path}: YAML scenario files need PyYAML (pip install pyyaml), or use TOML.") from None
            data = yaml.safe_load(text)
            return data if isinstance(data, Mapping) else {}
        if suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, Mapping) else {}
    except ScenarioError:
        raise
    except Exception as exc:  # tomllib / yaml / json parse errors all say where
        raise ScenarioError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from None
    raise ScenarioError(f"{path}: scenario files are .toml, .yaml, .yml or .json, not {suffix or 'no suffix'}.")


def load_scenarios(path: str | Path, *, base: str | Path | None = None) -> list[Scenario]:
    """Every scenario of a file, with variation tables expanded (one scenario per row).

    Args:
        path: The scenario file (TOML, YAML or JSON).
        base: Folder a relative ``path`` resolves against (default: the working directory).

    Raises:
        ScenarioError: the file is missing or invalid; the message names the file and key.
    """
    file = Path(path)
    if base is not None and not file.is_absolute():
        file = Path(base) / file
    doc = _read_document(file)
    unknown = sorted(set(doc) - {"defaults", "scenario"})
    if unknown:
        raise ScenarioError(
            f"{file}: unknown top-level key {unknown[0]!r}; a scenario file has [defaults] and "
            f"[scenario.<name>] tables.{did_you_mean(unknown[0], ['defaults', 'scenario'])}"
        )
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ScenarioError(f"{file}: defaults must be a table.")
    tables = doc.get("scenario") or {}
    if not isinstance(tables, Mapping) or not tables:
        raise ScenarioError(f"{file}: no scenarios; add a [scenario.<name>] table.")
    out: list[Scenario] = []
    for name, table in tables.items():
        where = f"{file.name}: scenario.{name}"
        if not isinstance(table, Mapping):
            raise ScenarioError(f"{where} must be a table of keys ({', '.join(SCENARIO_KEYS)}).")
        merged = _merge(defaults, table)
        variations = merged.pop("variations", None)
        if variations is None:
            out.append(_build(str(name), merged, where))
            continue
        if not isinstance(variations, str):
            raise ScenarioError(f"{where}.variations must be a file name (CSV or JSON Lines).")
        table_path = Path(variations) if Path(variations).is_absolute() else file.parent / variations
        for line_no, row in load_variations(table_path):
            out.append(_build_row(str(name), merged, row, f"{table_path.name}:{line_no}"))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ScenarioError(f"{file}: scenario id {dupes[0]!r} appears twice; ids must be unique.")
    return out


def _merge(defaults: Mapping[str, Any], table: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario's keys over the file's defaults; ``facts`` and ``responses`` merge key-wise."""
    merged = dict(defaults)
    for key, value in table.items():
        if key in ("facts", "responses") and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_variations(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a variation table: ``(line number, {column: value})``, in file order.

    CSV needs a header row; JSON Lines one object per line (blank lines skipped). Every row needs
    a unique ``id`` made of letters, digits, ``-`` and ``_`` (it becomes part of a test id).

    Raises:
        ScenarioError: a missing or unreadable file, a row without ``id``, a duplicate id.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"variation table {file} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"variation table {file} cannot be read: {exc}") from None
    rows: list[tuple[int, dict[str, str]]] = []
    if file.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise ScenarioError(f"{file}: the first line must be a header with an 'id' column.")
        for row in reader:
            if None in row:
                raise ScenarioError(f"{file}:{reader.line_num}: more values than columns.")
            rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}))
    elif file.suffix.lower() in (".jsonl", ".ndjson"):
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ScenarioError(f"{file}:{n}: not a JSON object ({exc}).") from None
            if not isinstance(obj, Mapping):
                raise ScenarioError(f"{file}:{n}: each line must be a JSON object.")
            rows.append((n, {str(k): "" if v is None else str(v) for k, v in obj.items()}))
    else:
        raise ScenarioError(f"{file}: variation tables are .csv or .jsonl, not {file.suffix or 'no suffix'}.")
    if not rows:
        raise ScenarioError(f"{file}: the table has no rows.")
    seen: dict[str, int] = {}
    for n, row in rows:
        rid = row.get("id", "")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", rid):
            raise ScenarioError(f"{file}:{n}: id {rid!r} must be letters, digits, '-' or '_' (it names the test).")
        if rid in seen:
            raise ScenarioError(f"{file}:{n}: id {rid!r} is already used on line {seen[rid]}.")
        seen[rid] = n
    return rows


def _build_row(name: str, merged: Mapping[str, Any], row: Mapping[str, str], where: str) -> Scenario:
    table = dict(merged)
    facts = dict(table.get("facts") or {})
    facts.update({k: v for k, v in row.items() if k not in ROW_KEYS})
    table["facts"] = facts
    for key in ("opening", "cohort"):
        if row.get(key):
            table[key] = row[key]
    if row.get("seed"):
        try:
            table["seed"] = int(row["seed"])
        except ValueError:
            raise ScenarioError(f"{where}: seed {row['seed']!r} is not a whole number.") from None
    if row.get("noise"):
        table["noise"] = {"color": row["noise"], "snr_db": row.get("snr_db") or 20}
    if row.get("character"):
        persona = table.get("persona") or {}
        table["persona"] = {**(persona if isinstance(persona, Mapping) else {}), "character": row["character"]}
    scenario = _build(f"{name}-{row['id']}", table, where)
    return dataclasses.replace(scenario, variation=dict(row))


def _build(name: str, table: Mapping[str, Any], where: str) -> Scenario:
    """Validate one merged scenario table."""
    unknown = sorted(set(table) - set(SCENARIO_KEYS))
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SCENARIO_KEYS)}."
            + did_you_mean(unknown[0], SCENARIO_KEYS)
        )

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ScenarioError(f"{where}.{key} must be text, got {value!r}.")
        return value

    facts = table.get("facts") or {}
    if not isinstance(facts, Mapping):
        raise ScenarioError(f"{where}.facts must be a table of name = value.")
    facts = {str(k): str(v) for k, v in facts.items()}
    responses_raw = table.get("responses") or {}
    if isinstance(responses_raw, Mapping):
        pairs = list(responses_raw.items())
    elif isinstance(responses_raw, list) and all(isinstance(r, Mapping) for r in responses_raw):
        pairs = [(r.get("when"), r.get("say")) for r in responses_raw]
    else:
        raise ScenarioError(f"{where}.responses must be a table of \"pattern\" = \"line\" (or a list of {{when, say}}).")
    responses: list[Response] = []
    for pattern, line in pairs:
        if not isinstance(pattern, str) or not isinstance(line, str):
            raise ScenarioError(f"{where}.responses: {pattern!r} = {line!r}: both must be text.")
        _check_regex(pattern, f"{where}.responses")
        responses.append(Response(pattern, line))
    max_turns = table.get("max_turns", 8)
    if not isinstance(max_turns, int) or isinstance(max_turns, bool) or not 1 <= max_turns <= 100:
        raise ScenarioError(f"{where}.max_turns must be a whole number from 1 to 100, got {max_turns!r}.")
    hang_up_when = text("hang_up_when")
    if hang_up_when is not None:
        _check_regex(hang_up_when, f"{where}.hang_up_when")
    seed = table.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ScenarioError(f"{where}.seed must be a whole number >= 0, got {seed!r}.")
    conditions = _conditions(table, seed, where)
    interrupt = _interrupt(table.get("interrupt"), where)
    persona = _persona(table.get("persona"), where)
    expect_tools = _expect_tools(table.get("expect_tools"), where)
    call_type = text("call_type")
    scenario = Scenario(
        name=name, call_type=call_type, description=text("description") or "", goal=text("goal") or "",
        facts=facts, opening=text("opening"), responses=tuple(responses), fallback=text("fallback"),
        hang_up_when=hang_up_when, max_turns=max_turns, conditions=conditions, interrupt=interrupt,
        persona=persona, expect_tools=expect_tools, outcome=text("outcome"), judge=text("judge"),
        cohort=text("cohort") or "", source=where,
    )
    if not responses and persona.llm is None:
        raise ScenarioError(f"{where}: no responses: give [responses] \"pattern\" = \"line\", or a persona llm.")
    _check_facts(scenario, where)
    return scenario


def _check_regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ScenarioError(f"{where}: {pattern!r} is not a valid regular expression: {exc}.") from None


def _conditions(table: Mapping[str, Any], seed: int, where: str) -> dict[str, Any] | None:
    from pytest_livekit.conditions.media import Conditions, Noise, spec_from_dict

    items: list[Any] = []
    noise = table.get("noise")
    if noise is not None:
        if not isinstance(noise, Mapping):
            raise ScenarioError(f"{where}.noise must be a table like {{ color = \"white\", snr_db = 20 }}.")
        try:
            snr = noise.get("snr_db", 20)
            items.append(Noise(snr_db=float(snr), **{k: v for k, v in noise.items() if k != "snr_db"}))
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{where}.noise: {exc}") from None
    raw = table.get("conditions") or []
    if not isinstance(raw, list) or not all(isinstance(c, Mapping) for c in raw):
        raise ScenarioError(f"{where}.conditions must be a list of tables like {{ kind = \"noise\", snr_db = 10 }}.")
    for spec in raw:
        try:
            items.append(spec_from_dict(spec))
        except ValueError as exc:
            raise ScenarioError(f"{where}.conditions: {exc}") from None
    if not items:
        return None
    return Conditions(items=tuple(items), seed=seed).to_dict()


def _interrupt(raw: Any, where: str) -> Interrupt | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"reply", "after_s", "say"} or "say" not in raw:
        raise ScenarioError(f"{where}.interrupt must be {{ reply = 1, after_s = 0.8, say = \"...\" }}.")
    reply, after = raw.get("reply", 1), raw.get("after_s", 0.8)
    if not isinstance(reply, int) or reply < 1:
        raise ScenarioError(f"{where}.interrupt.reply must be a whole number >= 1 (1 = the agent's first reply).")
    if not isinstance(after, (int, float)) or not 0 <= after <= 30:
        raise ScenarioError(f"{where}.interrupt.after_s must be seconds from 0 to 30, got {after!r}.")
    return Interrupt(reply=reply, after_s=float(after), say=str(raw["say"]))


def _persona(raw: Any, where: str) -> Persona:
    if raw is None:
        return Persona()
    if isinstance(raw, str):
        raw = {"character": raw}
    if not isinstance(raw, Mapping) or set(raw) - {"character", "description", "llm"}:
        raise ScenarioError(f"{where}.persona must be {{ character = \"hesitant\", description = \"...\", llm = \"module:attr\" }}.")
    character = raw.get("character", "plain")
    if character not in CHARACTERS:
        raise ScenarioError(
            f"{where}.persona.character {character!r} is not known; valid: {', '.join(CHARACTERS)}."
            + did_you_mean(str(character), CHARACTERS)
        )
    llm = raw.get("llm")
    if llm is not None and (not isinstance(llm, str) or ":" not in llm):
        raise ScenarioError(f"{where}.persona.llm must be 'module:attribute' naming a livekit-agents LLM.")
    return Persona(character=character, description=str(raw.get("description", "")), llm=llm)


def _expect_tools(raw: Any, where: str) -> tuple[ExpectedTool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}.expect_tools must be a list of {{ tool = \"name\", arguments = {{...}} }}.")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"tool": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("tool"), str) or set(item) - {"tool", "arguments"}:
            raise ScenarioError(f"{where}.expect_tools[{i}] must be {{ tool = \"name\", arguments = {{...}} }}.")
        args = item.get("arguments") or {}
        if not isinstance(args, Mapping):
            raise ScenarioError(f"{where}.expect_tools[{i}].arguments must be a table.")
        out.append(ExpectedTool(item["tool"], dict(args)))
    return tuple(out)


def _check_facts(scenario: Scenario, where: str) -> None:
    """Every template names a given fact (said at load, not mid-call)."""
    templates: list[tuple[str, str]] = []
    if scenario.opening:
        templates.append((scenario.opening, "opening"))
    templates += [(r.say, f"responses[{r.when!r}]") for r in scenario.responses]
    if scenario.fallback:
        templates.append((scenario.fallback, "fallback"))
    if scenario.interrupt:
        templates.append((scenario.interrupt.say, "interrupt.say"))
    for tool in scenario.expect_tools:
        templates += [(v, f"expect_tools {tool.tool}.{k}") for k, v in tool.arguments.items() if isinstance(v, str)]
    for template, part in templates:
        for name, _ in _template_fields(template, f"{where}.{part}"):
            if name not in scenario.facts and name != REPEAT:
                raise ScenarioError(
                    f"{where}.{part}: {{{name}}} is not a fact of this scenario; facts: "
                    f"{', '.join(sorted(scenario.facts)) or '(none)'}.{did_you_mean(name, scenario.facts)}"
                )


# -- judging ---------------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    return " ".join(value.lower().split()) if isinstance(value, str) else value


def match_tools(scenario: Scenario, tool_calls: Sequence[Any]) -> tuple[list[str], list[str]]:
    """``(matched, missing)`` descriptions of the scenario's expected tool calls against the calls
    the agent made (each call satisfies at most one expectation).
    """
    used: set[int] = set()
    matched: list[str] = []
    missing: list[str] = []
    for expected in scenario.expect_tools:
        args = {k: scenario.line(v) if isinstance(v, str) else v for k, v in expected.arguments.items()}
        label = f"{expected.tool}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
        for i, call in enumerate(tool_calls):
            if i in used or call.name != expected.tool:
                continue
            given = call.arguments or {}
            if all(_norm(given.get(k)) == _norm(v) for k, v in args.items()):
                used.add(i)
                matched.append(label)
                break
        else:
            made = [f"{c.name}({c.arguments})" for c in tool_calls if c.name == expected.tool]
            missing.append(label + (f"; the agent called {', '.join(made)}" if made else "; never called"))
    return matched, missing


# -- running ---------------------------------------------------------------------------------------


def resolve_llm(spec: Any) -> Any:
    """A livekit-agents LLM from ``"module:attribute"`` (an instance or a zero-argument factory),
    or ``spec`` itself when it already is one.

    Raises:
        ScenarioError: the module does not import or the attribute is missing.
    """
    if not isinstance(spec, str):
        return spec() if callable(spec) and not hasattr(spec, "chat") else spec
    import importlib

    module_name, _, attribute = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ScenarioError(f"persona llm {spec!r} cannot be loaded: {exc}") from None
    return obj() if callable(obj) and not hasattr(obj, "chat") else obj


class _RuleCaller:
    """The offline caller: the scenario's responses, then its fallback."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.compiled = [(re.compile(r.when, re.IGNORECASE), r) for r in scenario.responses]

    def _line(self, template: str, steps: Sequence[ScenarioStep]) -> str:
        said = [s.caller_said for s in steps if s.caller_said]
        return render(template, {**self.scenario.facts, REPEAT: said[-1] if said else ""})

    async def next_line(self, reply: str, steps: Sequence[ScenarioStep]) -> tuple[str | None, str]:
        for regex, response in self.compiled:
            if regex.search(reply):
                return self._line(response.say, steps), f"response {response.when!r}"
        if self.scenario.fallback is not None:
            return self._line(self.scenario.fallback, steps), "fallback"
        return None, "off-script"


HANG_UP = "HANG UP"
"""What a real LLM caller answers to end the call."""


class _LLMCaller:
    """A caller whose lines a real LLM chooses, from the goal, the facts and the character."""

    def __init__(self, scenario: Scenario, llm: Any) -> None:
        self.scenario = scenario
        self.llm = llm

    def instructions(self) -> str:
        s = self.scenario
        facts = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in s.facts.items())
        character = s.persona.description or CHARACTERS.get(s.persona.character, "")
        return (
            "You are a person phoning a company's voice assistant. Speak as the caller: reply with "
            "only the words you say next, one short spoken sentence, no stage directions. "
            f"Your goal: {s.goal or 'get your problem solved'}. What you know: {facts or 'nothing special'}. "
            f"Your manner: {character}. Give a fact only when asked for it. "
            f"When your goal is reached or the call is over, reply exactly {HANG_UP}."
        )

    async def next_line(self, reply: str, steps: Sequence[ScenarioStep]) -> tuple[str | None, str]:
        from livekit.agents import llm as lk_llm

        ctx = lk_llm.ChatContext()
        ctx.add_message(role="system", content=self.instructions())
        for step in steps:
            if step.agent_said:
                ctx.add_message(role="user", content=step.agent_said)
            if step.caller_said:
                ctx.add_message(role="assistant", content=step.caller_said)
        ctx.add_message(role="user", content=reply)
        text = ""
        async with self.llm.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    text += chunk.delta.content
        text = " ".join(text.split()).strip().strip('"')
        if not text or HANG_UP.lower() in text.lower():
            return None, "llm: hang up"
        return text, "llm"


async def run_scenario(
    call: LivekitCall,
    scenario: Scenario,
    *,
    persona_llm: Any = None,
    timeout: float | None = None,
) -> ScenarioResult:
    """Play ``scenario`` in ``call``: say the opening, answer each agent reply (responses, then
    the fallback; a real LLM's choice when the call's providers are ``real`` and the persona has
    an LLM), barge in where it says, hang up when ``hang_up_when`` is said or ``max_turns``
    replies went by; then judge the task from the call's tool calls and outcome.

    Every line the caller said is a ``say``/``barge_in`` step of the call's script (a replay says
    the same lines) and the exchanges are in the trace's ``scenario`` section.

    Args:
        call: A started call.
        scenario: What to play.
        persona_llm: The LLM that plays the persona with ``real`` providers (default: the
            persona's ``llm``).
        timeout: Seconds to wait for each agent reply (default: the call's reply timeout).

    Raises:
        ScenarioError: a real-provider call whose persona names no LLM.
    """
    from pytest_livekit.errors import CallTimeoutError

    wait = DEFAULT_REPLY_TIMEOUT if timeout is None else timeout
    llm_spec = persona_llm if persona_llm is not None else scenario.persona.llm
    chooser: _RuleCaller | _LLMCaller
    if call.providers == "real" and llm_spec is not None:
        chooser = _LLMCaller(scenario, resolve_llm(llm_spec))
    elif call.providers == "real" and not scenario.responses:
        raise ScenarioError(f"scenario {scenario.name!r}: a real-provider call needs persona.llm or responses.")
    else:
        chooser = _RuleCaller(scenario)
    character = scenario.persona.character
    conditions = scenario.conditions_object()
    result = ScenarioResult(scenario, test_id=str(getattr(call, "test_id", "") or ""))
    call.record.scenario = {"name": scenario.name, "running": True}
    since = 0.0

    async def speak(line: str) -> None:
        nonlocal since
        from pytest_livekit.conditions.media import Pause

        if character == "hesitant":
            await call.stay_silent(1.2)
        pause = Pause(at_word=2, duration_s=0.25) if character == "hesitant" and len(line.split()) > 3 else None
        turn = await call.say(line, conditions=conditions, pause=pause, wait_for_listening=character != "impatient")
        since = turn.ended_at if turn.ended_at is not None else since
        if character == "talks_over":
            await call.backchannel("mhm", offset_s=1.0)

    if scenario.opening is not None:
        result.steps.append(ScenarioStep("", scenario.line(scenario.opening), "opening"))
        await speak(scenario.line(scenario.opening))
    result.stopped = "max_turns"
    before_interrupt = since
    for reply_number in range(1, scenario.max_turns + 1):
        interrupt = scenario.interrupt
        if interrupt is not None and interrupt.reply == reply_number:
            interruption = scenario.line(interrupt.say)
            before_interrupt = since
            turn = await call.barge_in(interruption, offset_s=interrupt.after_s, conditions=conditions)
            since = turn.ended_at if turn.ended_at is not None else since
            result.steps.append(ScenarioStep("(talked over)", interruption, "interrupt"))
            continue
        try:
            await call.wait_for_agent_to_say(r"\S", timeout=wait, since=since, interrupted=False)
        except CallTimeoutError:
            result.stopped = "stalled"
            result.steps.append(ScenarioStep("", None, f"no reply within {wait:.0f} s"))
            break
        talked_over = [
            said for said in call.agent_lines(before_interrupt)
            if said not in call.agent_lines(before_interrupt, interrupted=False)
        ]
        if talked_over and result.steps and result.steps[-1].chosen_by == "interrupt":
            result.steps[-1] = dataclasses.replace(result.steps[-1], agent_said=" ".join(talked_over) + " [talked over]")
        reply = " ".join(call.agent_lines(since, interrupted=False))
        if scenario.hang_up_when and re.search(scenario.hang_up_when, reply, re.IGNORECASE):
            result.goal_reached = True
            result.stopped = "goal"
            result.steps.append(ScenarioStep(reply, None, "hang up"))
            break
        if reply_number == scenario.max_turns:  # the budget is spent: hang up, do not answer
            result.steps.append(ScenarioStep(reply, None, f"max_turns ({scenario.max_turns}) reached"))
            break
        line, why = await chooser.next_line(reply, result.steps)
        result.steps.append(ScenarioStep(reply, line, why))
        if line is None:
            result.stopped = "off-script" if why == "off-script" else "caller hung up"
            break
        if character == "impatient" and why == "fallback":
            turn = await call.barge_in(line, offset_s=0.5, conditions=conditions)
            since = turn.ended_at if turn.ended_at is not None else since
            continue
        await speak(line)
    if not scenario.hang_up_when and result.stopped == "max_turns":
        result.goal_reached = True  # no goal phrase: answering every reply is the goal
    result.tools_matched, result.tools_missing = match_tools(scenario, call.record.tool_calls)
    result.judge = await _judge(call, scenario, chooser)
    await call.hang_up()
    if scenario.outcome is not None:
        from pytest_livekit.metrics.call_metrics import call_outcome

        completion = (scenario.expect_tools[-1].tool,) if scenario.expect_tools else ()
        result.outcome = call_outcome(call.record, completion_tools=completion)
        result.outcome_ok = result.outcome == scenario.outcome
    call.record.scenario = result.to_dict()
    return result


async def _judge(call: LivekitCall, scenario: Scenario, chooser: Any) -> dict[str, Any] | None:
    """The LLM judge of livekit-agents over the agent's last message, where a real LLM is configured."""
    if not scenario.judge:
        return None
    if not isinstance(chooser, _LLMCaller):
        return {"skipped": "the judge needs a real LLM (providers = real and a persona llm)"}
    run = call.run_result()
    last = [
        i for i, event in enumerate(run.events)
        if getattr(event, "type", "") == "message" and getattr(event.item, "role", "") == "assistant"
    ]
    if not last:
        return {"intent": scenario.judge, "ok": False, "reason": "the agent said nothing to judge"}
    try:  # livekit's judge, over the agent's last message (the one that reached the goal)
        await run.expect[last[-1]].is_message(role="assistant").judge(chooser.llm, intent=scenario.judge)
    except AssertionError as exc:
        return {"intent": scenario.judge, "ok": False, "reason": str(exc).splitlines()[0]}
    return {"intent": scenario.judge, "ok": True, "reason": ""}


def scenario_params(paths: str | Iterable[str], base: Path) -> list[Scenario]:
    """Every scenario of the given files (paths relative to ``base``, the test file's folder)."""
    if isinstance(paths, str):
        paths = [paths]
    out: list[Scenario] = []
    for path in paths:
        if not isinstance(path, str):
            raise ScenarioError(f"scenarios= takes file names, got {path!r}.")
        out += load_scenarios(path, base=base)
    return out
