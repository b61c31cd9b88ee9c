"""Scenario files and variation tables: loading, validation, templates, judging (no server)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.call.scenarios import (
    ScenarioError,
    ScenarioResult,
    ScenarioStep,
    load_scenarios,
    load_variations,
    match_tools,
    render,
)
from pytest_livekit.outputs.run_summary import RunSummary

BASE = """
[defaults]
call_type = "verified_refund"
goal = "get a refund"
hang_up_when = "on its way"
max_turns = 5
expect_tools = [
  { tool = "record_name", arguments = { name = "{name:lower}" } },
  { tool = "record_order_number", arguments = { order_id = "{order_number:digits}" } },
  "confirm_refund",
]

[defaults.responses]
"your name" = "My name is {name}"
"order number" = "It is order {order_number}"
"again" = "{repeat}"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_scenario_merges_its_defaults_and_renders_its_lines(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
[scenario.first]
opening = "I want a refund"
facts = { name = "Alice Martin", order_number = "one two three four" }
noise = { color = "pink", snr_db = 15 }
seed = 3
persona = "hesitant"
interrupt = { reply = 1, after_s = 0.5, say = "My name is {name}" }
""")
    [s] = load_scenarios(path)
    assert s.name == "first" and s.call_type == "verified_refund" and s.max_turns == 5
    assert s.source == "s.toml: scenario.first"
    assert [r.when for r in s.responses] == ["your name", "order number", "again"]
    assert s.caller_lines() == ["I want a refund", "My name is Alice Martin", "It is order one two three four",
                                "My name is Alice Martin"]
    assert s.persona.character == "hesitant"
    conditions = s.conditions_object()
    assert conditions.seed == 3 and conditions.items[0].snr_db == 15 and conditions.items[0].color == "pink"
    assert s.interrupt is not None and s.interrupt.after_s == 0.5


def test_templates_convert_spoken_digits_and_case() -> None:
    facts = {"order_number": "one two three four", "name": "Alice Martin"}
    assert render("{order_number:digits}/{name:lower}/{name:upper}", facts) == "1234/alice martin/ALICE MARTIN"
    with pytest.raises(KeyError):
        render("{missing}", facts)


def test_a_table_gives_one_scenario_per_row_with_its_facts_and_conditions(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "id,cohort,opening,name,order_number,noise,snr_db,seed,character\n"
        "r1,clean,I want a refund,Alice Martin,one two three four,,,1,\n"
        "r2,noisy,I want a refund for my order,Bob Jones,two four six eight,white,12,2,impatient\n"
    )
    path = write(tmp_path, BASE + '[scenario.table]\nvariations = "rows.csv"\n')
    rows = load_scenarios(path)
    assert [s.name for s in rows] == ["table-r1", "table-r2"]
    assert rows[0].facts == {"name": "Alice Martin", "order_number": "one two three four"}
    assert rows[0].conditions is None and rows[0].cohort == "clean"
    assert rows[1].conditions_object().items[0].snr_db == 12 and rows[1].persona.character == "impatient"
    assert rows[1].source == "rows.csv:3" and rows[1].variation["id"] == "r2"


def test_json_lines_tables_work_too(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"id": "a", "name": "Carol Smith", "order_number": "one three five seven"}) + "\n\n"
    )
    assert [n for n, _ in load_variations(tmp_path / "rows.jsonl")] == [1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[scenario.x]\nfacts = { name = "A B" }\n', r"\{order_number\} is not a fact of this scenario; facts: name"),
        ('[scenario.x]\nfact = { name = "A B" }\n', r"unknown key 'fact'.*Did you mean 'facts'"),
        ('[scenario.x]\nmax_turns = 0\nfacts = { name = "A", order_number = "one" }\n', r"max_turns must be a whole number from 1 to 100"),
        ('[scenario.x]\nhang_up_when = "(("\nfacts = { name = "A", order_number = "one" }\n', r"not a valid regular expression"),
        ('[scenario.x]\npersona = "grumpy"\nfacts = { name = "A", order_number = "one" }\n', r"character 'grumpy' is not known; valid: plain"),
        ('[scenario.x]\nnoise = { color = "purple" }\nfacts = { name = "A", order_number = "one" }\n', r"noise"),
        ('[scenario.x]\nvariations = "nope.csv"\n', r"variation table .*nope.csv does not exist"),
        ('[scenario.x]\ninterrupt = { reply = 0, say = "hi" }\nfacts = { name = "A", order_number = "one" }\n', r"interrupt.reply must be"),
    ],
)
def test_bad_scenarios_fail_at_load_saying_where_and_what(tmp_path: Path, extra: str, message: str) -> None:
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenarios(path)
    assert "s.toml" in str(info.value) or "nope.csv" in str(info.value)


def test_bad_files_and_tables_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="is not valid TOML"):
        load_scenarios(write(tmp_path, "[defaults\n"))
    with pytest.raises(ScenarioError, match=r"no scenarios; add a \[scenario.<name>\] table"):
        load_scenarios(write(tmp_path, BASE))
    with pytest.raises(ScenarioError, match="files are .toml, .yaml, .yml or .json"):
        load_scenarios(write(tmp_path, "x", "s.txt"))
    (tmp_path / "dupe.csv").write_text("id,name\na,X\na,Y\n")
    with pytest.raises(ScenarioError, match=r"dupe.csv:3: id 'a' is already used on line 2"):
        load_variations(tmp_path / "dupe.csv")
    (tmp_path / "noid.csv").write_text("name\nX\n")
    with pytest.raises(ScenarioError, match="header with an 'id' column"):
        load_variations(tmp_path / "noid.csv")
    (tmp_path / "badid.csv").write_text("id\nrow 1\n")
    with pytest.raises(ScenarioError, match="must be letters, digits"):
        load_variations(tmp_path / "badid.csv")


def test_yaml_scenarios_load_like_toml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = write(tmp_path, """
scenario:
  y:
    opening: hello
    responses: {"name": "It is {name}"}
    facts: {name: Alice Martin}
""", "s.yaml")
    [s] = load_scenarios(path)
    assert s.caller_lines() == ["hello", "It is Alice Martin"]


@dataclass
class Tool:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def test_tools_are_judged_with_their_rendered_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[scenario.x]\nfacts = { name = "Alice Martin", order_number = "one two three four" }\n')
    [s] = load_scenarios(path)
    matched, missing = match_tools(s, [Tool("record_name", {"name": "Alice  MARTIN"}),
                                       Tool("record_order_number", {"order_id": "3432"}),
                                       Tool("confirm_refund")])
    assert matched == ["record_name(name='alice martin')", "confirm_refund()"]
    assert missing == ["record_order_number(order_id='1234'); the agent called record_order_number({'order_id': '3432'})"]
    result = ScenarioResult(s, steps=[ScenarioStep("", "I want a refund", "opening")], goal_reached=True,
                            stopped="goal", tools_matched=matched, tools_missing=missing, test_id="t.py::t[x]")
    assert not result.completed and result.tool_accuracy == pytest.approx(2 / 3)
    text = result.explain()
    assert "NOT completed" in text and "missing tool call: record_order_number" in text
    assert "re-run it alone: pytest 't.py::t[x]'" in text
    assert result.to_dict()["tool_accuracy"] == pytest.approx(2 / 3)


def test_the_run_summary_reports_completion_accuracy_and_ttfa_per_cohort() -> None:
    def row(cohort: str, completed: bool, accuracy: float, ttfa: float) -> tuple[str, str, dict[str, Any]]:
        return ("t", "passed", {
            "call_type": "x", "metrics": {"turns": [{"ttfa": ttfa}]}, "breaches": [], "tool_breaches": [],
            "conditions": [], "interruptions": [0, 0], "reconnects": [0, 0], "tools": [], "artifacts": None,
            "scenario": {"name": "s", "cohort": cohort, "completed": completed, "tool_accuracy": accuracy},
        })

    summary = RunSummary(rows=[row("clean", True, 1.0, 0.5), row("clean", True, 1.0, 0.7),
                               row("noisy", False, 0.5, 0.9), row("noisy", True, 1.0, 0.6)])
    cohorts = summary.cohorts()
    assert cohorts["clean"]["completed"] == 2 and cohorts["noisy"]["completed"] == 1
    assert cohorts["noisy"]["tool_accuracy"] == pytest.approx(0.75)
    lines = [line.text for line in summary.table_lines()]
    assert any(line.startswith("noisy") and "1/2" in line and "75%" in line for line in lines)
