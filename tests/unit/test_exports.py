"""The package's top-level names: ``__all__`` is written out for type checkers, so a test keeps it
equal to the lazy exports it documents (a name added to one and not the other fails here)."""

from __future__ import annotations

import pytest_livekit


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert sorted(pytest_livekit.__all__) == sorted([*pytest_livekit._EXPORTS, "__version__"])


def test_every_listed_name_imports() -> None:
    for name in pytest_livekit.__all__:
        assert getattr(pytest_livekit, name) is not None, name
