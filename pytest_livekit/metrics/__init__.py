"""Numbers from a call, and what they are held to (pure code).

``turns`` (TTFA, barge-in, transcripts), ``text_scoring`` (the one WER/CER engine),
``call_metrics`` (every per-call metric), ``thresholds`` (call types, limits, SLOs).

The names of the former ``pytest_livekit.metrics`` module are still served from here.
"""

from __future__ import annotations

from pytest_livekit._moved import lazy_names

__getattr__ = lazy_names(__name__, "pytest_livekit.metrics.turns")
