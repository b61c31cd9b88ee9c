"""One call: the room, the caller in its own process, what was heard and said.

``livekit_call`` (LivekitCall), ``caller`` (ScriptedCaller, Recording, the caller
process's host), ``observer`` and ``record`` (CallRecord), ``expect`` (RunResult view),
``scenarios`` (conversations as data), ``rtc_stats``.

The names of the former ``pytest_livekit.call`` module are still served from here.
"""

from __future__ import annotations

from pytest_livekit._moved import lazy_names

__getattr__ = lazy_names(__name__, "pytest_livekit.call.livekit_call")
