"""Command line.

- ``python -m pytest_livekit install-server [--version V] [--dir D]``
- ``python -m pytest_livekit replay FOLDER [--agent module:attr] [--server-binary PATH] [--out DIR]``
- ``python -m pytest_livekit merge DIR... [--out DIR] [--pyproject FILE] [--report FILE]
  [--baseline-save NAME] [--baseline-compare NAME] [--strict-versions]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_livekit.errors import PytestLivekitError
from pytest_livekit.server.binary import DEFAULT_SERVER_VERSION
from pytest_livekit.server.install import install_server


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pytest_livekit``."""
    parser = argparse.ArgumentParser(prog="python -m pytest_livekit")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install-server", help="build or fetch from cache a livekit-server binary")
    inst.add_argument("--version", default=DEFAULT_SERVER_VERSION)
    inst.add_argument("--dir", type=Path, default=None, help="install folder")
    rep = sub.add_parser(
        "replay",
        help="re-run a recorded call from its artifact folder (same script, conditions, seed)",
    )
    rep.add_argument("folder", type=Path, help="the call's artifact folder (holds trace.json)")
    rep.add_argument("--agent", default=None, help="agent spec instead of the recorded one")
    rep.add_argument("--server-binary", default=None, help="livekit-server binary")
    rep.add_argument("--out", type=Path, default=None, help="artifact folder of the replay")
    mrg = sub.add_parser(
        "merge",
        help="one run from many shards' .livekit folders: calls.jsonl, report, run table, SLOs, baseline",
    )
    mrg.add_argument("shards", nargs="+", type=Path, help="each shard's .livekit folder (or calls.jsonl)")
    mrg.add_argument("--out", type=Path, default=Path(".livekit-merged"), help="folder of the merged run")
    mrg.add_argument("--pyproject", type=Path, default=None,
                     help="the suite's pyproject.toml: call types, SLOs, tolerances (default: ./pyproject.toml if any)")
    mrg.add_argument("--report", type=Path, default=None, help="write the merged HTML report here")
    mrg.add_argument("--baseline-save", default=None, help="save the merged run as this baseline")
    mrg.add_argument("--baseline-compare", default=None, help="compare the merged run with this baseline")
    mrg.add_argument("--strict-versions", action="store_true",
                     help="fail when shards ran different plugin / server / agents / rtc versions")
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
        if args.command == "merge":
            return _merge(args)
        install_server(args.version, dest_dir=args.dir)
    except (PytestLivekitError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    from pytest_livekit.outputs.replay import replay_with_server

    result = asyncio.run(
        replay_with_server(args.folder, agent=args.agent, server_binary=args.server_binary, out_dir=args.out)
    )
    print(f"replay of {args.folder} ({result.original['test'].get('nodeid', '')})")
    print(result.table())
    if result.error:
        print(f"step failed: {result.error}")
    for breach in result.breaches:
        print(f"limit breached: {breach}")
    print(f"artifacts: {result.folder}")
    return 1 if result.failed else 0


def _merge(args: argparse.Namespace) -> int:
    from pytest_livekit.outputs.merge import merge_shards

    pyproject = args.pyproject
    if pyproject is None and Path("pyproject.toml").is_file():
        pyproject = Path("pyproject.toml")
    result = merge_shards(
        args.shards, out_dir=args.out, pyproject=pyproject, report_path=args.report,
        baseline_save=args.baseline_save, baseline_compare=args.baseline_compare,
    )
    for line in result.lines():
        print(line)
    if args.strict_versions and any("differs between shards" in w for w in result.warnings):
        print("error: shards ran different versions (--strict-versions)", file=sys.stderr)
        return 1
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
