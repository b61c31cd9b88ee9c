"""What the caller's audio and network go through.

``media`` (noise, level, codec, loss, ... on the caller's signal), ``network``
(per-direction packet specs, LinkShaper), ``packet_relay`` and ``turn_credentials``
(the UDP relay that shapes real RTP), ``strategies`` (hypothesis).

The names of the former ``pytest_livekit.conditions`` module are still served from here.
"""

from __future__ import annotations

from pytest_livekit._moved import lazy_names

__getattr__ = lazy_names(__name__, "pytest_livekit.conditions.media")
