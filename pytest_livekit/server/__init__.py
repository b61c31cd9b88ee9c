"""Where the calls happen: livekit-server as a binary, a Docker container or a cluster.

``binary`` (LivekitServer, find_server_binary), ``docker``, ``cluster`` (Redis + N nodes),
``install`` (the cached build), ``tokens`` (least-grant tokens), ``process`` (the one
lifecycle every child process goes through).

The names of the former ``pytest_livekit.server`` module are still served from here.
"""

from __future__ import annotations

from pytest_livekit._moved import lazy_names

__getattr__ = lazy_names(__name__, "pytest_livekit.server.binary")
