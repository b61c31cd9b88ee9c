"""The HTML report from synthetic traces and recordings (pure: no server, no browser)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from pytest_livekit.call.record import (
    AgentError,
    CallerTurn,
    CallRecord,
    ConversationItem,
    HeardSegment,
    StateChange,
    ToolCall,
    Transcript,
)
from pytest_livekit.metrics.thresholds import CallType
from pytest_livekit.outputs import report
from pytest_livekit.outputs.report import (
    AGENT_COLOUR,
    CALLER_COLOUR,
    PLAYER_SAMPLE_RATE,
    build_report,
    waveform_envelope,
    write_report,
)
from pytest_livekit.outputs.trace import build_trace

RATE = 48000
DURATION_S = 7.0


def write_recording(folder: Path) -> Path:
    """A stereo call.wav: caller tone 0.5-2.0 s on the left, agent tone 2.9-4.5 s and 5.0-6.0 s
    on the right (silence elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(DURATION_S * RATE)) / RATE
    left = np.where((t >= 0.5) & (t < 2.0), 0.5 * np.sin(2 * np.pi * 220 * t), 0.0)
    agent_on = ((t >= 2.9) & (t < 4.5)) | ((t >= 5.0) & (t < 6.0))
    right = np.where(agent_on, 0.3 * np.sin(2 * np.pi * 330 * t), 0.0)
    path = folder / "call.wav"
    sf.write(str(path), (np.stack([left, right], axis=1) * 32767).astype(np.int16), RATE, subtype="PCM_16")
    return path


def make_trace(
    folder: Path | None,
    nodeid: str,
    *,
    outcome: str = "passed",
    call_type: str = "refund",
    said: str = "I want a refund for order one two three four",
    stt: str = "i want a refund for order one two three four",
    barge_in: bool = False,
    ttfa_s: float = 0.9,
    wer: float = 0.0,
    breaches: tuple[str, ...] = (),
    message: str = "",
    tool_output: str = "order 1234: blue kettle",
) -> dict[str, Any]:
    """A trace built by the real :func:`build_trace` from a synthetic record (seconds)."""
    rec = CallRecord(call_id=f"room-{abs(hash(nodeid)) % 10_000}", call_type=call_type,
                     started_at_epoch=1_790_000_000.0, server_version="1.13.5", agent_spec="agent:server")
    rec.caller_turns.append(CallerTurn(0, "tts:en-us", said, 0.5, 2.0))
    rec.heard += [HeardSegment(2.0 + ttfa_s, 4.5), HeardSegment(5.0, 6.0)]
    rec.transcripts += [Transcript(2.2, stt[:5], False), Transcript(2.3, stt, True)]
    rec.state_changes += [
        StateChange(2.8, "agent", "thinking", "speaking"), StateChange(4.4, "agent", "speaking", "listening"),
        StateChange(4.9, "agent", "thinking", "speaking"), StateChange(6.0, "agent", "speaking", "listening"),
    ]
    rec.items += [
        ConversationItem(2.3, "user", stt),
        ConversationItem(4.45, "assistant", "Let me look that up for you", metrics={"e2e_latency": 0.8}),
        ConversationItem(6.0, "assistant", "Your refund is on its way", metrics={"e2e_latency": 0.7}),
    ]
    rec.tool_calls.append(ToolCall(2.6, "lookup_order", {"order_id": "1234"}, tool_output, call_id="c1"))
    turns = [{"index": 0, "ttfa": ttfa_s, "wer": wer, "cer": wer, "stt_text": stt, "e2e_latency": 0.8}]
    if barge_in:
        rec.caller_turns.append(CallerTurn(1, "tts:en-us", "stop please", 3.2, 3.8, kind="barge_in"))
        turns.append({"index": 1, "ttfa": 1.2, "wer": 0.0, "stt_text": "stop please"})
    if outcome == "error":
        rec.errors.append(AgentError(3.0, "RuntimeError: CRM down", "crash"))
    if folder is not None:
        rec.artifacts_dir = str(folder)
    metrics = {
        "turns": turns, "wer": wer, "cer": wer, "ttfa_p50": ttfa_s, "duplicated_turns": 0, "gaps": 0,
        "rtc": {"packet_loss_ratio": 0.0, "jitter_s": 0.002},
        "agent_quality": {"clipping_ratio": 0.0, "snr_db": 40.0, "loudness_lufs": -20.0},
        "outcome": "completed", "tools_called": ["lookup_order"],
    }
    return build_trace(
        rec,
        metrics=metrics,
        limits={"ttfa_ms_max": 1500.0, "wer_max": 0.2, "expected_tools": ("lookup_order",)},
        breaches=breaches,
        test={"nodeid": nodeid, "outcome": outcome, "phase": "call", "message": message, "duration_s": 7.5},
        duration_s=DURATION_S,
    )


def call_sections(document: str) -> dict[str, str]:
    """``id`` -> the ``<details class="call">`` element's HTML."""
    out = {}
    for part in re.split(r'(?=<details class="call )', document)[1:]:
        m = re.match(r'<details class="call [^"]*" id="(call-\d+)"', part)
        assert m, part[:200]
        out[m.group(1)] = part
    return out


def opening_tag(section: str) -> str:
    return section[: section.index(">") + 1]


@pytest.fixture
def three_calls(tmp_path: Path) -> list[dict[str, Any]]:
    """passed (with recording), failed (with recording, barge-in), passed (recording not kept)."""
    first = tmp_path / "calls" / "test_a"
    second = tmp_path / "calls" / "test_b"
    write_recording(first)
    write_recording(second)
    kept_none = make_trace(tmp_path / "calls" / "test_c", "t.py::test_c")
    kept_none["artifacts"]["recording"] = None  # what keep="failed" leaves for a passed call
    return [
        make_trace(first, "t.py::test_a"),
        make_trace(second, "t.py::test_b", outcome="failed", barge_in=True, ttfa_s=1.7,
                   breaches=("ttfa_ms_max: 1700 > 1500 allowed (turn 1)",),
                   message="E   AssertionError: 1 limit(s) of call type 'refund' breached"),
        kept_none,
    ]


def test_report_is_self_contained(three_calls: list[dict[str, Any]]) -> None:
    document = build_report(three_calls)
    assert document.startswith("<!DOCTYPE html>")
    assert "http://" not in document and "https://" not in document
    assert "<link" not in document.lower()
    assert re.search(r"<script[^>]*\bsrc=", document) is None
    assert re.search(r"\b(?:src|href)\s*=\s*[\"'](?!data:|#)", document) is None  # only data: and #anchors
    assert "Content-Security-Policy" in document and "default-src 'none'" in document
    assert "@import" not in document and "url(" not in document
    assert document.count("<script>") == 1


def test_every_call_is_present_failed_first_and_open(three_calls: list[dict[str, Any]]) -> None:
    document = build_report(three_calls)
    sections = call_sections(document)
    assert list(sections) == ["call-1", "call-2", "call-3"]
    tags = {k: opening_tag(v) for k, v in sections.items()}
    assert 'data-nodeid="t.py::test_b"' in tags["call-1"] and " open" in tags["call-1"]
    assert 'data-outcome="failed"' in tags["call-1"]
    assert 'data-nodeid="t.py::test_a"' in tags["call-2"] and " open" not in tags["call-2"]
    assert 'data-nodeid="t.py::test_c"' in tags["call-3"] and " open" not in tags["call-3"]
    assert "1 limit(s) of call type &#x27;refund&#x27; breached" in sections["call-1"]
    assert "replay: <code>python -m pytest_livekit replay" in sections["call-1"]
    assert "replay:" not in sections["call-2"]
    assert '<a href="#call-1">' in document  # the index links to each call


def test_header_summarises_run_and_call_types(three_calls: list[dict[str, Any]]) -> None:
    document = build_report(three_calls)
    assert "<b>3 call(s)</b>: 2 passed · 1 failed" in document
    assert "livekit_server 1.13.5" in document
    assert document.count('class="latency-plot"') == 1
    row = re.search(r'<tr class="call-type-row[^"]*" data-call-type="refund">.*?</tr>', document)
    assert row is not None
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(0))
    assert cells[:2] == ["3", "1"]  # calls, failed
    assert cells[2:4] == ["1050 ms", "1625 ms"]  # p50, p95 of the turns 900, 900, 1200, 1700 ms


def test_missing_or_unreadable_recording_is_shown_not_raised(tmp_path: Path) -> None:
    gone = make_trace(tmp_path / "gone", "t.py::gone")  # names call.wav, file absent
    broken_folder = tmp_path / "broken"
    broken_folder.mkdir()
    (broken_folder / "call.wav").write_bytes(b"RIFF not really a wav")
    broken = make_trace(broken_folder, "t.py::broken")
    no_folder = make_trace(None, "t.py::nofolder")
    document = build_report([gone, broken, no_folder])
    sections = call_sections(document)
    assert len(sections) == 3
    for html in sections.values():
        assert "<audio" not in html
        assert 'class="waveform' not in html
        assert 'class="timeline"' in html  # events are still drawn from the trace
    assert sections["call-1"].count("recording not kept") >= 2  # both lanes and the player
    assert "recording not readable" in sections["call-2"]


def test_timeline_marks_and_waveform(three_calls: list[dict[str, Any]]) -> None:
    sections = call_sections(build_report(three_calls))
    failed = sections["call-1"]
    svg = failed[failed.index('<svg class="timeline"'): failed.index("</svg>", failed.index('<svg class="timeline"'))]
    assert svg.count('class="caller-turn"') == 2
    assert svg.count('class="agent-heard"') == 2
    assert svg.count('class="agent-turn') == 2
    assert svg.count('class="tool-mark') == 1
    assert svg.count('class="ttfa-mark') == 2
    assert svg.count('class="ttfa-mark breach"') == 1  # 1700 ms against 1500
    assert svg.count('class="barge-in-mark barge_in"') == 1
    assert svg.count('class="waveform waveform-caller"') == 1 and 'class="waveform waveform-agent"' in svg
    assert 'class="time-axis"' in svg
    assert f'fill="{CALLER_COLOUR}"' in svg and f'fill="{AGENT_COLOUR}"' in svg
    assert "said: I want a refund for order one two three four" in svg  # transcript tooltip
    assert "lookup_order({&quot;order_id&quot;: &quot;1234&quot;})" in svg


def test_breaches_are_coloured_in_the_metrics_table(tmp_path: Path) -> None:
    bad = make_trace(None, "t.py::bad", outcome="failed", wer=0.5, breaches=("wer_max: 0.5 > 0.2 allowed",))
    document = build_report([bad])
    rows = {limit: cls for cls, limit in re.findall(r'<tr class="(metric-row[^"]*)" data-limit="([^"]*)">', document)}
    assert rows["wer_max"] == "metric-row breach"
    assert rows["ttfa_ms_max"] == "metric-row ok"
    assert rows["expected_tools"] == "metric-row ok"
    assert rows["cer_max"] == "metric-row"  # measured, no limit
    assert "<li>wer_max: 0.5 &gt; 0.2 allowed</li>" in document


def test_transcripts_and_messages_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    t = make_trace(None, f"t.py::test_x[{evil}]", outcome="failed", said=evil, stt=evil, tool_output=evil,
                   message=f"E  {evil}")
    t["conditions"] = {"seed": 3, "items": [{"kind": "noise", "color": evil}]}
    document = build_report([t])
    assert document.count("<script") == 1  # ours only
    assert "<img" not in document  # the tag arrives as text: &lt;img ...&gt;
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in document


def test_player_holds_a_small_stereo_recording(three_calls: list[dict[str, Any]]) -> None:
    document = build_report(three_calls[:1])
    m = re.search(r'<audio controls preload="none" src="data:(audio/[a-z]+);base64,([A-Za-z0-9+/=]+)"', document)
    assert m is not None
    assert m.group(1) == "audio/ogg"
    blob = base64.b64decode(m.group(2))
    data, rate = sf.read(io.BytesIO(blob), always_2d=True)
    assert rate == PLAYER_SAMPLE_RATE and data.shape[1] == 2
    assert abs(len(data) / rate - DURATION_S) < 0.1
    assert len(blob) < 8000 * DURATION_S  # < 64 kbit/s; a 7 s WAV is 1.3 MB
    # left is the caller (tone 0.5-2.0 s), right the agent (2.9-4.5 s): channels are kept apart
    caller = np.abs(data[int(0.7 * rate): int(1.8 * rate)]).mean(axis=0)
    agent = np.abs(data[int(3.1 * rate): int(4.3 * rate)]).mean(axis=0)
    assert caller[0] > 10 * caller[1] and agent[1] > 10 * agent[0]


def test_latency_plot_draws_limit_and_slo_lines(three_calls: list[dict[str, Any]]) -> None:
    settings = SimpleNamespace(call_type_configs={
        "refund": CallType("refund", limits={"ttfa_ms_max": 1400.0}, slo={"ttfa_p95_ms_max": 1200.0},
                           description="money back"),
    })
    document = build_report(three_calls, settings=settings)
    plot = document[document.index('<svg class="latency-plot"'):]
    plot = plot[: plot.index("</svg>")]
    assert plot.count('class="ttfa-dot"') == 4
    assert 'class="limit-line"' in plot and ">limit 1400<" in plot
    assert 'class="slo-line"' in plot and ">SLO p95 1200<" in plot
    assert 'class="p50-line"' in plot and 'class="p95-line"' in plot
    assert "money back" in document
    # p95 of 900, 900, 1200, 1700 ms (linear interpolation) = 1625 ms > 1200
    assert re.search(r'<span class="slo breach" title="[^"]*">ttfa_p95_ms_max ≤ 1200: <b>1625</b>', document)


def test_write_report_is_atomic(three_calls: list[dict[str, Any]], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out" / "report.html"
    assert write_report(path, three_calls) == path
    first = path.read_text()
    assert first.endswith("</html>\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]

    def half_written(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        Path.write_bytes(self, data[:100].encode())
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, three_calls[:1])
    monkeypatch.undo()
    assert path.read_text() == first  # the old report is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no temp file left


def test_empty_run_and_minimal_traces() -> None:
    assert 'data-rendered="no"' in build_report([])
    minimal = {"test": {"nodeid": "t.py::m", "outcome": "error"}, "call": {}, "turns": [{"who": "caller"}]}
    document = build_report([minimal])
    assert 'id="call-1"' in document and "recording not kept" in document


def test_a_malformed_trace_costs_only_its_own_section(three_calls: list[dict[str, Any]]) -> None:
    broken = make_trace(None, "t.py::broken")
    broken["tool_calls"] = [None]  # not a tool call
    sections = call_sections(build_report([*three_calls, broken]))
    assert len(sections) == 4
    assert "this call could not be shown: AttributeError" in sections["call-4"]
    assert sections["call-2"].count('class="caller-turn"') == 1  # the others are intact


def test_waveform_envelope_min_max_per_bin() -> None:
    x = np.zeros((1000, 2), dtype=np.float32)
    x[100:200, 0] = np.linspace(-0.5, 0.8, 100)
    x[900, 1] = -1.0
    env = waveform_envelope(x, bins=10)
    assert env.shape == (2, 10, 2)
    assert env[0, 1, 0] == pytest.approx(-0.5) and env[0, 1, 1] == pytest.approx(0.8)
    assert env[0, 5].tolist() == [0.0, 0.0]
    assert env[1, 9, 0] == -1.0
    assert waveform_envelope(np.ones(5), bins=800).shape == (1, 5, 2)


def test_report_size_per_call_stays_small(three_calls: list[dict[str, Any]]) -> None:
    # a 7 s call: player audio + waveform + tables well under 100 kB (50 calls stay a few MB)
    one = build_report(three_calls[:1])
    assert len(one.encode()) < 100_000
    assert report.WAVEFORM_BINS == 800


def test_a_shaped_calls_wire_stats_are_in_its_metrics_table() -> None:
    link = {"packets_in": 500, "forwarded": 450, "dropped_loss": 40, "dropped_queue": 10, "dropped_outage": 0,
            "duplicated": 0, "reordered": 3, "queue_delay_p50_ms": 12.5, "queue_delay_p95_ms": 80.0}
    trace = {"network": {
        "shaped": {"caller": {"path": {"uplink": [{"kind": "packet_loss", "rate": 0.1}], "downlink": []}}},
        "links": {"room-1:caller": {"flows": 2, "uplink": link, "downlink": {**link, "dropped_loss": 0}}},
    }}
    html = report._metrics_table(trace)  # noqa: SLF001 - the table alone, without a whole report
    assert "network, caller uplink (packet_loss)" in html
    assert "500 packets, 50 dropped (loss 40, queue 10, outage 0)" in html and "3 reordered" in html
    assert "network, caller downlink (clean)" in html
    assert "network," not in report._metrics_table({"network": {}})  # noqa: SLF001
