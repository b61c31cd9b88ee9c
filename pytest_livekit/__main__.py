"""Command line: ``python -m pytest_livekit install-server [--version V] [--dir D]``.

PYTEST_DONT_REWRITE (only ``assertions`` is rewritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._install import install_server
from .errors import PytestLivekitError
from .server import DEFAULT_SERVER_VERSION


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pytest_livekit``."""
    parser = argparse.ArgumentParser(prog="python -m pytest_livekit")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install-server", help="build or fetch from cache a livekit-server binary")
    inst.add_argument("--version", default=DEFAULT_SERVER_VERSION)
    inst.add_argument("--dir", type=Path, default=None, help="install folder")
    args = parser.parse_args(argv)
    try:
        install_server(args.version, dest_dir=args.dir)
    except PytestLivekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
