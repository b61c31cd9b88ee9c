"""Many calls at once: latency, quality, cost and per-call overhead by concurrency level.

Runs 1, 2, 4, 8 (then 12 and 16 while it holds) concurrent calls of the example agent
(``example_suite.support_agent:server``, the refund script: "I want a refund for order one two
three four", "Yes please refund it", each ``say`` + ``wait_for_agent_reply``), in-process (every
agent in this process's one event loop, as the plugin's default mode) and/or in worker mode (a
real livekit-agents worker: one job process per call). With every round of a level one extra
calibration call runs alongside (``tests/agents/calibration_agent.py``'s working agent by
default, answering tones at known delays until the example calls are done) and scores the
TTFA measuring error under that load, as ``benchmarks/calibration.py`` does. A level stops the
escalation when a call fails or its TTFA p95 exceeds 3x the single-call figure; cap 16.

Before the levels, per mode, a pytest run of a one-call test is spawned in ``example_suite``
(its pyproject config, a cached server binary, artifacts in a temporary folder) to measure how
soon after pytest's start the first call starts.

Run from the repository root, inside the test network namespace:

    scripts/netns-run python3 benchmarks/concurrency.py [--agent-mode in-process|worker|both]
        [--levels 1,2,4,8,12,16] [--rounds 2] [--calibration working|idle|none] [--no-first-call]
    scripts/netns-run python3 benchmarks/concurrency.py --quick      # levels 1,2; 1 round: a smoke run

Main table, one per agent mode, one row per level (times in ms unless marked s):

    level        concurrent example calls (each round: that many calls at once)
    calls        example calls run at this level (level x rounds)
    ttfa p50/p95 time to first audio over every caller turn of every call (caller's vantage point:
                 end of caller speech on the wire to the first agent audio heard), ms
    wer          pooled word error rate of the agent's raw STT over all turns (errors / words)
    cal p95      the calibration call's TTFA error p95 after its floor, ms (n: scored answers).
                 In-process, the working calibration agent shares this process with the example
                 agents and holds its GIL 60 % of the time: it slows them too (--calibration idle
                 or none to see the example agents alone)
    cpu/call s   CPU seconds of the whole process tree (this process with its in-process agents,
                 the caller process, livekit-server, workers and their job processes) over the
                 level, divided by the example calls (the calibration call's share included; run
                 --calibration none for the example calls alone)
    wall/call s  the level's wall time (until its example calls ended) / example calls
    ovh p50 s    per-call overhead, median: a call's wall time (``async with LivekitCall``, start
                 to after close) minus its caller audio (clip durations on the wire) minus the
                 agent's answer time (each ``say`` returning to ``wait_for_agent_reply``
                 returning); goal <= 0.3 s
    setup s      median of ``call.timings['setup']`` (caller joins, agent starts and listens)
    say s        median over calls of the time in ``say`` beyond the audio itself (synthesis with
                 espeak-ng, waiting for the agent to listen)
    teardown s   median of ``call.timings['teardown']``
                 (setup + say + teardown + the rest of the test's own code = the overhead)
    fail         calls that raised (example + calibration). Worker mode on a machine whose CPUs
                 are all busy: livekit-server gives no job to a worker reporting load >= 1.0
                 (livekit-agents reports the machine's CPU use), the call fails with "no agent
                 joined"; the refusals in the server log are counted and named as the limit
    misses       caller clock misses (frames sent or received > 20 ms late), all calls

Second table, where the time went (the same levels):

    machine cpu  share of all CPUs busy over the level (whole machine: other load shows up), %
    bench/caller/server/workers   cores used on average by this process (and the processes it
                 started outside the roles below), the caller process, livekit-server, the
                 workers with their job processes
    busiest      the single process using the most CPU, in cores
    loop lag p95 lateness of a 50 ms timer in this process's event loop, ms (in-process agents,
                 the calls' control and the caller's command channel all share that loop)

Then: the largest level whose TTFA p95 stays within 20 % of the single-call p95 (contiguously
from level 1, no failures) and what limits the next level (failures, the shared event loop, the
machine's CPUs, one saturated process). All numbers are measured in this one run on this machine.
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
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(1, str(ROOT / "benchmarks"))

from _table import print_grid  # noqa: E402
from calibration import (  # noqa: E402
    IDLE_AGENT,
    WARMUP,
    WORKING_AGENT,
    Agents,
    CalibrationResult,
    bounded,
    dispatch_refusals,
    ms,
    percentile,
    set_calibration_log,
    short_error,
    summarize,
    tone_clip,
)

from pytest_livekit.agent.in_process import AgentTarget  # noqa: E402
from pytest_livekit.agent.worker import AgentWorker  # noqa: E402
from pytest_livekit.call.caller import caller_host, stop_caller_host  # noqa: E402
from pytest_livekit.call.livekit_call import LivekitCall  # noqa: E402
from pytest_livekit.metrics.turns import time_to_first_audio, user_transcript, word_error_rate  # noqa: E402
from pytest_livekit.server.binary import LivekitServer, find_server_binary  # noqa: E402

AGENT = "example_suite.support_agent:server"
SCRIPT = ("I want a refund for order one two three four", "Yes please refund it")
SUITE = ROOT / "example_suite"
LEVELS = (1, 2, 4, 8, 12, 16)
MAX_LEVEL = 16
#: A level within this factor of the single-call TTFA p95 "holds".
HOLD_FACTOR = 1.2
#: Escalation stops after a level above this factor of the single-call TTFA p95.
STOP_FACTOR = 3.0
OVERHEAD_GOAL_S = 0.3
FIRST_CALL_GOAL_S = 3.0
#: Bound on one example call (join, two turns, teardown), seconds.
CALL_TIMEOUT_S = 180.0
#: Bound on the calibration call's scored answers (it stops when the example calls are done).
CAL_MAX_ANSWERS = 40
#: Event-loop lag probe period, seconds.
LAG_PERIOD_S = 0.05


# -- one example call ----------------------------------------------------------------------------


@dataclass
class ExampleResult:
    """One example call's measurements (seconds)."""

    ttfa: list[float | None] = field(default_factory=list)
    word_errors: int = 0
    words: int = 0
    wall: float = 0.0
    audio: float = 0.0
    answer: float = 0.0
    say: float = 0.0
    setup: float | None = None
    teardown: float | None = None
    clock_misses: int = 0
    error: str | None = None

    @property
    def overhead(self) -> float:
        """Wall time minus caller audio minus the agent's answer time."""
        return self.wall - self.audio - self.answer


async def example_call(
    server: LivekitServer, target: AgentTarget, worker: AgentWorker | None, name: str
) -> ExampleResult:
    """One call of the refund script; never raises (a failure is recorded)."""
    call = LivekitCall(server.url, server.api_key, server.api_secret, agent=target, name=name, worker=worker)
    result = ExampleResult()

    async def run() -> None:
        async with call:
            for text in SCRIPT:
                t0 = time.monotonic()
                await call.say(text)
                said = time.monotonic()
                result.say += said - t0
                await call.wait_for_agent_reply()
                result.answer += time.monotonic() - said

    start = time.monotonic()
    try:
        await bounded(run(), CALL_TIMEOUT_S, f"call {name}")
    except Exception as exc:  # noqa: BLE001 - a failed call is a result of the benchmark
        result.error = short_error(exc)
    result.wall = time.monotonic() - start
    record = call.record
    result.clock_misses = len(record.clock_misses)
    result.setup = call.timings.get("setup")
    result.teardown = call.timings.get("teardown")
    result.audio = sum(t.duration or 0.0 for t in record.caller_turns)
    for i, turn in enumerate(record.caller_turns):
        result.ttfa.append(time_to_first_audio(record, i))
        if turn.text:
            scored = word_error_rate(turn.text, user_transcript(record, i))
            result.word_errors += scored.substitutions + scored.deletions + scored.insertions
            result.words += len(scored.reference.split())
    return result


async def calibration_until(
    server: LivekitServer,
    target: AgentTarget,
    worker: AgentWorker | None,
    name: str,
    log_path: Path,
    done: asyncio.Event,
) -> CalibrationResult:
    """A calibration call that answers until ``done`` is set (at least WARMUP + 2 answers, at
    most WARMUP + CAL_MAX_ANSWERS); never raises.
    """
    from tests.agents.calibration_agent import answer_offsets

    call = LivekitCall(server.url, server.api_key, server.api_secret, agent=target, name=name, worker=worker)
    result = CalibrationResult()

    async def run() -> None:
        async with call:
            for k in range(WARMUP + CAL_MAX_ANSWERS):
                if k >= WARMUP + 2 and done.is_set():
                    break
                await call.speak(tone_clip())
                await call.wait_for_agent_audio(timeout=10)

    try:
        await bounded(run(), CALL_TIMEOUT_S + 60, f"call {name}")
    except Exception as exc:  # noqa: BLE001
        result.error = short_error(exc)
    result.clock_misses = len(call.record.clock_misses)
    if result.error is None and call.caller is not None:
        result.offsets = answer_offsets(call.record, call.caller.t0, log_path)[WARMUP:]
    return result


# -- CPU accounting ------------------------------------------------------------------------------

ROLES = ("bench", "caller", "server", "workers")


@dataclass
class CpuSnapshot:
    """CPU times of this process's tree at one moment.

    ``procs`` maps ``(pid, create time)`` to ``(role, own cpu s, reaped children's cpu s, name)``.
    A process that ends during a level is counted through its parent's reaped-children time
    (``cutime``/``cstime``), so short-lived job and espeak processes are not lost.
    """

    at: float
    procs: dict[tuple[int, float], tuple[str, float, float, str]]
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, roots: dict[int, str]) -> CpuSnapshot:
        """Snapshot now; ``roots`` maps a pid to the role of its whole tree (default: bench)."""
        import psutil

        role_of: dict[int, str] = {}
        for pid, role in roots.items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    role_of[p.pid] = role
        me = psutil.Process()
        procs: dict[tuple[int, float], tuple[str, float, float, str]] = {}
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                with p.oneshot():
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                    procs[key] = (
                        role_of.get(p.pid, "bench"), t.user + t.system,
                        t.children_user + t.children_system, p.name(),
                    )
        m = psutil.cpu_times()
        idle = m.idle + getattr(m, "iowait", 0.0)
        total = sum(m) - getattr(m, "guest", 0.0) - getattr(m, "guest_nice", 0.0)  # guest is in user
        return cls(time.monotonic(), procs, total - idle, total)


@dataclass
class CpuUse:
    """CPU used between two snapshots."""

    wall: float
    by_role: dict[str, float]
    """CPU seconds per role."""
    busiest: tuple[str, float]
    """(``role:name pid``, cores) of the single busiest process."""
    machine: float
    """Share of all CPUs busy (0..1)."""

    @property
    def total(self) -> float:
        """CPU seconds of every role."""
        return sum(self.by_role.values())

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
        """The CPU used from snapshot ``a`` to snapshot ``b``."""
        by_role = dict.fromkeys(ROLES, 0.0)
        busiest = ("n/a", 0.0)
        wall = max(1e-6, b.at - a.at)
        for key, (role, own, reaped, name) in b.procs.items():
            _, own0, reaped0, _ = a.procs.get(key, (role, 0.0, 0.0, name))
            by_role[role] = by_role.get(role, 0.0) + (own - own0) + (reaped - reaped0)
            cores = (own - own0) / wall
            if cores > busiest[1]:
                busiest = (f"{role}:{name} {key[0]}", cores)
        for key, (role, own0, reaped0, _) in a.procs.items():
            if key not in b.procs:  # ended: its whole life shows up in its parent's reaped time
                by_role[role] = by_role.get(role, 0.0) - own0 - reaped0
        machine_total = b.machine_total - a.machine_total
        machine = (b.machine_busy - a.machine_busy) / machine_total if machine_total > 0 else 0.0
        return cls(wall, by_role, busiest, machine)


class LoopLag:
    """Measures how late a periodic timer fires in the running event loop."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(int(6 * 3600 / LAG_PERIOD_S)):  # cancelled by stop(); bounded anyway
            due = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            self.samples.append(max(0.0, loop.time() - due))

    def start(self) -> None:
        """Start probing in the running loop."""
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float | None:
        """Stop; returns the lag p95 in seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return percentile(self.samples, 0.95)


# -- levels --------------------------------------------------------------------------------------


@dataclass
class Level:
    """Everything measured at one concurrency level."""

    n: int
    examples: list[ExampleResult]
    calibrations: list[CalibrationResult]
    wall: float
    cpu: CpuUse
    loop_lag_p95: float | None

    @property
    def ttfas(self) -> list[float]:
        """TTFA of every answered turn of every example call, seconds."""
        return [t for r in self.examples for t in r.ttfa if t is not None]

    @property
    def ttfa_p50(self) -> float | None:
        """Median TTFA, seconds."""
        return percentile(self.ttfas, 0.50)

    @property
    def ttfa_p95(self) -> float | None:
        """TTFA p95 (nearest rank), seconds."""
        return percentile(self.ttfas, 0.95)

    @property
    def failures(self) -> int:
        """Calls that raised (example and calibration)."""
        return sum(1 for r in self.examples if r.error) + sum(1 for r in self.calibrations if r.error)

    @property
    def errors(self) -> list[str]:
        """The failed calls' errors."""
        return [r.error for r in self.examples if r.error] + [r.error for r in self.calibrations if r.error]

    def cells(self) -> list[str]:
        """The main table's cells."""
        ok = [r for r in self.examples if r.error is None]
        words = sum(r.words for r in self.examples)
        wer = f"{sum(r.word_errors for r in self.examples) / words:.2f}" if words else "n/a"
        cal = summarize(self.calibrations) if self.calibrations else None
        cal_cell = "-" if cal is None else f"{ms(cal.p95)} (n={cal.answers})"

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}" if values else "n/a"

        return [
            str(self.n), str(len(self.examples)), ms(self.ttfa_p50, 0), ms(self.ttfa_p95, 0), wer, cal_cell,
            f"{self.cpu.total / max(1, len(self.examples)):.2f}", f"{self.wall / max(1, len(self.examples)):.2f}",
            med([r.overhead for r in ok]), med([r.setup for r in ok if r.setup is not None]),
            med([r.say - r.audio for r in ok]),
            med([r.teardown for r in ok if r.teardown is not None]), str(self.failures),
            str(sum(r.clock_misses for r in self.examples) + sum(r.clock_misses for r in self.calibrations)),
        ]

    def cpu_cells(self) -> list[str]:
        """The CPU table's cells."""
        cores = {role: self.cpu.by_role.get(role, 0.0) / self.cpu.wall for role in ROLES}
        who, busiest = self.cpu.busiest
        return [
            str(self.n), f"{self.cpu.machine * 100:.0f}",
            *(f"{cores[role]:.2f}" for role in ROLES), f"{busiest:.2f} ({who})", ms(self.loop_lag_p95, 0),
        ]


HEADERS = [
    "level", "calls", "ttfa p50", "ttfa p95", "wer", "cal p95", "cpu/call s", "wall/call s", "ovh p50 s",
    "setup s", "say s", "teardown s", "fail", "misses",
]
CPU_HEADERS = ["level", "machine cpu %", *(f"{r} cores" for r in ROLES), "busiest (cores)", "loop lag p95"]


async def run_level(
    n: int, mode: str, agents: Agents, *, rounds: int, cal_spec: str | None, log_path: Path, roots: dict[int, str]
) -> Level:
    """``rounds`` times: ``n`` example calls at once, plus one calibration call alongside."""
    target, worker = await agents.for_mode(AGENT, mode)
    cal = await agents.for_mode(cal_spec, mode) if cal_spec else None
    roots = {**roots, **dict.fromkeys(agents.worker_pids, "workers")}
    examples: list[ExampleResult] = []
    calibrations: list[CalibrationResult] = []
    lag = LoopLag()
    lag.start()
    before = CpuSnapshot.take(roots)
    wall = 0.0
    for r in range(rounds):
        done = asyncio.Event()
        cal_task = (
            asyncio.create_task(
                calibration_until(agents.server, cal[0], cal[1], f"conc-cal-{mode}-L{n}-r{r}", log_path, done)
            )
            if cal
            else None
        )
        t0 = time.monotonic()
        examples += await asyncio.gather(
            *(example_call(agents.server, target, worker, f"conc-{mode}-L{n}-r{r}-c{i}") for i in range(n))
        )
        wall += time.monotonic() - t0
        done.set()
        if cal_task is not None:
            calibrations.append(await cal_task)
    after = CpuSnapshot.take(roots)
    loop_lag = await lag.stop()
    return Level(n, examples, calibrations, wall, CpuUse.between(before, after), loop_lag)


def limit_of(level: Level, mode: str, refused: int) -> str:
    """What most plausibly limits ``level`` (the first level that did not hold)."""
    if level.failures:
        why = f"{level.failures} failed call(s) at level {level.n}: {level.errors[0]}"
        if refused:
            why += (f" [livekit-server refused {refused} room job(s): a worker whose reported load, the "
                    "machine's CPU use, is >= 1.0 gets no jobs]")
        return why
    lag = level.loop_lag_p95 or 0.0
    who, busiest = level.cpu.busiest
    if mode == "in-process" and lag > 0.050:
        return (f"this process's one event loop, shared by all in-process agents: a 50 ms timer fired "
                f"{lag * 1000:.0f} ms late (p95); busiest process {who} at {busiest:.2f} cores")
    if level.cpu.machine >= 0.85:
        return f"the machine's CPUs: {level.cpu.machine * 100:.0f} % of {os.cpu_count()} busy; busiest {who} at {busiest:.2f} cores"
    if busiest >= 0.9:
        return f"one process at a full core: {who} ({busiest:.2f} cores)"
    return (f"no saturation seen (machine {level.cpu.machine * 100:.0f} %, busiest {who} {busiest:.2f} cores, "
            f"loop lag p95 {lag * 1000:.0f} ms): queueing elsewhere")


def verdict(levels: list[Level], mode: str, refused: int, stopped: str) -> list[str]:
    """The summary lines under a mode's tables."""
    if not levels:
        return ["no level ran"]
    base = levels[0].ttfa_p95
    if base is None or levels[0].failures:
        return [f"no level holds: level 1 gave no usable single-call TTFA; limit: {limit_of(levels[0], mode, refused)}"]
    held = levels[0]
    breach: Level | None = None
    for level in levels:
        p95 = level.ttfa_p95
        if level.failures or p95 is None or p95 > HOLD_FACTOR * base:
            breach = level
            break
        held = level
    lines = [
        f"largest level within {round((HOLD_FACTOR - 1) * 100)} % of the single-call TTFA p95 "
        f"({base * 1000:.0f} ms): {held.n} (p95 {ms(held.ttfa_p95, 0)} ms)"
    ]
    if breach is not None:
        lines.append(f"limit at level {breach.n} (p95 {ms(breach.ttfa_p95, 0)} ms): {limit_of(breach, mode, refused)}")
    else:
        lines.append(f"held at every level run ({stopped})")
    overheads = [r.overhead for lv in levels for r in lv.examples if r.error is None]
    if overheads:
        one = [r.overhead for r in levels[0].examples if r.error is None]
        lines.append(
            f"per-call overhead at level 1: median {statistics.median(one):.2f} s (goal <= {OVERHEAD_GOAL_S} s: "
            f"{'met' if statistics.median(one) <= OVERHEAD_GOAL_S else 'NOT met'}); all levels: median "
            f"{statistics.median(overheads):.2f} s, max {max(overheads):.2f} s"
            if one else "per-call overhead at level 1: no completed call"
        )
    return lines


# -- first call after pytest starts --------------------------------------------------------------

FIRST_CALL_TEST = textwrap.dedent(
    '''
    import os
    import time


    async def test_first_call(livekit_call):
        with open(os.environ["PYTEST_LIVEKIT_BENCH_FIRST_CALL"], "w") as f:
            f.write(f"{livekit_call.record.started_at_epoch!r} {time.time()!r}\\n")
        await livekit_call.say("I want a refund for order one two three four")
        await livekit_call.wait_for_agent_reply()
    '''
)


@dataclass
class FirstCall:
    """Seconds from spawning pytest to the first call's start (and to the test body, and the end)."""

    call_start: float | None
    body: float | None
    total: float
    error: str | None


def first_call(binary: Path, mode: str) -> FirstCall:
    """Spawn pytest on a one-call test with the example suite's config; time the first call."""
    with tempfile.TemporaryDirectory(prefix="bench-first-call-") as tmp:
        folder = Path(tmp)
        test = folder / "test_first_call.py"
        test.write_text(FIRST_CALL_TEST)
        out = folder / "started.txt"
        env = {**os.environ, "PYTEST_LIVEKIT_BENCH_FIRST_CALL": str(out)}
        cmd = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
            "-c", str(SUITE / "pyproject.toml"), "--rootdir", str(SUITE),
            f"--livekit-server-binary={binary}", f"--livekit-agent-mode={mode}",
            f"--livekit-artifacts={folder / 'calls'}", f"--livekit-report={folder / 'report.html'}",
            "--livekit-progress=off", str(test),
        ]
        spawned = time.time()
        try:
            proc = subprocess.run(cmd, cwd=SUITE, env=env, capture_output=True, text=True, timeout=300)  # noqa: S603
        except subprocess.TimeoutExpired:
            return FirstCall(None, None, time.time() - spawned, "pytest took more than 300 s")
        total = time.time() - spawned
        error = None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            error = f"pytest exited {proc.returncode}: {' | '.join(tail)[:300]}"
        if not out.exists():
            return FirstCall(None, None, total, error or "the test did not record its start")
        started, body = (float(x) for x in out.read_text().split())
        return FirstCall(started - spawned, body - spawned, total, error)


# -- main ----------------------------------------------------------------------------------------


async def run_mode(
    mode: str, server: LivekitServer, agents: Agents, args: argparse.Namespace, log_path: Path
) -> tuple[list[Level], str]:
    """Warm up, then escalate the levels for one agent mode; returns the levels and why it stopped."""
    cal_spec = {"working": WORKING_AGENT, "idle": IDLE_AGENT}.get(args.calibration)
    target, worker = await agents.for_mode(AGENT, mode)
    warm = await example_call(server, target, worker, f"conc-{mode}-warmup")  # prewarm, decoders
    if warm.error:
        print(f"  warm-up call failed ({mode}): {warm.error}", file=sys.stderr, flush=True)
    if cal_spec:
        await agents.for_mode(cal_spec, mode)  # its worker registered before the clock runs
    host = caller_host()
    roots = {pid: role for pid, role in ((server.pid, "server"), (host.pid, "caller")) if pid is not None}
    levels: list[Level] = []
    stopped = f"cap {args.levels[-1]}"
    for n in args.levels:
        t0 = time.monotonic()
        level = await run_level(n, mode, agents, rounds=args.rounds, cal_spec=cal_spec, log_path=log_path, roots=roots)
        levels.append(level)
        print(f"  {mode} level {n}: ttfa p95 {ms(level.ttfa_p95, 0)} ms, {level.failures} failed "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        base = levels[0].ttfa_p95
        if level.failures:
            stopped = f"stopped after level {n}: failures"
            break
        if base is not None and level.ttfa_p95 is not None and level.ttfa_p95 > STOP_FACTOR * base:
            stopped = f"stopped after level {n}: TTFA p95 > {STOP_FACTOR:.0f}x single call"
            break
    return levels, stopped


async def run(args: argparse.Namespace, log_dir: Path) -> None:
    """Run the selected modes against one server and print their tables."""
    binary = find_server_binary(root=ROOT)
    modes = ["in-process", "worker"] if args.agent_mode == "both" else [args.agent_mode]
    firsts: dict[str, FirstCall] = {}
    if not args.no_first_call:  # first, while nothing else of ours runs
        for mode in modes:
            firsts[mode] = await asyncio.to_thread(first_call, binary, mode)
            print(f"  first call ({mode}): {firsts[mode]}", file=sys.stderr, flush=True)
    log_path = log_dir / "answers.jsonl"
    set_calibration_log(log_path)  # before any worker starts: workers inherit the environment
    results: dict[str, tuple[list[Level], str, int]] = {}
    server = LivekitServer(binary)
    try:
        with server:
            agents = Agents(server, log_dir)
            try:
                for mode in modes:
                    refused_before = dispatch_refusals(server)
                    levels, stopped = await run_mode(mode, server, agents, args, log_path)
                    results[mode] = (levels, stopped, dispatch_refusals(server) - refused_before)
            finally:
                agents.stop()
                stop_caller_host()
    finally:
        server.cleanup_files()

    cal = {"none": "no calibration call"}.get(args.calibration, f"calibration call: {args.calibration} agent")
    for mode, (levels, stopped, refused) in results.items():
        print()
        print_grid(
            HEADERS, [lv.cells() for lv in levels],
            title=f"concurrency, agent mode {mode}: example agent, refund script (2 turns), "
                  f"{args.rounds} round(s) per level, {cal}, {os.cpu_count()} CPUs",
        )
        print()
        print_grid(CPU_HEADERS, [lv.cpu_cells() for lv in levels], title=f"where the time went ({mode})")
        for line in verdict(levels, mode, refused, stopped):
            print(line)
        for lv in levels:
            for error in dict.fromkeys(lv.errors):
                print(f"  level {lv.n} failure: {error}")
    if firsts:
        print()
        for mode, fc in firsts.items():
            start = "n/a" if fc.call_start is None else f"{fc.call_start:.2f} s"
            met = "" if fc.call_start is None else (
                f" (goal <= {FIRST_CALL_GOAL_S:.0f} s: {'met' if fc.call_start <= FIRST_CALL_GOAL_S else 'NOT met'})"
            )
            body = "n/a" if fc.body is None else f"{fc.body:.2f} s"
            print(f"first call after pytest starts ({mode}, cached server): call start {start}{met}, "
                  f"test body {body}, whole pytest run {fc.total:.1f} s" + (f"; {fc.error}" if fc.error else ""))


def _levels(text: str) -> list[int]:
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("levels are positive integers, e.g. 1,2,4,8")
    return [v for v in values if v <= MAX_LEVEL] or [1]


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent-mode", choices=("in-process", "worker", "both"), default="both")
    parser.add_argument("--levels", type=_levels, default=list(LEVELS),
                        help=f"concurrency levels (default {','.join(map(str, LEVELS))}; capped at {MAX_LEVEL})")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per level, pooled (default 2)")
    parser.add_argument("--calibration", choices=("working", "idle", "none"), default="working",
                        help="the calibration agent run alongside each round (default: working)")
    parser.add_argument("--no-first-call", action="store_true", help="skip the first-call-after-pytest-start run")
    parser.add_argument("--quick", action="store_true", help="levels 1,2; 1 round")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.rounds = [lv for lv in args.levels if lv <= 2] or [1], 1
    args.rounds = max(1, min(args.rounds, 10))
    if args.levels[0] != 1:
        args.levels = [1, *args.levels]  # the single-call figure every level is compared with
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
