"""Per-call artifacts of real calls: trace for every outcome, keep policy, JUnit properties under
xdist, the session JSONL, no secret anywhere, replay from a folder, the progress line.

The inner suite runs against a server this test starts (external mode), so the test knows the
API secret and can prove it appears in no artifact. A second inner run has the plugin start its
own server and a worker whose agent logs its token and the secret on purpose: no file the run
writes, no report section and no line of its output may show either.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")

INNER = """
import pytest
from pytest_livekit.conditions.media import Conditions, Noise

NOISY = Conditions(items=(Noise(snr_db=15.0, color="pink"),), seed=1234)

async def test_passes(livekit_call):
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply()

async def test_fails_after_the_call(make_livekit_call):
    async with make_livekit_call(conditions=NOISY) as call:
        await call.say("Can I speak to a human please")
        await call.wait_for_agent_reply()
    assert False, "deliberate failure after a complete call"

async def test_times_out(livekit_call):
    await livekit_call.say("I want a refund for order one two three four")
    await livekit_call.wait_for_agent_reply(timeout=0.05)

@pytest.mark.livekit(join_timeout=0.01)
async def test_setup_times_out(livekit_call):
    pass

async def test_speaks_a_prepared_clip(livekit_call):
    await livekit_call.speak(livekit_call.synthesize("Can I speak to a human please"))
    await livekit_call.wait_for_agent_reply()
"""


def _env(server: Any) -> dict[str, str]:
    return {
        **os.environ,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _pytest(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=400, check=False,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pytest_livekit.server.binary import LivekitServer, find_server_binary

    log = tmp_path_factory.mktemp("server") / "server.log"
    with LivekitServer(find_server_binary(root=ROOT), log_path=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def inner_run(tmp_path_factory: pytest.TempPathFactory, server: Any) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The inner suite, once for the module (4 real calls, 2 xdist workers)."""
    folder = tmp_path_factory.mktemp("suite")
    (folder / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    (folder / "test_inner.py").write_text(INNER)
    result = _pytest(
        folder, _env(server), "-n", "2", f"--livekit-url={server.url}", "--livekit-keep=failed",
        "--junitxml=junit.xml", "--livekit-otel=otel.json",
    )
    return folder, result


def _trace(folder: Path, test: str) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads((folder / ".livekit" / "calls" / f"test_inner.{test}" / "trace.json").read_text())
    return trace


def test_every_outcome_leaves_a_trace(inner_run: tuple[Path, Any]) -> None:
    folder, result = inner_run
    assert "2 passed" in result.stdout and "2 failed" in result.stdout and "1 error" in result.stdout, result.stdout
    outcomes = {
        name: (_trace(folder, name)["test"]["outcome"], _trace(folder, name)["test"]["phase"])
        for name in ("test_passes", "test_fails_after_the_call", "test_times_out", "test_setup_times_out")
    }
    assert outcomes == {
        "test_passes": ("passed", ""),
        "test_fails_after_the_call": ("failed", "call"),
        "test_times_out": ("timeout", "call"),
        "test_setup_times_out": ("timeout", "setup"),
    }
    failed = _trace(folder, "test_fails_after_the_call")
    assert "deliberate failure" in failed["test"]["message"]
    assert failed["schema"] == "pytest-livekit/call-trace" and failed["schema_version"] == 1
    assert {p["role"] for p in failed["participants"]} == {"caller", "agent"}
    assert {c["mime_type"] for c in failed["media"]["codecs"]} == {"audio/opus"}
    assert failed["conditions"]["seed"] == 1234
    assert [t["who"] for t in failed["turns"]][:2] == ["caller", "agent"]
    assert failed["tool_calls"][0]["name"] == "transfer_to_human"
    assert failed["transcripts"]["final"] and failed["metrics"]["turns"][0]["ttfa"] > 0.1
    assert failed["rtc"]["packets_received"] > 0
    assert [s["action"] for s in failed["script"]] == ["say", "wait_for_agent_reply"]
    assert failed["call"]["room_sid"].startswith("RM_")


def test_keep_failed_drops_only_passed_recordings(inner_run: tuple[Path, Any]) -> None:
    folder, _ = inner_run
    calls = folder / ".livekit" / "calls"
    assert not (calls / "test_inner.test_passes" / "call.wav").exists()
    assert (calls / "test_inner.test_passes" / "trace.json").exists()
    for name in ("test_fails_after_the_call", "test_times_out"):
        assert {"call.wav", "caller.wav", "agent.wav", "trace.json", "call.json"} <= {
            p.name for p in (calls / f"test_inner.{name}").iterdir()
        }
    assert not list(calls.rglob("*.tmp"))  # atomic writes leave no temp file


def test_junit_properties_and_session_jsonl_under_xdist(inner_run: tuple[Path, Any]) -> None:
    folder, _ = inner_run
    cases = {c.get("name"): c for c in ET.parse(folder / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") or "" for p in cases["test_fails_after_the_call"].iter("property")}
    assert float(props["livekit.ttfa_ms"]) > 100
    assert props["livekit.test_outcome"] == "failed"
    assert props["livekit.seed"] == "1234"
    assert props["livekit.tools"].startswith("transfer_to_human(")
    lines = (folder / ".livekit" / "calls.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["test"]["nodeid"].split("::")[1] for line in lines) == [
        "test_fails_after_the_call", "test_passes", "test_setup_times_out", "test_speaks_a_prepared_clip",
        "test_times_out",
    ]


def test_no_secret_or_token_in_any_artifact(inner_run: tuple[Path, Any], server: Any) -> None:
    folder, result = inner_run
    secret = server.api_secret.encode()
    # every file the run wrote (calls, session JSONL, report, baseline, junit, logs), not a list
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 10 and folder / "junit.xml" in files
    for path in files:
        data = path.read_bytes()
        assert secret not in data, path
        assert not JWT.search(data), path
    # the terminal output (failure reports with their sections, the summary) too
    output = result.stdout + result.stderr
    assert server.api_secret not in output and not JWT.search(output.encode())


#: An agent that leaks what redaction must catch: its job's access token and the server's API
#: secret, in its own log lines and in a server API request (livekit-server logs the room name it
#: was asked for), again and again, so the last lines of both logs hold them when the test fails.
CARELESS_AGENT = """
import asyncio
import contextlib
import logging
import os

from livekit import api
from livekit.agents import AgentServer, JobContext

from example_suite.support_agent import prewarm, run_support_session

server = AgentServer()
server.setup_fnc = prewarm
logger = logging.getLogger("careless-agent")


async def _leak(ctx: JobContext) -> None:
    token, secret = ctx._info.token, os.environ["LIVEKIT_API_SECRET"]
    while True:
        logger.warning("debugging: token=%s secret=%s", token, secret)
        print(f"debugging: token={token} secret={secret}", flush=True)
        with contextlib.suppress(Exception):
            await ctx.api.room.list_participants(api.ListParticipantsRequest(room=f"{token}:{secret}"))
        await asyncio.sleep(0.3)  # a careless agent's heartbeat, not a synchronisation


@server.rtc_session(agent_name="careless-agent")
async def entrypoint(ctx: JobContext) -> None:
    leak = asyncio.ensure_future(_leak(ctx))

    async def stop_leaking() -> None:
        leak.cancel()

    ctx.add_shutdown_callback(stop_leaking)
    await run_support_session(ctx, {"min_duration": 0.5})
"""

CARELESS_TEST = """
import os
from pathlib import Path


async def test_fails_after_a_worker_call(livekit_call, livekit_server):
    # the outer test learns the session's secret from here (a file outside the run's folder)
    Path(os.environ["SECRET_PROBE"]).write_text(livekit_server.api_secret)
    await livekit_call.say("Can I speak to a human please")
    await livekit_call.wait_for_agent_reply()
    assert False, "deliberate failure: the report gets the server's and the worker's log tails"
"""


def test_no_secret_or_token_in_a_managed_run_with_a_worker(tmp_path: Path, server_binary: Path) -> None:
    """A run whose plugin starts livekit-server and an agent worker, with a failing worker call:
    every file it writes (call folders, server and worker logs, report, JSONL, JUnit, anything left
    in its temporary folder) and its whole terminal output, failure report sections included, hold
    neither the secret nor a JWT; the leaks did happen and were redacted on their way.
    """
    from pytest_livekit.redaction import JWT as JWT_TEXT

    jwt = re.compile(JWT_TEXT.pattern.encode())
    folder, probe = tmp_path / "suite", tmp_path / "secret.txt"
    folder.mkdir()
    # the run's temporary folder, scanned too; short: the caller's AF_UNIX socket lives there
    with tempfile.TemporaryDirectory(prefix="lk-sec-", dir="/tmp") as temp:
        _leak_free_managed_run(folder, Path(temp), probe, server_binary, jwt)


def _leak_free_managed_run(folder: Path, temp: Path, probe: Path, server_binary: Path, jwt: re.Pattern[bytes]) -> None:
    """Run the careless suite in ``folder`` with ``temp`` as its TMPDIR and check what it left."""
    from pytest_livekit.redaction import REDACTED

    (folder / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "livekit_agent = careless_agent:server\n"
    )
    (folder / "careless_agent.py").write_text(CARELESS_AGENT)
    (folder / "test_careless.py").write_text(CARELESS_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        TMPDIR=str(temp),  # the caller's log and anything else temporary: scanned below too
        SECRET_PROBE=str(probe),
    )
    result = _pytest(
        folder, env, "--livekit-server=binary", f"--livekit-server-binary={server_binary}",
        "--livekit-agent-mode=worker", "--junitxml=junit.xml", "--livekit-report=report.html",
    )
    output = result.stdout + result.stderr
    assert "1 failed" in result.stdout, output[-6000:]
    secret = probe.read_text()
    assert len(secret) >= 32
    # the failure report has the log tails, and the leaks reached them redacted
    for section in ("livekit-server log (", "livekit agent worker log (", "deliberate failure"):
        assert section in result.stdout, (section, result.stdout[-6000:])
    assert f"token={REDACTED} secret={REDACTED}" in result.stdout, result.stdout[-6000:]
    assert secret not in output and not jwt.search(output.encode()), "the terminal output leaks"
    logs = folder / ".livekit"
    worker_logs = list(logs.glob("worker-*.log"))
    assert worker_logs and all(f"token={REDACTED}" in p.read_text() for p in worker_logs), worker_logs
    files = [p for root in (folder, temp) for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"junit.xml", "report.html", "calls.jsonl", "trace.json", "call.json"} <= names, sorted(names)
    leaks = [p for p in files if secret.encode() in p.read_bytes() or jwt.search(p.read_bytes())]
    server_log = logs / "livekit-server-main.log"
    assert [str(p) for p in leaks if p != server_log] == []
    # livekit-server's own log on disk: the API request's room name (token:secret) is logged
    assert server_log not in leaks, f"{server_log} holds the secret or a token"
    assert REDACTED in server_log.read_text()


def test_replay_reruns_the_same_script_conditions_and_seed(inner_run: tuple[Path, Any], tmp_path: Path) -> None:
    folder, _ = inner_run
    original = folder / ".livekit" / "calls" / "test_inner.test_fails_after_the_call"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_livekit", "replay", str(original), "--out", str(tmp_path / "again")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the replayed call breaks no limit
    assert "turn 1 ttfa" in proc.stdout
    before, after = json.loads((original / "trace.json").read_text()), _trace_at(tmp_path / "again")
    assert [_step(s) for s in after["script"]] == [_step(s) for s in before["script"]]
    assert after["conditions"] == before["conditions"]
    # same caller audio conditions, turn by turn (the description carries the seed)
    assert [t["conditions"] for t in after["turns"] if t["who"] == "caller"] == [
        t["conditions"] for t in before["turns"] if t["who"] == "caller"
    ]
    assert after["test"]["replay_of"] == str(original)
    assert after["tool_calls"][0]["name"] == "transfer_to_human"


def test_replay_sends_a_spoken_clip_again(inner_run: tuple[Path, Any], tmp_path: Path) -> None:
    folder, _ = inner_run
    original = folder / ".livekit" / "calls" / "test_inner.test_speaks_a_prepared_clip"
    assert (original / "clips" / "turn-1.wav").exists()  # kept: keep=failed keeps clips of passes too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_livekit", "replay", str(original), "--out", str(tmp_path / "again")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before, after = _trace_at(original), _trace_at(tmp_path / "again")
    assert [s["action"] for s in after["script"]] == ["speak", "wait_for_agent_reply"]
    assert after["tool_calls"][0]["name"] == "transfer_to_human"
    assert [t["text"] for t in after["turns"] if t["who"] == "caller"] == [
        t["text"] for t in before["turns"] if t["who"] == "caller"
    ]


def _trace_at(folder: Path) -> dict[str, Any]:
    trace: dict[str, Any] = json.loads((folder / "trace.json").read_text())
    return trace


def _step(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if k != "t"}


def test_progress_line_shows_call_turn_and_step_and_is_quiet_under_q(
    tmp_path: Path, server: Any
) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"livekit_agent = {EXAMPLE_AGENT}\n"
    )
    (tmp_path / "test_one.py").write_text(
        "async def test_refund(livekit_call):\n"
        "    await livekit_call.say('I want a refund for order one two three four')\n"
        "    await livekit_call.wait_for_agent_reply()\n"
    )
    shown = _pytest(tmp_path, _env(server), f"--livekit-url={server.url}", "--livekit-progress=on")
    assert shown.returncode == 0, shown.stdout
    assert re.search(r"livekit ▸ test_refund · connected · \d+\.\d s · say 'I want a refund for order one t…'",
                     shown.stdout), shown.stdout
    assert re.search(r"livekit ▸ test_refund · turn 1 · \d+\.\d s · wait for agent reply", shown.stdout)
    quiet = _pytest(tmp_path, _env(server), f"--livekit-url={server.url}", "--livekit-progress=on", "-q")
    assert quiet.returncode == 0, quiet.stdout
    assert "livekit ▸" not in quiet.stdout


def test_otel_file_has_a_trace_per_call_with_turn_and_tool_spans(inner_run: tuple[Path, Any]) -> None:
    folder, _ = inner_run
    doc = json.loads((folder / "otel.json").read_text())
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    roots = {s["name"].split("::")[-1]: s for s in spans if "parentSpanId" not in s or not s["parentSpanId"]}
    assert set(roots) == {"test_passes", "test_fails_after_the_call", "test_times_out", "test_setup_times_out",
                          "test_speaks_a_prepared_clip"}
    failed = roots["test_fails_after_the_call"]
    assert failed["status"]["code"] == 2  # STATUS_CODE_ERROR
    children = [s for s in spans if s.get("parentSpanId") == failed["spanId"]]
    names = {s["name"] for s in children}
    assert {"caller turn 1", "agent turn 1", "tool transfer_to_human"} <= names
    assert all(s["traceId"] == failed["traceId"] for s in children)
