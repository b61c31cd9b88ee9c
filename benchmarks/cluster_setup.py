"""What a LiveKit cluster adds to a call's setup, against one node.

The same short call (the example agent, in-process and as a worker; "I want a refund for order
one two three four", one reply) is placed ``--calls`` times on one livekit-server and on a local
cluster (``--nodes`` livekit-server nodes sharing a loopback Redis; call *i* signals to node *i*,
its room is created on node *i*+1, a worker registers with the last node). Per mode and agent
mode: the session's start (server or cluster ready), and per call the setup from the caller's
first connect to the agent listening (``call.timings["setup"]``), p50 and max.

Run from the repository root inside the test network namespace:

    scripts/netns-run python3 benchmarks/cluster_setup.py [--calls 4] [--nodes 3]

Figures are this machine's, measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _table import print_grid

ROOT = Path(__file__).resolve().parents[1]


async def measure(server: str, agent_mode: str, calls: int, nodes: int, folder: Path) -> list[str]:
    """One session: its start time and ``calls`` calls' setup times, as a table row."""
    from pytest_livekit import LivekitSession

    t0 = time.monotonic()
    setups: list[float] = []
    async with LivekitSession(
        "support_agent:server", rootdir=str(ROOT / "example_suite"), server=server, cluster_nodes=nodes,
        agent_mode=agent_mode, artifacts_dir=folder / "calls",
    ) as session:
        started = time.monotonic() - t0
        for i in range(calls):
            async with session.call(f"call{i}", call_type="refund") as call:
                await call.say("I want a refund for order one two three four")
                await call.wait_for_agent_reply()
            setups.append(call.timings["setup"])
    label = f"{server} ({nodes} nodes)" if server == "cluster" else "one node"
    return [label, agent_mode, f"{started:.2f}", str(calls), f"{statistics.median(setups):.3f}", f"{max(setups):.3f}"]


async def run(args: argparse.Namespace) -> None:
    """Every mode, one after the other."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cluster-setup-") as tmp:
        for agent_mode in ("in-process", "worker"):
            for server in ("binary", "cluster"):
                rows.append(await measure(server, agent_mode, args.calls, args.nodes, Path(tmp) / f"{server}-{agent_mode}"))
    print_grid(["server", "agent", "session start s", "calls", "setup p50 s", "setup max s"], rows,
               title="call setup (caller connect -> agent listening), one node vs a local cluster")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=3)
    sys.path.insert(0, str(ROOT))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
