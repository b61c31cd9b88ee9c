"""One redaction rule for everything the plugin writes or shows: artifacts, traces, reports, the
worker's and the Docker server's logs on disk, and every log tail attached to a failure (server,
Docker, worker, caller: :func:`pytest_livekit.server.process.tail_lines`).

Every given secret of 8 characters or more (longest first, so a secret that starts another leaves
no tail; shorter strings would blank out ordinary words, and the plugin's secrets are 64 random
characters) and every JWT-shaped string (what a LiveKit access token looks like) becomes
``[redacted]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["JWT", "LIVEKIT_LOGGERS", "REDACTED", "TokenRedactingFilter", "install_log_redaction", "redact", "redact_bytes"]

#: A JWT (header.payload.signature, base64url).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
#: What a redacted value becomes.
REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret and every JWT-shaped string replaced by :data:`REDACTED`."""
    for value in sorted((s for s in secrets if s and len(s) >= 8), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return JWT.sub(REDACTED, text)


def redact_bytes(data: bytes, secrets: Iterable[str] = ()) -> bytes:
    """:func:`redact` for a raw log line (decoded as UTF-8 with replacement, encoded back)."""
    return redact(data.decode("utf-8", errors="replace"), secrets).encode()


#: The loggers LiveKit's SDKs log through. livekit's rtc logs a rejected connection's whole URL,
#: access token included, as a warning on ``livekit`` (seen on a 401): pytest would show it in a
#: failed test's captured log and write it into junit.xml.
LIVEKIT_LOGGERS = ("livekit", "livekit.agents", "livekit.api", "livekit.rtc")


class TokenRedactingFilter(logging.Filter):
    """A logging filter that replaces every JWT-shaped string in a record's message by
    :data:`REDACTED` (the record is kept; only its text changes).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops the record."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed call's own error is logging's to report, not ours
            return True
        if JWT.search(message):
            record.msg = JWT.sub(REDACTED, message)
            record.args = None
        return True


def install_log_redaction(loggers: Iterable[str] = LIVEKIT_LOGGERS) -> None:
    """Put one :class:`TokenRedactingFilter` on each of ``loggers`` (idempotent).

    A logger's filters see the records logged on that logger itself, so each LiveKit logger
    gets its own.
    """
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in logger.filters):
            logger.addFilter(TokenRedactingFilter())
