"""Calibration as a benchmark: how far off is the caller's TTFA, once the transport floor is taken out?

The agents (``tests/agents/calibration_agent.py``) answer every caller tone with a tone after a
known delay and log the real send time of each answer on the machine's monotonic clock; the caller
times the end of its speech on the same clock in its own process. Per answer,
``answer_offsets`` gives TTFA (``time_to_first_audio`` semantics: end of audible caller speech to
the first audible agent frame, caller's vantage point) minus the agent's real answer delay: the
downlink plus the measuring error. Per call the floor is the median of its offsets; the error of
an answer is its distance to the nearer offset of the answers before and after it
(``answer_errors``: the downlink re-settles in 10-60 ms steps during a call, real latency the
caller hears, so a distance to the call's median would count it). A perfect instrument has error
0 whatever the agent's stalls cost, because the stalls move the real send time, which is known.
The ``drift`` column shows the plateaus: the largest |offset - floor of its call|.

Run from the repository root, inside the test network namespace:

    scripts/netns-run python3 benchmarks/calibration.py [--answers 8] [--rounds 3] [--rows worker]
    scripts/netns-run python3 benchmarks/calibration.py --quick      # 4 answers, 1 round: a smoke run
    scripts/netns-run python3 benchmarks/calibration.py --wire       # + where the offsets go (root)

Rows: {in-process, worker} x {idle agent quiet (reference), working agent quiet, working agent with
one core busy, 4 and 8 concurrent calls (working agent; ``--concurrent-agent idle`` for the idle
one)}. The working agent (``working_entrypoint``) stalls its event loop with CPU work (40 ms every
200 ms) and holds the GIL from a thread (30 ms of every 50 ms), like a hand-written local STT.
In-process it shares this process (and its one GIL) with the test and every other in-process
agent; in worker mode it runs in its own livekit-agents job process (started through a wrapper
here that connects the job's room first: the calibration agents rely on the in-process runner
for that). "one core busy": a separate process spins ``while True: pass`` for the row.
"N concurrent": N calls at once (asyncio.gather), each its own room and agent. Each row is run
``--rounds`` times in sequence and its calls pooled. Each call: 2 unscored warm-up answers (the
jitter buffer settles), then ``--answers`` scored answers at delays 0.2/0.5/0.8/1.1 s (cycled).

Columns (one table):

    row            agent mode, agent, load
    calls          calls run (rounds x concurrent calls)
    answers        scored answers with an offset (missing: scored turns without one)
    floor ms       median over calls of each call's floor (median offset): the downlink, ms
    err p50/p95/max  distance of each scored answer's offset to its nearer neighbour's, ms
                   (p95: nearest rank, as tests/integration/test_calibration.py)
    drift ms       the largest |offset - its call's floor| in the row: how far the downlink
                   re-settled during a call (real latency, not scored)
    clock misses   frames the caller sent or received > 20 ms late (sum over calls)
    failures       calls that raised (first error printed under the table; a worker call that
                   fails with "no agent joined" on a busy machine is livekit-server refusing the job:
                   it gives none to a worker reporting load >= 1.0, and livekit-agents reports the
                   machine's CPU use as the load; the count of refusals is printed)
    goal           p95 <= 10 ms (quiet rows) or <= 20 ms (every other row): yes / NO

With ``--wire``, a second table splits each scored answer's offset at the wire (``_wire.py``: a
packet capture on the namespace's loopback, kernel times on the same monotonic clock): the
agent's own send path (its first loud packet minus its logged answer time), livekit-server's
forwarding, and the caller's part (its heard time minus that packet's arrival: the jitter
buffer's playout and the caller's timestamping), p50/p95/max each; and ``wire err``, the error
column recomputed with the agent's first packet on the wire as the answer's real time.

All numbers are measured in this one run on this machine; other load on the machine shows up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:  # imported as benchmarks.calibration (by a worker)
    sys.path.insert(1, str(ROOT / "benchmarks"))

from _table import print_grid  # noqa: E402
from _wire import WireAnswer, WireCapture, split_answers  # noqa: E402

from pytest_livekit.agent.in_process import AgentTarget, resolve_agent_target  # noqa: E402
from pytest_livekit.agent.worker import AgentWorker  # noqa: E402
from pytest_livekit.audio import CALL_SAMPLE_RATE, CallerAudio  # noqa: E402
from pytest_livekit.call.caller import stop_caller_host  # noqa: E402
from pytest_livekit.call.livekit_call import LivekitCall  # noqa: E402
from pytest_livekit.server.binary import LivekitServer, find_server_binary  # noqa: E402

IDLE_AGENT = "tests.agents.calibration_agent:entrypoint"
WORKING_AGENT = "tests.agents.calibration_agent:working_entrypoint"
#: Unscored answers at the start of each call (as tests/integration/test_calibration.py): the
#: receiver's jitter buffer starts with a larger delay and settles within ~2 s.
WARMUP = 2
#: Goal for the error p95: quiet rows, every other row (seconds).
GOAL_QUIET_S = 0.010
GOAL_LOADED_S = 0.020
#: Seconds to wait for each answer to be heard.
ANSWER_TIMEOUT_S = 10.0
#: Seconds per call beyond its answers (join, agent start, teardown) before it is abandoned.
CALL_SLACK_S = 90.0

T = TypeVar("T")


# -- shared helpers (benchmarks/concurrency.py imports these) ------------------------------------


def agent_spec(spec: str, mode: str) -> str:
    """The spec to run calibration agent ``spec`` with in ``mode`` (the same in both modes)."""
    return spec


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(value: float | None, digits: int = 1) -> str:
    """Seconds as milliseconds for a table cell (``n/a`` for None)."""
    return "n/a" if value is None else f"{value * 1000:.{digits}f}"


def short_error(exc: BaseException) -> str:
    """One line naming an exception (its first message line, cut)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def tone_clip() -> CallerAudio:
    """The caller's 0.4 s, 440 Hz tone (as tests/integration/test_calibration.py)."""
    import numpy as np

    t = np.arange(int(0.4 * CALL_SAMPLE_RATE)) / CALL_SAMPLE_RATE
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return CallerAudio(pcm=pcm, source="tone:440Hz")


def set_calibration_log(path: Path) -> None:
    """Make every calibration agent started from now on (in-process, or in a worker started
    later: it inherits the environment) log its answers to ``path``.
    """
    from tests.agents.calibration_agent import LOG_ENV

    os.environ[LOG_ENV] = str(path)


class Agents:
    """Agent targets (in-process) and workers (worker mode) per spec, started on first use.

    Args:
        server: the running server.
        log_dir: folder for the worker logs.
    """

    def __init__(self, server: LivekitServer, log_dir: Path) -> None:
        self.server = server
        self.log_dir = log_dir
        self._targets: dict[str, AgentTarget] = {}
        self._workers: dict[str, AgentWorker] = {}

    def target(self, spec: str) -> AgentTarget:
        """The resolved agent target for ``spec`` (imported into this process once)."""
        if spec not in self._targets:
            self._targets[spec] = resolve_agent_target(spec, rootdir=ROOT)
        return self._targets[spec]

    async def worker(self, spec: str) -> AgentWorker:
        """The running worker for ``spec``; started (until registered) on first use."""
        worker = self._workers.get(spec)
        if worker is None or worker.pid is None:
            name = f"bench-{spec.rpartition(':')[2].replace('_', '-')}-{os.getpid()}-{len(self._workers)}"
            worker = AgentWorker(
                spec,
                url=self.server.url,
                api_key=self.server.api_key,
                api_secret=self.server.api_secret,
                agent_name=name,
                cwd=ROOT,
                log_path=self.log_dir / f"worker-{name}.log",
                startup_timeout=60,
            )
            self._workers[spec] = worker
            await asyncio.to_thread(worker.start)  # blocks until registered: keep the loop free
        return worker

    async def for_mode(self, spec: str, mode: str) -> tuple[AgentTarget, AgentWorker | None]:
        """``(target, worker)`` for a LivekitCall in ``mode`` (``in-process`` or ``worker``)."""
        spec = agent_spec(spec, mode)
        return self.target(spec), (await self.worker(spec) if mode == "worker" else None)

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the running workers."""
        return [w.pid for w in self._workers.values() if w.pid is not None]

    def stop(self) -> None:
        """Stop every worker started here."""
        for worker in self._workers.values():
            with contextlib.suppress(Exception):
                worker.stop()
        self._workers.clear()


def dispatch_refusals(server: LivekitServer) -> int:
    """How often the server found no worker to give a room job to, from its log.

    livekit-server gives a job only to a worker whose reported load is below 1.0 (affinity
    ``max(0, 1 - load)``); livekit-agents reports the machine's CPU use as its load, so on a
    machine whose CPUs are all busy a worker gets no jobs ("no servers available") and the call
    fails with "no agent joined".
    """
    try:
        text = server.log_path.read_text(errors="replace")
    except (OSError, RuntimeError):
        return 0
    return sum(1 for line in text.splitlines() if "failed to send job request" in line and "JT_ROOM" in line)


@dataclass
class CalibrationResult:
    """One calibration call: its scored offsets (TTFA minus the real answer delay, seconds)."""

    offsets: list[float | None] = field(default_factory=list)
    """Per scored answer (warm-up answers dropped); None where an answer had no offset."""
    clock_misses: int = 0
    """Frames the caller sent or received > 20 ms late."""
    error: str | None = None
    """Why the call failed (None: it completed)."""
    wire: list[WireAnswer] = field(default_factory=list)
    """Per scored answer, its offset split at the wire (``--wire`` only)."""

    @property
    def measured(self) -> list[float]:
        """The offsets that exist."""
        return [o for o in self.offsets if o is not None]

    @property
    def floor(self) -> float | None:
        """Median offset: this call's floor (the downlink)."""
        values = self.measured
        return statistics.median(values) if values else None

    @property
    def errors(self) -> list[float]:
        """Per scored answer, the distance to its nearer neighbour's offset, seconds."""
        from tests.agents.calibration_agent import answer_errors

        return answer_errors(self.measured)

    @property
    def drift(self) -> float | None:
        """The largest |offset - floor| of this call, seconds: how far the downlink re-settled."""
        floor = self.floor
        return None if floor is None else max(abs(o - floor) for o in self.measured)


async def bounded(coro: Awaitable[T], timeout: float, what: str) -> T:
    """Await ``coro`` for at most ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise TimeoutError(f"{what} took more than {timeout:.0f} s") from None


async def calibration_call(
    server: LivekitServer,
    target: AgentTarget,
    *,
    worker: AgentWorker | None,
    answers: int,
    log_path: Path,
    name: str,
    wire: WireCapture | None = None,
) -> CalibrationResult:
    """One call to a calibration agent: WARMUP + ``answers`` tone answers; never raises. With
    ``wire``, each scored answer's offset is also split at the wire (:mod:`_wire`).
    """
    from tests.agents.calibration_agent import answer_offsets

    call = LivekitCall(server.url, server.api_key, server.api_secret, agent=target, name=name, worker=worker)
    result = CalibrationResult()

    async def run() -> None:
        async with call:
            for _ in range(WARMUP + answers):
                await call.speak(tone_clip())
                await call.wait_for_agent_audio(timeout=ANSWER_TIMEOUT_S)

    try:
        await bounded(run(), CALL_SLACK_S + (WARMUP + answers) * (ANSWER_TIMEOUT_S + 2), f"call {name}")
    except Exception as exc:  # noqa: BLE001 - a failed call is a result of the benchmark
        result.error = short_error(exc)
    result.clock_misses = len(call.record.clock_misses)
    if result.error is None and call.caller is not None:
        result.offsets = answer_offsets(call.record, call.caller.t0, log_path)[WARMUP:]
    if wire is not None and result.error is None and call.caller is not None:
        sent, heard = _answer_times(call, log_path)
        result.wire = split_answers(sent, heard, wire.streams())[WARMUP:]
    return result


def _answer_times(call: LivekitCall, log_path: Path) -> tuple[list[float], list[float | None]]:
    """Per caller turn with a logged answer: the agent's logged answer time and the time the
    caller heard it (monotonic seconds; None where no TTFA).
    """
    import json

    from pytest_livekit.metrics.turns import time_to_first_audio

    assert call.caller is not None
    t0, rec = call.caller.t0, call.record
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    sent = [a["sent"] for a in map(json.loads, filter(str.strip, lines)) if a["room"] == rec.call_id]
    heard: list[float | None] = []
    for k, turn in enumerate(rec.caller_turns[: len(sent)]):
        ttfa = time_to_first_audio(rec, k)
        end = turn.speech_ended_at if turn.speech_ended_at is not None else turn.ended_at
        heard.append(None if ttfa is None or end is None else t0 + end + ttfa)
    return sent[: len(heard)], heard


@dataclass
class RowStats:
    """Pooled figures of several calibration calls (seconds)."""

    calls: int
    answers: int
    missing: int
    floor: float | None
    p50: float | None
    p95: float | None
    max: float | None
    drift: float | None
    clock_misses: int
    failures: int
    first_error: str | None
    wire: WireStats | None = None


@dataclass
class WireStats:
    """A row's offsets split at the wire (``--wire``), pooled over its calls (seconds)."""

    answers: int
    """Scored answers whose split was found (the agent's and the caller's packets)."""
    agent_out: list[float]
    sfu: list[float]
    caller: list[float]
    errors: list[float]
    """Per answer, its wire offset's distance to its nearer neighbour's in the same call: the
    error with the agent's own send path taken out."""


def summarize_wire(results: list[CalibrationResult]) -> WireStats | None:
    """Pool the wire splits of a row's calls; None when the row ran without ``--wire``."""
    from tests.agents.calibration_agent import answer_errors

    if not any(r.wire for r in results):
        return None
    split = [w for r in results for w in r.wire]
    errors: list[float] = []
    for r in results:
        errors += answer_errors([o for o in (w.wire_offset for w in r.wire) if o is not None])
    return WireStats(
        answers=sum(1 for w in split if w.wire_offset is not None and w.agent_out is not None),
        agent_out=[w.agent_out for w in split if w.agent_out is not None],
        sfu=[w.sfu for w in split if w.sfu is not None],
        caller=[w.caller for w in split if w.caller is not None],
        errors=errors,
    )


def summarize(results: list[CalibrationResult]) -> RowStats:
    """Pool the calls' errors (each against its own call's floor)."""
    errors = [e for r in results for e in r.errors]
    floors = [f for r in results if (f := r.floor) is not None]
    drifts = [d for r in results if (d := r.drift) is not None]
    failed = [r for r in results if r.error is not None]
    return RowStats(
        calls=len(results),
        answers=sum(len(r.measured) for r in results),
        missing=sum(len(r.offsets) - len(r.measured) for r in results),
        floor=statistics.median(floors) if floors else None,
        p50=percentile(errors, 0.50),
        p95=percentile(errors, 0.95),
        max=max(errors) if errors else None,
        drift=max(drifts) if drifts else None,
        clock_misses=sum(r.clock_misses for r in results),
        failures=len(failed),
        first_error=failed[0].error if failed else None,
        wire=summarize_wire(results),
    )


@contextlib.contextmanager
def busy_core() -> Any:
    """One core kept busy by another process for the duration of the block."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # noqa: S603
    try:
        time.sleep(0.2)  # spinning before the row starts
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- the benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the table."""

    mode: str
    """``in-process`` or ``worker``."""
    agent: str
    """``idle`` or ``working``."""
    load: str
    """``quiet``, ``one core busy`` or ``<n> concurrent``."""
    concurrent: int = 1

    @property
    def label(self) -> str:
        """``mode, agent, load``."""
        return f"{self.mode}, {self.agent} agent, {self.load}"

    @property
    def spec(self) -> str:
        """The agent's ``module:attribute`` (in-process form)."""
        return IDLE_AGENT if self.agent == "idle" else WORKING_AGENT

    @property
    def goal(self) -> float:
        """The row's p95 goal in seconds."""
        return GOAL_QUIET_S if self.load == "quiet" else GOAL_LOADED_S


def all_rows(concurrent_agent: str = "working") -> list[Row]:
    """Every row, in table order (``concurrent_agent``: the agent of the concurrent rows)."""
    rows = []
    for mode in ("in-process", "worker"):
        rows += [
            Row(mode, "idle", "quiet"),
            Row(mode, "working", "quiet"),
            Row(mode, "working", "one core busy"),
            Row(mode, concurrent_agent, "4 concurrent", 4),
            Row(mode, concurrent_agent, "8 concurrent", 8),
        ]
    return rows


async def run_row(
    row: Row, agents: Agents, *, answers: int, rounds: int, log_path: Path, wire: WireCapture | None = None
) -> RowStats:
    """Run one row: ``rounds`` times ``row.concurrent`` calls at once."""
    target, worker = await agents.for_mode(row.spec, row.mode)
    results: list[CalibrationResult] = []
    with busy_core() if row.load == "one core busy" else contextlib.nullcontext():
        for r in range(rounds):
            results += await asyncio.gather(
                *(
                    calibration_call(
                        agents.server, target, worker=worker, answers=answers, log_path=log_path,
                        name=f"calib-{row.mode}-{row.agent}-r{r}-c{i}", wire=wire,
                    )
                    for i in range(row.concurrent)
                )
            )
    return summarize(results)


def row_cells(row: Row, stats: RowStats) -> list[str]:
    """The table cells of one row."""
    answers = f"{stats.answers}" + (f" ({stats.missing} missing)" if stats.missing else "")
    if stats.p95 is None:
        goal = "n/a"
    else:
        goal = f"{'yes' if stats.p95 <= row.goal and not stats.failures else 'NO'} (<= {row.goal * 1000:.0f})"
    return [
        row.label, str(stats.calls), answers, ms(stats.floor), ms(stats.p50), ms(stats.p95), ms(stats.max), ms(stats.drift),
        str(stats.clock_misses), str(stats.failures), goal,
    ]


HEADERS = ["row", "calls", "answers", "floor ms", "err p50", "err p95", "err max", "drift ms", "clock misses", "failures", "goal"]

WIRE_HEADERS = [
    "row", "split", "agent out p50/p95/max", "sfu p50/p95/max", "caller p50/p95/max", "wire err p50/p95/max",
]


def wire_cells(row: Row, stats: RowStats) -> list[str]:
    """The ``--wire`` table cells of one row (ms)."""
    w = stats.wire

    def three(values: list[float]) -> str:
        if not values:
            return "n/a"
        return "/".join(ms(v) for v in (percentile(values, 0.5), percentile(values, 0.95), max(values)))

    if w is None:
        return [row.label, "0", "n/a", "n/a", "n/a", "n/a"]
    return [row.label, str(w.answers), three(w.agent_out), three(w.sfu), three(w.caller), three(w.errors)]


async def run(args: argparse.Namespace, log_dir: Path) -> tuple[list[tuple[Row, RowStats]], int]:
    """Start the server, run the selected rows, stop everything."""
    every = all_rows(args.concurrent_agent)
    rows = [r for r in every if not args.rows or any(s.lower() in r.label.lower() for s in args.rows)]
    if not rows:
        raise SystemExit(f"no row matches {args.rows}; rows: {[r.label for r in every]}")
    log_path = log_dir / "answers.jsonl"
    set_calibration_log(log_path)  # before any worker starts: workers inherit the environment
    out: list[tuple[Row, RowStats]] = []
    server = LivekitServer(find_server_binary(root=ROOT))
    try:
        with server:
            agents = Agents(server, log_dir)
            wire = None
            if args.wire:
                assert server.ports is not None
                try:
                    wire = WireCapture(server.ports.rtc_udp, log_dir).start()
                except PermissionError:
                    raise SystemExit("--wire captures packets: run as root inside scripts/netns-run") from None
            try:
                for row in rows:
                    t0 = time.monotonic()
                    stats = await run_row(
                        row, agents, answers=args.answers, rounds=args.rounds, log_path=log_path, wire=wire
                    )
                    print(f"  {row.label}: p95 {ms(stats.p95)} ms, {stats.failures} failed "
                          f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
                    out.append((row, stats))
            finally:
                if wire is not None:
                    wire.stop()
                agents.stop()
                stop_caller_host()
                refused = dispatch_refusals(server)
    finally:
        server.cleanup_files()
    return out, refused


def main() -> None:
    """Parse options, run the rows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=8, help="scored answers per call (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="sequential repeats of each row (default 3)")
    parser.add_argument(
        "--rows", action="append", default=[], metavar="SUBSTRING",
        help="run only rows whose label contains SUBSTRING (repeatable; e.g. 'worker', 'quiet')",
    )
    parser.add_argument(
        "--concurrent-agent", choices=("working", "idle"), default="working",
        help="agent of the 4/8 concurrent rows (default working; in-process, N working agents hold "
        "the one GIL N x 60 %% of the time)",
    )
    parser.add_argument("--quick", action="store_true", help="4 answers per call, 1 round")
    parser.add_argument(
        "--wire", action="store_true",
        help="also capture the calls' packets (root, inside scripts/netns-run) and split each "
        "offset at the wire: the agent's send path, the server, the caller (second table)",
    )
    args = parser.parse_args()
    if args.quick:
        args.answers, args.rounds = min(args.answers, 4), 1
    args.answers = max(1, min(args.answers, 100))
    args.rounds = max(1, min(args.rounds, 20))

    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        results, refused = asyncio.run(run(args, Path(tmp)))
    print(f"calibration: TTFA error after the transport floor, ms ({args.answers} scored answers per "
          f"call after {WARMUP} warm-up, {args.rounds} round(s) per row, {os.cpu_count()} CPUs)")
    print_grid(HEADERS, [row_cells(row, stats) for row, stats in results])
    if args.wire:
        print()
        print_grid(
            WIRE_HEADERS, [wire_cells(row, stats) for row, stats in results],
            title="split at the wire, ms (agent out: its first loud packet minus its logged answer time; "
            "sfu: server in to out; caller: heard minus the packet's arrival; wire err: as err, "
            "offsets from the agent's first packet)",
        )
    errors = [(row, s.first_error) for row, s in results if s.first_error]
    for row, error in errors:
        print(f"  failed call in '{row.label}': {error}")
    if refused:
        print(f"  livekit-server found no available worker for a room job {refused} time(s): a worker "
              "whose reported load (the machine's CPU use) is >= 1.0 gets no jobs")
    met = sum(1 for row, s in results if s.p95 is not None and s.p95 <= row.goal and not s.failures)
    print(f"goal (p95 <= {GOAL_QUIET_S * 1000:.0f} ms quiet, <= {GOAL_LOADED_S * 1000:.0f} ms otherwise): "
          f"{met}/{len(results)} rows meet it")


if __name__ == "__main__":
    main()
