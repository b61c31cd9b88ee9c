"""Old import paths keep working: where each module of the flat 0.1 layout lives now.

The package was flat until it grew past forty modules; it now has one subpackage a room along
a call's path (``server``, ``agent``, ``call``, ``conditions``, ``metrics``, ``outputs``,
``pytest_run``). A user's ``import pytest_livekit.scenarios`` still works: :data:`MOVED_MODULES`
maps it to the module's new home, and :class:`MovedModuleFinder` hands out that same module
object (one module, two names; nothing is imported twice). The four old module names that are
now packages (``server``, ``call``, ``conditions``, ``metrics``) re-export their old module's
names lazily with :func:`lazy_names`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: Old dotted module name -> the module's new dotted name.
MOVED_MODULES: dict[str, str] = {
    "pytest_livekit.docker": "pytest_livekit.server.docker",
    "pytest_livekit.cluster": "pytest_livekit.server.cluster",
    "pytest_livekit._install": "pytest_livekit.server.install",
    "pytest_livekit.tokens": "pytest_livekit.server.tokens",
    "pytest_livekit.process": "pytest_livekit.server.process",
    "pytest_livekit.agent_runner": "pytest_livekit.agent.in_process",
    "pytest_livekit.worker": "pytest_livekit.agent.worker",
    "pytest_livekit._worker_main": "pytest_livekit.agent._worker_main",
    "pytest_livekit.substitution": "pytest_livekit.agent.substitution",
    "pytest_livekit.netguard": "pytest_livekit.agent.netguard",
    "pytest_livekit.loop_watchdog": "pytest_livekit.agent.loop_watchdog",
    "pytest_livekit.agent_errors": "pytest_livekit.agent.error_log",
    "pytest_livekit.llm_rules": "pytest_livekit.agent.llm_rules",
    "pytest_livekit.vocabulary": "pytest_livekit.agent.vocabulary",
    "pytest_livekit.caller": "pytest_livekit.call.caller",
    "pytest_livekit._caller_main": "pytest_livekit.call._caller_main",
    "pytest_livekit._caller_wire": "pytest_livekit.call._caller_wire",
    "pytest_livekit.observer": "pytest_livekit.call.observer",
    "pytest_livekit.record": "pytest_livekit.call.record",
    "pytest_livekit.expect": "pytest_livekit.call.expect",
    "pytest_livekit.scenarios": "pytest_livekit.call.scenarios",
    "pytest_livekit.rtc_stats": "pytest_livekit.call.rtc_stats",
    "pytest_livekit.netem": "pytest_livekit.conditions.network",
    "pytest_livekit.packet_relay": "pytest_livekit.conditions.packet_relay",
    "pytest_livekit.turn_credentials": "pytest_livekit.conditions.turn_credentials",
    "pytest_livekit.strategies": "pytest_livekit.conditions.strategies",
    "pytest_livekit.text_scoring": "pytest_livekit.metrics.text_scoring",
    "pytest_livekit.call_metrics": "pytest_livekit.metrics.call_metrics",
    "pytest_livekit.thresholds": "pytest_livekit.metrics.thresholds",
    "pytest_livekit.trace": "pytest_livekit.outputs.trace",
    "pytest_livekit.artifacts": "pytest_livekit.outputs.artifacts",
    "pytest_livekit.report": "pytest_livekit.outputs.report",
    "pytest_livekit.baseline": "pytest_livekit.outputs.baseline",
    "pytest_livekit.otel": "pytest_livekit.outputs.otel",
    "pytest_livekit.replay": "pytest_livekit.outputs.replay",
    "pytest_livekit.run_summary": "pytest_livekit.outputs.run_summary",
    "pytest_livekit.merge": "pytest_livekit.outputs.merge",
    "pytest_livekit.progress": "pytest_livekit.pytest_run.progress",
    "pytest_livekit.pytest_glue": "pytest_livekit.pytest_run.glue",
    "pytest_livekit.keys": "pytest_livekit.pytest_run.keys",
    "pytest_livekit.outcomes": "pytest_livekit.pytest_run.outcomes",
    "pytest_livekit.call_results": "pytest_livekit.pytest_run.call_results",
    "pytest_livekit.run_collector": "pytest_livekit.pytest_run.collector",
    "pytest_livekit.call_limits": "pytest_livekit.pytest_run.limits",
    "pytest_livekit.timeout_guard": "pytest_livekit.pytest_run.timeout_guard",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path (:data:`MOVED_MODULES`) to the module at its new path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old name whose module is the new one; ``None`` for every other name."""
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The module at its new path (imported once, under its own name)."""
        module = importlib.import_module(MOVED_MODULES[spec.name])
        spec.loader_state = module.__spec__  # exec_module puts it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing runs; the module gets its own spec back (the machinery set the alias's)."""
        alias_spec = module.__spec__
        if alias_spec is not None and alias_spec.loader_state is not None:
            module.__spec__ = alias_spec.loader_state


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (the package's ``__init__`` calls it)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        # first: it answers only for the old names, and must win over stale files of an old install
        sys.meta_path.insert(0, MovedModuleFinder())


def lazy_names(package: str, former_module: str) -> Callable[[str], Any]:
    """A package ``__getattr__`` that serves the names of the module the package replaced.

    Args:
        package: The package's dotted name (for the error message).
        former_module: The dotted name of the module whose names the package's old path held.
    """

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            # a submodule wins over a same-named global of the former module
            if importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            module = importlib.import_module(former_module)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
