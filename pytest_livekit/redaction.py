"""One redaction rule for everything the plugin writes or shows: artifacts, traces, reports, the
worker's and the Docker server's logs on disk, and every log tail attached to a failure (server,
Docker, worker, caller: :func:`pytest_livekit.server.process.tail_lines`).

Every given secret of 8 characters or more (longest first, so a secret that starts another leaves
no tail; shorter strings would blank out ordinary words, and the plugin's secrets are 64 random
characters) and every JWT-shaped string (what a LiveKit access token looks like) becomes
``[redacted]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["JWT", "REDACTED", "redact", "redact_bytes"]

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
