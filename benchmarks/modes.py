"""Benchmark the server and agent modes: start times, per-call overhead, TTFA in-process vs worker.

Run inside the test network namespace (and with a Docker engine for the docker row):

    scripts/netns-run scripts/with-dockerd python benchmarks/modes.py [--calls 5]

Prints one table. All numbers are measured in this one run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _table import print_table  # noqa: E402  (benchmarks/ is sys.path[0])

from pytest_livekit.agent.in_process import resolve_agent_target  # noqa: E402
from pytest_livekit.agent.worker import AgentWorker  # noqa: E402
from pytest_livekit.call.livekit_call import LivekitCall  # noqa: E402
from pytest_livekit.metrics.turns import time_to_first_audio  # noqa: E402
from pytest_livekit.server.binary import LivekitServer, check_reachable, find_server_binary  # noqa: E402

AGENT = "example_suite.support_agent:server"
UTTERANCE = "I want a refund for order one two three four"


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0] * 1000:.0f} ms"
    return (
        f"median {statistics.median(values) * 1000:.0f} ms, min {min(values) * 1000:.0f}, "
        f"max {max(values) * 1000:.0f} (n={len(values)})"
    )


def server_starts(n: int) -> list[float]:
    """Seconds from spawn to GET / = 200, binary mode."""
    binary = find_server_binary(root=ROOT)
    out = []
    for _ in range(n):
        with LivekitServer(binary) as server:
            assert server.startup_seconds is not None
            out.append(server.startup_seconds)
        server.cleanup_files()
    return out


def docker_starts(n: int) -> list[float]:
    """Seconds from docker run to GET / = 200 (needs a Docker engine with the image)."""
    from pytest_livekit.server.docker import DEFAULT_IMAGE, DockerLivekitServer, docker_image_available

    if not docker_image_available(DEFAULT_IMAGE):
        return []
    out = []
    for _ in range(n):
        with DockerLivekitServer() as server:
            assert server.startup_seconds is not None
            out.append(server.startup_seconds)
    return out


def external_checks(server: LivekitServer, n: int) -> list[float]:
    """Seconds for the external mode's reachability check (nothing is started)."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        check_reachable(server.http_url)
        out.append(time.monotonic() - t0)
    return out


async def calls(server: LivekitServer, n: int, worker: AgentWorker | None) -> dict[str, list[float]]:
    """Place ``n`` identical calls; collect setup, teardown and TTFA (seconds)."""
    target = resolve_agent_target(AGENT, rootdir=ROOT)
    result: dict[str, list[float]] = {"setup": [], "teardown": [], "ttfa": []}
    for i in range(n + 1):  # the first call warms models up (prewarm, decoder); not counted
        call = LivekitCall(
            server.url, server.api_key, server.api_secret, agent=target, name=f"bench-{i}", worker=worker
        )
        async with call:
            await call.say(UTTERANCE)
            await call.wait_for_agent_reply()
        if i == 0:
            continue
        result["setup"].append(call.timings["setup"])
        result["teardown"].append(call.timings["teardown"])
        ttfa = time_to_first_audio(call.record)
        if ttfa is not None:
            result["ttfa"].append(ttfa)
    return result


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    rows.append(("server start, binary", _stats(server_starts(args.starts))))
    docker = docker_starts(max(1, args.starts // 2))
    rows.append(("server start, docker", _stats(docker) if docker else "skipped: no Docker engine/image"))
    binary = find_server_binary(root=ROOT)
    with LivekitServer(binary) as server:
        rows.append(("server check, external", _stats(external_checks(server, args.starts))))
        in_proc = asyncio.run(calls(server, args.calls, None))
        t0 = time.monotonic()
        with AgentWorker(AGENT, url=server.url, api_key=server.api_key, api_secret=server.api_secret, cwd=ROOT) as worker:
            rows.append(("worker start to 'registered worker'", _stats([time.monotonic() - t0])))
            in_worker = asyncio.run(calls(server, args.calls, worker))
    for label, data in (("in-process", in_proc), ("worker", in_worker)):
        rows.append((f"call setup (join + agent listening), {label}", _stats(data["setup"])))
        rows.append((f"call teardown, {label}", _stats(data["teardown"])))
        rows.append((f"TTFA, same call, {label}", _stats(data["ttfa"])))
    extra = statistics.median(in_worker["setup"]) + statistics.median(in_worker["teardown"]) - (
        statistics.median(in_proc["setup"]) + statistics.median(in_proc["teardown"])
    )
    rows.append(("extra per-test time, worker vs in-process", f"{extra * 1000:+.0f} ms (medians)"))
    ttfa_diff = statistics.median(in_worker["ttfa"]) - statistics.median(in_proc["ttfa"])
    rows.append(("TTFA difference, worker - in-process", f"{ttfa_diff * 1000:+.0f} ms (medians)"))

    print_table(rows)


if __name__ == "__main__":
    main()
