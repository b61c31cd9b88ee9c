"""livekit-agents' own event assertions (``RunResult.expect``) over the events of a voice call.

Text tests of a livekit agent assert on a :class:`livekit.agents.voice.run_result.RunResult`::

    result = await session.run(user_input="I want a refund for order 1234")
    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})

:func:`voice_run_result` gives the same object for a whole voice call: a real ``RunResult``
holding livekit's own event classes (``ChatMessageEvent``, ``FunctionCallEvent``,
``FunctionCallOutputEvent``, ``AgentHandoffEvent``), built from the call's record. Its
``.expect`` is livekit's ``RunAssert``, not a copy of it: ``next_event``, ``skip_next``,
``skip_next_event_if``, ``no_more_events``, ``contains_*``, indexing and slicing, and
``judge(llm, intent=...)`` behave, and fail, exactly as in text tests.

The events, in the order the agent's session emitted them (which is conversation order):

- ``ChatMessageEvent`` for every message added to the conversation: ``role="user"`` with the
  final transcript as the agent heard it, ``role="assistant"`` with what the agent said
  (``item.interrupted`` is True when the caller cut it off).
- ``FunctionCallEvent`` and ``FunctionCallOutputEvent`` for every tool the agent executed (name,
  arguments JSON, call id; output and ``is_error``). Tools the session reported together (one
  round of parallel calls) come as all their calls, then all their outputs.
- ``AgentHandoffEvent`` when the session switched agents. The session's start (the first agent
  taking over, ``old_agent`` None) is left out: whether the caller was already in the room to
  see it depends on who joined first, and a test must not. Unlike in a text test, the agents
  lived in the agent's process: ``old_agent``/``new_agent`` are uninitialised stand-in instances
  of the agent class whose id matches (so ``is_agent_handoff(new_agent_type=BillingAgent)``
  works), or :class:`RemoteAgent` when no loaded class has that id (pass ``agents=``).

Unlike ``session.run()``, the result covers the whole call so far, including the user's own
messages: assert with ``next_event()`` from the start of the call, or with ``contains_*`` and
slices. It is a snapshot: call :func:`voice_run_result` again after more of the conversation to
see the new events (with a fresh ``next_event`` cursor).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, cast, get_args

from livekit.agents import llm
from livekit.agents.llm.chat_context import MetricsReport
from livekit.agents.utils import misc
from livekit.agents.voice.agent import Agent
from livekit.agents.voice.run_result import (
    AgentHandoffEvent,
    ChatMessageEvent,
    FunctionCallEvent,
    FunctionCallOutputEvent,
    RunEvent,
    RunResult,
)

from pytest_livekit.call.record import CallRecord, ConversationItem, Handoff, ToolCall

if TYPE_CHECKING:
    from pytest_livekit.call.livekit_call import LivekitCall

__all__ = ["RemoteAgent", "voice_run_events", "voice_run_result"]

#: Agent classes given to :func:`voice_run_result`: classes (matched by their default id, the
#: class name in snake case) or a mapping from agent id to class (for agents given an ``id=``).
AgentClasses: TypeAlias = "Iterable[type[Agent]] | Mapping[str, type[Agent]]"

_ROLES = set(get_args(llm.ChatRole))
_METRIC_KEYS = set(MetricsReport.__annotations__)


class RemoteAgent(Agent):
    """Stands for an agent of the call whose class this process cannot name.

    The agents of a voice call live in the agent's process; the session only reports their ids.
    ``voice_run_result`` puts a ``RemoteAgent`` in an ``AgentHandoffEvent`` when no agent class
    loaded here has that id (pass the class with ``agents=`` to get an instance of it instead).
    """

    def __init__(self, agent_id: str) -> None:  # noqa: D107 - not Agent.__init__: nothing runs here
        self._id = agent_id

    def __repr__(self) -> str:
        return f"RemoteAgent(id={self._id!r})"


def _record(call: Any) -> CallRecord:
    if isinstance(call, CallRecord):
        return call
    rec = getattr(call, "record", None)
    if isinstance(rec, CallRecord):
        return rec
    raise TypeError(
        f"expected a LivekitCall or CallRecord (e.g. the livekit_call fixture), got {type(call).__name__}"
    )


def _default_id(cls: type[Agent]) -> str:
    # what Agent.__init__ uses when given no id
    return "default_agent" if cls is Agent else misc.camel_to_snake_case(cls.__name__)


def _agent_classes(agents: AgentClasses | None) -> dict[str, type[Agent]]:
    """Agent id -> class.

    Every Agent subclass loaded in this process whose default id is unique, overridden by the
    ones given.
    """
    found: dict[str, list[type[Agent]]] = {}
    stack: list[type[Agent]] = [Agent]
    seen: set[type[Agent]] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        found.setdefault(_default_id(cls), []).append(cls)
        stack.extend(cls.__subclasses__())
    classes = {agent_id: found_[0] for agent_id, found_ in found.items() if len(found_) == 1}
    if isinstance(agents, Mapping):
        classes.update(agents)
    elif agents is not None:
        classes.update({_default_id(cls): cls for cls in agents})
    return classes


def _agent(agent_id: str, classes: Mapping[str, type[Agent]]) -> Agent:
    cls = classes.get(agent_id)
    if cls is not None:
        try:
            # The real agent ran in the agent's process; this stand-in is of its class (for
            # isinstance checks) and carries its id, but is never initialised: its __init__ may
            # need arguments or have side effects, and nothing here would use the result.
            agent: Agent = cls.__new__(cls)
            agent._id = agent_id
            return agent
        except Exception:  # an exotic __new__: fall back to the named stand-in
            pass
    return RemoteAgent(agent_id)


def _arguments_json(arguments: dict[str, Any]) -> str:
    # The observer keeps the parsed arguments; a payload that was not a JSON object is kept
    # under one of these keys (see pytest_livekit.call.observer).
    if set(arguments) == {"<unparsed>"} and isinstance(arguments["<unparsed>"], str):
        return arguments["<unparsed>"]
    if set(arguments) == {"<value>"}:
        return json.dumps(arguments["<value>"])
    return json.dumps(arguments)


def _ordered(rec: CallRecord) -> list[ConversationItem | list[ToolCall] | Handoff]:
    """The conversation entries in the order the session emitted them.

    Tool calls reported by one event are grouped.
    """
    groups: dict[Any, list[ToolCall]] = {}
    for call in rec.tool_calls:
        # records from before ``seq`` existed: calls of one event share its time
        groups.setdefault(call.seq if call.seq >= 0 else ("t", call.t), []).append(call)
    entries: list[ConversationItem | list[ToolCall] | Handoff] = [
        *rec.items,
        *groups.values(),
        *(h for h in rec.handoffs if h.old_agent_id is not None),
    ]

    def seq(entry: ConversationItem | list[ToolCall] | Handoff) -> int:
        return entry[0].seq if isinstance(entry, list) else entry.seq

    def t(entry: ConversationItem | list[ToolCall] | Handoff) -> float:
        return entry[0].t if isinstance(entry, list) else entry.t

    if all(seq(e) >= 0 for e in entries):
        entries.sort(key=lambda e: (seq(e), t(e)))
    else:  # a record from before ``seq`` (or written by hand): by time, stable
        entries.sort(key=t)
    return entries


def voice_run_events(
    call: LivekitCall | CallRecord, *, agents: AgentClasses | None = None
) -> list[RunEvent]:
    """livekit-agents' run events for the call so far, in conversation order.

    The list :func:`voice_run_result` puts in its ``RunResult``; see the module's documentation
    for what it holds.

    Args:
        call: The ``livekit_call`` fixture (a :class:`~pytest_livekit.call.livekit_call.LivekitCall`) or a
            :class:`~pytest_livekit.call.record.CallRecord` (e.g. ``CallRecord.load("call.json")``).
        agents: Agent classes for the handoff events, when a loaded class's default id (its name
            in snake case) does not name the agent: classes, or ``{agent_id: class}``.

    Returns:
        ``ChatMessageEvent``, ``FunctionCallEvent``, ``FunctionCallOutputEvent`` and
        ``AgentHandoffEvent`` objects (``livekit.agents.voice.run_result``).
    """
    rec = _record(call)
    classes: dict[str, type[Agent]] | None = None
    events: list[RunEvent] = []
    for entry in _ordered(rec):
        if isinstance(entry, ConversationItem):
            if entry.role not in _ROLES:
                continue  # not a chat role livekit knows: cannot be one of its messages
            events.append(
                ChatMessageEvent(
                    item=llm.ChatMessage(
                        role=cast(llm.ChatRole, entry.role),
                        content=[entry.text] if entry.text else [],
                        interrupted=entry.interrupted,
                        created_at=rec.started_at_epoch + entry.t,
                        metrics=cast(
                            MetricsReport,
                            {k: v for k, v in entry.metrics.items() if k in _METRIC_KEYS},
                        ),
                    )
                )
            )
        elif isinstance(entry, Handoff):
            if classes is None:
                classes = _agent_classes(agents)
            events.append(
                AgentHandoffEvent(
                    item=llm.AgentHandoff(
                        old_agent_id=entry.old_agent_id,
                        new_agent_id=entry.new_agent_id,
                        created_at=rec.started_at_epoch + entry.t,
                    ),
                    old_agent=_agent(entry.old_agent_id, classes) if entry.old_agent_id else None,
                    new_agent=_agent(entry.new_agent_id, classes),
                )
            )
        else:
            created_at = rec.started_at_epoch + entry[0].t
            for tool in entry:
                events.append(
                    FunctionCallEvent(
                        item=llm.FunctionCall(
                            call_id=tool.call_id,
                            name=tool.name,
                            arguments=_arguments_json(tool.arguments),
                            created_at=created_at,
                        )
                    )
                )
            for tool in entry:
                if tool.output is None:
                    continue  # the session reported the call without an output
                events.append(
                    FunctionCallOutputEvent(
                        item=llm.FunctionCallOutput(
                            call_id=tool.call_id,
                            name=tool.name,
                            output=tool.output,
                            is_error=tool.is_error,
                            created_at=created_at,
                        )
                    )
                )
    return events


def voice_run_result(
    call: LivekitCall | CallRecord, *, agents: AgentClasses | None = None
) -> RunResult[None]:
    """A finished livekit-agents ``RunResult`` holding the events of the voice call so far.

    ``.expect`` is livekit-agents' own ``RunAssert``: assert on a voice call with the vocabulary
    of text tests, and get its failure messages (the events around the failing one, marked
    ``>>>``). ``.events`` is the event list. The events are those of :func:`voice_run_events`;
    see the module's documentation. Works in sync and async tests; the result is already done
    (``await result`` returns at once, ``final_output`` raises as for a run without output).

    Example::

        @pytest.mark.livekit(agent="my_agent:server")
        async def test_refund(livekit_call):
            await livekit_call.say("I want a refund for order one two three four")
            await livekit_call.wait_for_agent_reply()

            result = voice_run_result(livekit_call)
            result.expect.next_event().is_message(role="user")
            result.expect.next_event().is_function_call(
                name="lookup_order", arguments={"order_id": "1234"}
            )
            result.expect.next_event().is_function_call_output()
            await result.expect.next_event().is_message(role="assistant").judge(
                judge_llm, intent="offers to refund the order"
            )
            result.expect.no_more_events()

            # or, order-independent:
            result = voice_run_result(livekit_call)
            result.expect.contains_function_call(name="lookup_order", arguments={"order_id": "1234"})
            result.expect.contains_message(role="assistant")

    ``judge`` needs an ``llm.LLM`` that can call a tool (any livekit LLM plugin).

    Args:
        call: The ``livekit_call`` fixture (a :class:`~pytest_livekit.call.livekit_call.LivekitCall`) or a
            :class:`~pytest_livekit.call.record.CallRecord` (e.g. ``CallRecord.load("call.json")``).
        agents: Agent classes for ``is_agent_handoff(new_agent_type=...)``, when the agent's id
            is not its class name in snake case (an ``Agent(id=...)``): ``{agent_id: class}``,
            or classes. Agent classes loaded in this process are found without it.

    Returns:
        The run result (``output_type`` None).

    Raises:
        TypeError: If ``call`` is neither a call nor a record.
    """
    events = voice_run_events(call, agents=agents)

    def build() -> RunResult[None]:
        result: RunResult[None] = RunResult(output_type=None)
        result.events.extend(events)
        result._mark_done()  # livekit's own: no speech handle, so done with no output
        return result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return build()

    # A sync test: RunResult makes an asyncio future, which needs a loop. Use a private one
    # rather than touching the thread's event loop; the future is done before it closes, and
    # awaiting a done future later needs no loop of its own.
    async def build_in_loop() -> RunResult[None]:
        return build()

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(build_in_loop())
    finally:
        loop.close()
