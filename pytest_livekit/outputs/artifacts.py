"""Per-call and per-session artifacts: metrics, the trace, JUnit properties, the session JSONL.

A call's folder (``<artifacts>/<test id>/``) holds ``call.wav`` (stereo: left = caller as sent,
right = agent as heard), ``caller.wav`` and ``agent.wav`` (each channel), ``call.json`` (the raw
:class:`~pytest_livekit.call.record.CallRecord`), ``metrics.json`` (the summary row) and
``trace.json`` (:mod:`pytest_livekit.outputs.trace`). The session writes ``calls.jsonl`` next to the
call folders' parent: one trace per line, for every call of the run (xdist workers included).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_livekit._files import atomic_write_text
from pytest_livekit.outputs.trace import TRACE_FILE, build_trace, dumps, json_safe
from pytest_livekit.units import to_ms

#: ``keep`` values: keep every call's recordings, or only those of calls that did not pass.
KEEP_CHOICES = ("all", "failed")
#: Recordings removed for passed calls under ``keep="failed"`` (the small JSON files stay).
RECORDING_FILES = ("call.wav", "caller.wav", "agent.wav")


def ended_call_metrics(call: Any, stereo: Any = None) -> dict[str, Any]:
    """An ended call's metrics (``CallMetrics.to_dict()``) from its record and recording.

    Args:
        call: the (closed) call.
        stereo: the call's recording, if the caller already built it (else built here).
    """
    from pytest_livekit.metrics.call_metrics import compute_metrics

    if stereo is None and call.caller is not None:
        stereo = call.caller.recording.stereo()
    return compute_metrics(call.record, stereo).to_dict()


def call_summary(
    call: Any, secrets: Iterable[str] = (), stereo: Any = None, metrics: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Per-call numbers for the run summary, SLOs and JUnit (metrics in seconds), redacted like
    the trace (tool arguments can carry anything).

    Also writes them to ``metrics.json`` in the call's folder.

    Args:
        call: the (closed) call.
        secrets: strings to redact.
        stereo: the call's recording, if the caller already built it (else built here).
        metrics: the call's metrics (``CallMetrics.to_dict()``), if already computed when the
            call ended (the plugin's limits check); else computed here.
    """
    from pytest_livekit.call.scenarios import scenario_row
    from pytest_livekit.metrics.call_metrics import interruption_recovery
    from pytest_livekit.metrics.thresholds import check_call

    rec = call.record
    if metrics is None:
        metrics = ended_call_metrics(call, stereo)
    breaches = check_call(metrics, call.limits)
    summary = {
        "call_type": rec.call_type,
        "metrics": metrics,
        "breaches": [str(b) for b in breaches],
        "tool_breaches": [str(b) for b in breaches if b.name in ("expected_tools", "forbidden_tools")],
        "conditions": list(getattr(call, "condition_kinds", ()) or ()),
        "interruptions": list(interruption_recovery(rec)),
        # reconnects the caller made and how many the call survived
        "reconnects": list(getattr(call, "reconnects", (0, 0))),
        "tools": [
            f"{t.name}({', '.join(f'{k}={v!r}' for k, v in t.arguments.items())})" for t in rec.tool_calls
        ],
        "setup_s": call.timings.get("setup"),
        "teardown_s": call.timings.get("teardown"),
        "artifacts": rec.artifacts_dir,
        "scenario": scenario_row(rec.scenario),
    }
    text = dumps(summary, secrets)
    out = dict(json.loads(text))
    if getattr(call, "artifacts_error", None):  # the recording could not be written
        out["artifacts_error"] = call.artifacts_error
    if rec.artifacts_dir:
        try:
            atomic_write_text(Path(rec.artifacts_dir) / "metrics.json", text)
        except OSError as exc:  # disk full, read-only: the call's result stands, the summary says so
            out.setdefault("artifacts_error", f"{type(exc).__name__}: {exc}")
    return out


def finish_call(
    call: Any,
    *,
    nodeid: str = "",
    outcome: Mapping[str, Any] | None = None,
    keep: str = "all",
    secrets: Iterable[str] = (),
    metrics: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute a finished call's summary and trace, write ``trace.json``, apply ``keep``.

    Args:
        call: the (closed) :class:`~pytest_livekit.call.livekit_call.LivekitCall`.
        nodeid: the pytest node id.
        outcome: ``{"outcome", "phase", "message", "duration_s"}`` of the test.
        keep: ``all`` keeps every recording; ``failed`` removes the recordings of passed calls
            (``trace.json``, ``call.json`` and ``metrics.json`` stay).
        secrets: strings that must not appear in the trace (the server's API secret).
        metrics: the call's metrics if already computed (see :func:`call_summary`).

    Returns:
        ``(summary, trace)``.
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep={keep!r}; valid values: {', '.join(KEEP_CHOICES)}")
    from pytest_livekit.audio import CALL_SAMPLE_RATE

    secrets = [s for s in secrets if s]
    # the recording is built once: metrics and the call's length both come from it
    stereo = call.caller.recording.stereo() if call.caller is not None else None
    summary = call_summary(call, secrets, stereo, metrics)
    test = dict(outcome or {})
    test["nodeid"] = nodeid
    rec = call.record
    trace = build_trace(
        rec,
        metrics=summary["metrics"],
        limits=call.limits,
        breaches=summary["breaches"],
        test=test,
        duration_s=None if stereo is None else len(stereo) / CALL_SAMPLE_RATE,
    )
    drop_recordings = keep == "failed" and test.get("outcome") in ("passed", "skipped")
    if drop_recordings:
        trace["artifacts"].update(recording=None, caller=None, agent=None)
    # redacted once; the same text goes to trace.json and, parsed, to the JSONL/report/OTel
    text = dumps(trace, secrets)
    if rec.artifacts_dir:
        folder = Path(rec.artifacts_dir)
        try:
            if drop_recordings:
                for name in RECORDING_FILES:
                    (folder / name).unlink(missing_ok=True)
            atomic_write_text(folder / TRACE_FILE, text)
        except OSError as exc:  # disk full, read-only: the call's result stands, the summary says so
            summary.setdefault("artifacts_error", f"{type(exc).__name__}: {exc}")
    return summary, dict(json.loads(text))


class _CallSnapshot:
    """What :func:`finish_call` reads of a call, copied from a call that is still running (its
    record and recording keep growing on the event loop's thread while this one reads them).
    """

    def __init__(self, call: Any, record: Any, recording: Any) -> None:
        self.record = record
        self.caller = None if recording is None else _RecordingHolder(recording)
        self.limits = dict(getattr(call, "limits", {}) or {})
        self.timings = dict(getattr(call, "timings", {}) or {})
        self.condition_kinds = tuple(getattr(call, "condition_kinds", ()) or ())
        self.reconnects = (len(record.reconnects), sum(1 for r in record.reconnects if r.get("ok")))
        self.artifacts_error: str | None = None


class _RecordingHolder:
    """Stands in for the caller: only its ``recording`` is read."""

    def __init__(self, recording: Any) -> None:
        self.recording = recording


def _copy_record(record: Any, attempts: int = 5) -> Any:
    """A deep copy of a record another thread may be appending to (a dict that changes size
    while it is copied raises RuntimeError: try again, a few times).
    """
    import copy

    for attempt in range(attempts):
        try:
            return copy.deepcopy(record)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def finish_interrupted_call(
    call: Any,
    *,
    nodeid: str,
    outcome: Mapping[str, Any],
    secrets: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write a call's artifacts when the test process is about to end under it (pytest-timeout's
    thread method calls ``os._exit``): ``call.wav`` (and each channel) up to now, ``call.json``,
    ``metrics.json`` and ``trace.json`` with ``outcome``.

    Runs on another thread than the call's event loop, which may be stuck or still running: a
    call that has not finished hanging up is read from a snapshot of its record and recording,
    never through the loop. A call that already hung up wrote its recording; it gets its trace.

    Returns:
        ``(summary, trace)`` as :func:`finish_call`.
    """
    secrets = [s for s in secrets if s]
    if "teardown" in getattr(call, "timings", {}):  # hung up: its recording and call.json are written
        return finish_call(call, nodeid=nodeid, outcome=outcome, keep="all", secrets=secrets)
    from pytest_livekit.call.caller import Recording

    record = _copy_record(call.record)
    recording = None
    if call.caller is not None:
        live = call.caller.recording
        # list() of a list is atomic under the GIL: batches appended meanwhile are simply not in it
        recording = Recording(sent=list(live.sent), heard=list(live.heard))
    snapshot = _CallSnapshot(call, record, recording)
    if record.artifacts_dir:
        folder = Path(record.artifacts_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if recording is not None:
                recording.write(folder)
            record.save(folder / "call.json", secrets=secrets)
        except (OSError, RuntimeError) as exc:  # disk full, read-only (soundfile: RuntimeError)
            snapshot.artifacts_error = f"{type(exc).__name__}: {exc}"
    return finish_call(snapshot, nodeid=nodeid, outcome=outcome, keep="all", secrets=secrets)


def _first_ttfa_ms(metrics: Mapping[str, Any]) -> float | None:
    for turn in metrics.get("turns") or []:
        if turn.get("ttfa") is not None:
            return to_ms(turn["ttfa"])
    return None


def junit_properties(summary: Mapping[str, Any], trace: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Flat ``livekit.*`` properties for the test's JUnit XML entry (units in the names)."""
    m = summary.get("metrics") or {}
    props: dict[str, Any] = {
        "livekit.call_type": summary.get("call_type") or "",
        "livekit.test_outcome": summary.get("outcome_test", ""),
        "livekit.call_outcome": m.get("outcome") or "",
        "livekit.ttfa_ms": _first_ttfa_ms(m),
        "livekit.ttfa_p50_ms": to_ms(m.get("ttfa_p50")),
        "livekit.wer": None if m.get("wer") is None else round(float(m["wer"]), 4),
        "livekit.cer": None if m.get("cer") is None else round(float(m["cer"]), 4),
        "livekit.duplicated_turns": m.get("duplicated_turns"),
        "livekit.tools": ", ".join(summary.get("tools") or []),
        "livekit.breaches": len(summary.get("breaches") or []),
        "livekit.artifacts": summary.get("artifacts") or "",
    }
    if trace is not None:
        props["livekit.room"] = trace["call"]["call_id"]
        props["livekit.seed"] = (trace.get("conditions") or {}).get("seed", "")
    return [(k, "" if v is None else str(v)) for k, v in props.items()]


def write_session_jsonl(path: str | Path, traces: Sequence[Mapping[str, Any]]) -> Path:
    """Write every call's trace of the session as one JSON line each (atomically)."""
    lines = [json.dumps(json_safe(trace), default=str, separators=(",", ":")) + "\n" for trace in traces]
    return atomic_write_text(path, "".join(lines))


def read_session_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The traces of a ``calls.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def remove_previous_calls(artifacts_dir: str | Path) -> int:
    """Delete the call folders of an earlier run under ``artifacts_dir``; returns how many.

    Only folders holding a ``trace.json`` or ``call.json`` (written by this plugin) go; anything
    else a user keeps there stays.
    """
    import shutil

    root = Path(artifacts_dir)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and not folder.is_symlink() and (
            (folder / "trace.json").is_file() or (folder / "call.json").is_file()
        ):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
