"""What the test process and the caller's process share: the 10 ms grid and the message channel.

Messages are Python tuples, pickled, each preceded by its length (4 bytes, big-endian). Both
ends are this package, started from the same interpreter, over a Unix socket only the test
process's user can open; pickle is therefore safe here and carries the record's dataclasses as
they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
from typing import Any

#: Length of each frame the caller sends and receives, in seconds (one slot of the grid).
FRAME_SECONDS = 0.010
#: Samples in one frame at 48 kHz.
FRAME_SAMPLES = 480
#: A frame that left (or arrived) more than this late, in seconds, means the caller could not
#: keep real time; the call records it and its timing figures say so.
LATE_SECONDS = 0.020
#: How far (slots) a frame may be moved later to keep audio continuous before it overlaps.
_MAX_SHIFT_SLOTS = 2

_HEADER = struct.Struct(">I")


def raise_priority() -> None:
    """Give the caller's process the CPU before the agent's.

    The caller does little work but must do it on time: real-time round-robin scheduling when
    allowed (root or ``CAP_SYS_NICE``), else a higher nice priority, else nothing. Called once its
    imports are done (an import at real-time priority would starve other callers' processes for
    a second), before the rtc library starts its threads, which inherit it.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
        return
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)


def describe_priority() -> str:
    """This process's scheduling, in words (for the caller process's log and the trace)."""
    with contextlib.suppress(AttributeError, OSError):
        if os.sched_getscheduler(0) == os.SCHED_RR:
            return f"real-time round-robin, priority {os.sched_getparam(0).sched_priority}"
    with contextlib.suppress(AttributeError, OSError):
        return f"nice {os.getpriority(os.PRIO_PROCESS, 0)}"
    return "unknown"


class SlotClock:
    """Places frames of one direction on the call's 10 ms grid.

    A frame goes into the slot nearest its real start time. Scheduling jitter of a few ms would
    put two consecutive frames into one slot (and leave a hole next to it), so a frame whose slot
    is taken moves to the next free one while that is at most 20 ms from its real time; beyond
    that it overlaps (the recording mixes it in), so the audio stays where it really was.
    """

    def __init__(self) -> None:
        self.last: int | None = None

    def place(self, start: float) -> int:
        """The slot for a frame that really started at ``start`` seconds since call start."""
        exact = round(start / FRAME_SECONDS)
        slot = exact
        if self.last is not None and slot <= self.last and self.last + 1 - exact <= _MAX_SHIFT_SLOTS:
            slot = self.last + 1
        self.last = slot if self.last is None else max(self.last, slot)
        return slot


def request_blocking(socket_path: str, command: str, timeout: float, **args: Any) -> Any:
    """Send one command to the caller process from synchronous code and return its result.

    For process-wide commands (starting the packet relay) issued before any event loop runs; the
    connection is closed afterwards (the process then forgets it, as after a call).
    """
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        data = pickle.dumps((1, command, args), protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(_HEADER.pack(len(data)) + data)
        buffer = b""
        while True:
            while len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack(buffer[: _HEADER.size])
                if len(buffer) < _HEADER.size + size:
                    break
                message = pickle.loads(buffer[_HEADER.size : _HEADER.size + size])  # noqa: S301 - our own process
                buffer = buffer[_HEADER.size + size :]
                if message[0] == "reply" and message[1] == 1:
                    _, _, ok, result = message
                    if not ok:
                        raise RuntimeError(f"the caller's process failed {command!r}:\n{result}")
                    return result
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the caller's process closed the connection before answering {command!r}")
            buffer += chunk


class Channel:
    """Length-prefixed pickled tuples over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue ``message`` for sending (no await: the transport buffers it)."""
        if self.closed or self.writer.is_closing():
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(_HEADER.pack(len(data)) + data)

    async def recv(self) -> Any:
        """The next message, or ``None`` when the other end closed the connection."""
        try:
            header = await self.reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            data = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return pickle.loads(data)  # noqa: S301 - our own process at the other end (see module doc)

    async def drain_and_close(self) -> None:
        """Flush what is queued and close."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
