"""Errors an in-process agent's framework caught and only logged, turned into call failures.

livekit-agents keeps a call alive when a tool raises or a provider's stream fails: it logs the
exception (``exception occurred while executing tool``, ``Error in _tts_inference_task``, ...)
and goes on, so the caller hears silence or an answer built on a failed tool, and a test would
end in a timeout or, worse, pass. :class:`AgentErrorLog` is a logging handler on the
``livekit.agents`` logger for the duration of one in-process call: every ERROR record with a
traceback that belongs to that call's job becomes an :class:`AgentFault` for the call.

A ``ToolError`` (the documented way for a tool to tell the LLM something went wrong) is not
logged as an exception by livekit-agents and is not a fault.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AgentErrorLog", "AgentFault", "failed_part"]

#: What each of livekit-agents' error messages means, for people.
_PARTS = {
    "exception occurred while executing tool": "tool",
    "Error in _tts_inference_task": "TTS",
    "Error in _llm_inference_task": "LLM",
    "Error in _stt_pump": "STT",
    "Error in _stt_task": "STT",
}


def failed_part(message: str, function: str | None = None) -> str:
    """Which part of the agent a livekit-agents error message is about: ``tool lookup_order()``,
    ``TTS``, ``LLM``, ``STT``, or ``agent`` when the message is not one of the known ones.
    """
    part = next((p for m, p in _PARTS.items() if message.startswith(m)), "agent")
    return f"tool {function}()" if part == "tool" and function else part


@dataclass(frozen=True)
class AgentFault:
    """An exception livekit-agents caught in the agent and logged."""

    part: str
    """Which part failed: ``tool lookup_order()``, ``TTS``, ``LLM``, ``STT`` or ``agent``."""
    message: str
    """livekit-agents' log message."""
    error: str
    """The exception, ``Type: text``."""
    traceback: str
    """The exception's traceback."""

    def describe(self) -> str:
        """One line for people: ``the agent's tool lookup_order() raised RuntimeError: ...``."""
        return f"the agent's {self.part} raised {self.error} (livekit-agents logged: {self.message!r})"


class AgentErrorLog(logging.Handler):
    """Report the errors livekit-agents logs with a traceback while one call runs.

    Args:
        room_name: the call's room; records from another job's context are left alone.
        on_fault: called with each :class:`AgentFault` (from the thread that logged it).
    """

    _active: list[AgentErrorLog] = []
    _lock = threading.Lock()

    def __init__(self, room_name: str, on_fault: Callable[[AgentFault], None]) -> None:
        super().__init__(level=logging.ERROR)
        self.room_name = room_name
        self.on_fault = on_fault
        self.faults: list[AgentFault] = []

    def __enter__(self) -> AgentErrorLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> AgentErrorLog:
        """Start listening on the ``livekit.agents`` logger."""
        with self._lock:
            self._active.append(self)
        logging.getLogger("livekit.agents").addHandler(self)
        return self

    def stop(self) -> None:
        """Stop listening."""
        logging.getLogger("livekit.agents").removeHandler(self)
        with self._lock:
            if self in self._active:
                self._active.remove(self)

    def _ours(self) -> bool:
        """Whether the record being emitted belongs to this call: the job context of the logging
        task names our room; without one (a thread), only if this is the one call running.
        """
        try:
            from livekit.agents import get_job_context

            return bool(get_job_context().room.name == self.room_name)
        except Exception:  # no job context here: a thread, or a record outside any job
            with self._lock:
                return self._active == [self]

    def emit(self, record: logging.LogRecord) -> None:
        """Turn an ERROR record with a traceback from this call's job into a fault."""
        if not record.exc_info or record.exc_info[1] is None or not self._ours():
            return
        message = record.getMessage()
        part = failed_part(message, getattr(record, "function", None))
        exc = record.exc_info[1]
        fault = AgentFault(
            part=part,
            message=message,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(*record.exc_info)),
        )
        self.faults.append(fault)
        self.on_fault(fault)
