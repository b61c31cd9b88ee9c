"""Credentials for livekit-server's embedded TURN server, made where the test runs.

livekit-server hands each participant TURN credentials in its join response; a participant the
plugin routes through the packet relay needs them before it joins, for the relay's address
instead of the server's. The server accepts any username of the form
``base62("<api key>|<id>|<expiry>")`` with password ``base62(sha256("<secret>|<id>|<expiry>"))``
(``pkg/service/turn.go``: ``CreateUsername``, ``computePassword``); the ``<id>`` is ours to
choose, so the relay can tell whose allocation a packet belongs to from the USERNAME of its
TURN requests. ``base62`` is github.com/jxskiss/base62's encoding (not the big-integer one).
"""

from __future__ import annotations

import hashlib
import time

__all__ = ["base62_encode", "turn_credentials"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_COMPACT_MASK = 0x1E
_MASK5 = 0x1F
_MASK6 = 0x3F


def base62_encode(data: bytes) -> str:
    """github.com/jxskiss/base62 ``EncodeToString`` (its "V2" encoder), byte for byte."""
    out = bytearray()
    pos = len(data) * 8
    while pos > 0:
        r, i = pos & 7, pos >> 3
        if r == 0:
            i, r = i - 1, 8
        b = data[i] >> (8 - r)
        if r < 6 and i > 0:
            b |= data[i - 1] << r
        b &= _MASK6
        size = 6
        if b & _COMPACT_MASK == _COMPACT_MASK:
            if pos > 6 or b > _MASK5:
                size = 5
            b &= _MASK5
        out.append(_ALPHABET[b])
        pos -= size
    return out.decode()


def turn_credentials(api_key: str, api_secret: str, identity: str, ttl_s: int = 6 * 3600) -> tuple[str, str]:
    """``(username, password)`` livekit-server's TURN accepts for ``identity`` (no ``|`` in it)
    until ``ttl_s`` seconds from now (allocations made before then may be refreshed after).
    """
    if "|" in identity:
        raise ValueError(f"a TURN identity cannot contain '|': {identity!r}")
    expiry = int(time.time()) + ttl_s
    username = base62_encode(f"{api_key}|{identity}|{expiry}".encode())
    password = base62_encode(hashlib.sha256(f"{api_secret}|{identity}|{expiry}".encode()).digest())
    return username, password
