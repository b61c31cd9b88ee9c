"""Waiting for processes to end, for the tests that check nothing outlives a run."""

from __future__ import annotations

import os
import select
import time


def process_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited, within ``timeout`` s (waits on its pidfd: an event, not
    polling).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def group_gone(group: int, timeout: float) -> bool:
    """True once no process is left in process group ``group``, within ``timeout`` s (a process
    group has no exit event to wait on: this polls /proc every 0.2 s, bounded).
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == group:
                        alive.append(entry)
                except ProcessLookupError:
                    pass
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
