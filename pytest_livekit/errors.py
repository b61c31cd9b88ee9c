"""One exception hierarchy for everything pytest-livekit raises.

Every error says what went wrong, shows the evidence it has (log tail, exit code, path) and ends
with a ``Hint:`` that names the fix. Catch :class:`PytestLivekitError` to catch them all.
"""

from __future__ import annotations

from collections.abc import Iterable


class PytestLivekitError(Exception):
    """Base class of every error raised by pytest-livekit."""


class ServerError(PytestLivekitError):
    """A livekit-server could not be found, started or reached."""


class ServerBinaryNotFoundError(ServerError):
    """No livekit-server binary was found in any of the places the plugin looks."""


class ServerStartError(ServerError):
    """The server process exited before it became ready (see the log tail in the message)."""


class ServerStartTimeoutError(ServerError):
    """The server process is alive but did not answer ``GET /`` with 200 in time."""


class PortInUseError(ServerError):
    """A port the server was told to use is already taken by another process."""


class ServerUnreachableError(ServerError):
    """An external server URL does not answer."""


class ServerDiedError(ServerError):
    """The session's livekit-server exited during the session (its exit status and log tail in
    the message): the running call fails at once, later tests of the session fail at setup.
    """


class EventLoopBlockedError(PytestLivekitError):
    """The test's event loop, shared with an in-process agent, stopped answering for seconds
    (where it was stuck is in the message).
    """


class CallLostError(PytestLivekitError):
    """The server ended the caller's connection mid-call (room deleted, participant removed,
    server shut down): the disconnect reason is in the message.
    """


class AgentTargetError(PytestLivekitError):
    """The configured agent (``module:attribute``) cannot be imported or is not usable."""


class AgentCrashedError(PytestLivekitError):
    """The agent under test raised; the agent's own traceback is chained as ``__cause__``."""


class AudioInputError(PytestLivekitError):
    """Caller audio is missing, unreadable or unusable."""


class CallTimeoutError(PytestLivekitError):
    """Something the call waited for (agent joined, agent reply, ...) did not happen in time."""


class ConversationError(CallTimeoutError):
    """A conversation went somewhere the test's caller had no answer for, or never got where it
    had to (the agent never asked what it must, or kept talking past the turn limit).
    """


class ConfigError(PytestLivekitError):
    """An option, ini value or marker argument is invalid."""


class LimitBreachError(PytestLivekitError, AssertionError):
    """A call breached a per-call limit of its call type (``--livekit-limits=fail``, the default).

    An :class:`AssertionError`: the test fails (it is not an error), like an assertion helper's.
    """


class PytestLivekitWarning(UserWarning):
    """Base class of every warning pytest-livekit emits."""


class LimitBreachWarning(PytestLivekitWarning):
    """A call breached a per-call limit of its call type under ``--livekit-limits=warn``.

    Turn it back into a failure with ``-W error::pytest_livekit.errors.LimitBreachWarning``.
    """


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """``" Did you mean 'refund'?"`` when ``value`` is a near miss of one of ``choices`` (a typo
    in a call type, marker key, limit or option value), else ``""``: appended to the error that
    lists the valid names, so a misspelling names its fix.
    """
    import difflib

    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
