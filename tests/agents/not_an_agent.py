"""Module with an attribute that is not an agent entrypoint."""

from __future__ import annotations

entrypoint = 42
