"""Observe an agent session from the caller's side of the room (livekit-agents' RemoteSession).

The agent's ``AgentSession`` broadcasts its events over the ``lk.agent.session`` byte-stream topic
(``SessionHost``). Reading them through the caller's own connection gives one event model for an
agent running in-process and one running as a real worker process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents.voice.remote_session import RemoteSession, RoomSessionTransport

from pytest_livekit.call.record import (
    AgentError,
    CallRecord,
    ConversationItem,
    Handoff,
    StateChange,
    ToolCall,
    Transcript,
)

_AGENT_STATES = {0: "initializing", 1: "idle", 2: "listening", 3: "thinking", 4: "speaking"}
_USER_STATES = {0: "speaking", 1: "listening", 2: "away"}
_ROLES = {0: "developer", 1: "system", 2: "user", 3: "assistant"}


def _enum_name(field_value: int, enum_names: dict[int, str], descriptor: Any) -> str:
    # Prefer the proto's own names (AS_LISTENING -> listening); fall back to our table.
    try:
        name = str(descriptor.values_by_number[field_value].name)
        return name.split("_", 1)[1].lower() if "_" in name else name.lower()
    except (KeyError, AttributeError):
        return enum_names.get(field_value, str(field_value))


class SessionObserver:
    """Turns RemoteSession events into :class:`~pytest_livekit.call.record.CallRecord` entries.

    Create it *before* the caller's room connects: events that arrive with no handler registered
    are dropped by the rtc SDK.

    Args:
        room: the caller's (not yet connected) room.
        record: the record to append to.
        agent_identity: identity of the agent participant, or ``None`` to accept any sender.
        on_change: called after every recorded event (wakes waiters).
    """

    def __init__(
        self,
        room: rtc.Room,
        record: CallRecord,
        *,
        agent_identity: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.record = record
        self._transport = RoomSessionTransport(room, agent_identity)
        self.remote = RemoteSession(self._transport)
        self._on_change = on_change or (lambda: None)
        self.agent_state = "initializing"
        self._seq = 0  # order of the conversation events (messages, tool executions, handoffs)
        for name in (
            "agent_state_changed",
            "user_state_changed",
            "user_input_transcribed",
            "conversation_item_added",
            "function_tools_executed",
            "error",
        ):
            self.remote.on(name, getattr(self, f"_on_{name}"))

    def set_agent_identity(self, identity: str) -> None:
        """Accept session messages only from ``identity`` from now on."""
        self._transport.remote_identity = identity

    async def start(self) -> None:
        """Register the byte-stream handler (call before ``room.connect``)."""
        await self.remote.start()

    async def aclose(self) -> None:
        """Stop observing."""
        await self.remote.aclose()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Ping the agent's session host until it answers."""
        await self.remote.wait_for_ready(timeout=timeout)

    # -- event handlers --------------------------------------------------------------------
    def _t(self, ev: Any) -> float:
        ts = ev.created_at
        return self.record.rel(ts.seconds + ts.nanos / 1e9)

    def _on_agent_state_changed(self, ev: Any) -> None:
        e = ev.agent_state_changed
        desc = e.DESCRIPTOR.fields_by_name["new_state"].enum_type
        old = _enum_name(e.old_state, _AGENT_STATES, desc)
        new = _enum_name(e.new_state, _AGENT_STATES, desc)
        self.agent_state = new
        self.record.state_changes.append(StateChange(self._t(ev), "agent", old, new))
        self._on_change()

    def _on_user_state_changed(self, ev: Any) -> None:
        e = ev.user_state_changed
        desc = e.DESCRIPTOR.fields_by_name["new_state"].enum_type
        self.record.state_changes.append(
            StateChange(
                self._t(ev),
                "user",
                _enum_name(e.old_state, _USER_STATES, desc),
                _enum_name(e.new_state, _USER_STATES, desc),
            )
        )
        self._on_change()

    def _on_user_input_transcribed(self, ev: Any) -> None:
        e = ev.user_input_transcribed
        self.record.transcripts.append(Transcript(self._t(ev), e.transcript, bool(e.is_final)))
        self._on_change()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _on_conversation_item_added(self, ev: Any) -> None:
        item = ev.conversation_item_added.item
        kind = item.WhichOneof("item")
        if kind == "agent_handoff":
            handoff = item.agent_handoff
            self.record.handoffs.append(
                Handoff(
                    t=self._t(ev),
                    new_agent_id=handoff.new_agent_id,
                    old_agent_id=handoff.old_agent_id or None,
                    seq=self._next_seq(),
                )
            )
            self._on_change()
            return
        if kind != "message":
            return  # config updates: not part of the conversation
        msg = item.message
        role_desc = msg.DESCRIPTOR.fields_by_name["role"].enum_type
        metrics = {
            f.name: float(v) for f, v in msg.metrics.ListFields() if isinstance(v, (int, float))
        }
        text = " ".join(c.text for c in msg.content if c.text)
        self.record.items.append(
            ConversationItem(
                t=self._t(ev),
                role=_enum_name(msg.role, _ROLES, role_desc),
                text=text,
                interrupted=bool(msg.interrupted),
                metrics=metrics,
                seq=self._next_seq(),
            )
        )
        self._on_change()

    def _on_function_tools_executed(self, ev: Any) -> None:
        e = ev.function_tools_executed
        outputs = {o.call_id: o for o in e.function_call_outputs}
        seq = self._next_seq()  # the tools of one execution round share their position
        for call in e.function_calls:
            try:
                args = json.loads(call.arguments) if call.arguments else {}
            except json.JSONDecodeError:
                args = {"<unparsed>": call.arguments}
            out = outputs.get(call.call_id)
            self.record.tool_calls.append(
                ToolCall(
                    t=self._t(ev),
                    name=call.name,
                    arguments=args if isinstance(args, dict) else {"<value>": args},
                    output=out.output if out is not None else None,
                    is_error=bool(out.is_error) if out is not None else False,
                    call_id=call.call_id,
                    seq=seq,
                )
            )
        self._on_change()

    def _on_error(self, ev: Any) -> None:
        self.record.errors.append(AgentError(self._t(ev), ev.error.message, "session"))
        self._on_change()


async def wait_until(
    condition: Callable[[], bool], changed: asyncio.Event, timeout: float
) -> bool:
    """Wait until ``condition()`` holds, re-checking whenever ``changed`` is set.

    Returns False on timeout. ``changed`` is cleared before each wait, so callers set it from
    event handlers and never poll.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        changed.clear()
        # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives while the awaited event fires (bpo-42130), which left a cancelled wait running.
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=remaining)
        finally:
            waiter.cancel()
    return True
