"""The plugin manager: the built-in plugin and the entry-point group ``segbench``, loaded lazily, once.

A plugin that fails to import, or raises inside a registration hook, is reported on stderr (plugin name
and a one-line reason) and in ``segbench list``; every other plugin still loads. Environment:

- ``SEGBENCH_DISABLE_PLUGINS=a,b`` skips the named entry-point plugins.
- ``SEGBENCH_STRICT_PLUGINS=1`` turns a plugin failure into an error (for CI of plugin packages).
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any

import pluggy

from segbench import builtin, hookspecs
from segbench.errors import UserError
from segbench.foreign import foreign_code, one_line
from segbench.registry import DuplicateNameError, Registry

ENTRY_POINT_GROUP = "segbench"
BUILTIN_NAME = "segbench"


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    reason: str


@dataclass
class _State:
    manager: pluggy.PluginManager
    registry: Registry
    failures: list[PluginFailure]


def get_registry() -> Registry:
    """The registry of every loaded plugin's specs (built on first use)."""
    return _load().registry


def failed_plugins() -> list[PluginFailure]:
    """Plugins that could not be imported or whose registration hook raised."""
    return list(_load().failures)


def reset() -> None:
    """Forget the loaded plugins, so the next lookup discovers them again (tests, long sessions)."""
    _load.cache_clear()


@functools.cache
def _load() -> _State:
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, name=BUILTIN_NAME)
    registry = Registry()
    with foreign_code():  # a plugin that prints must not corrupt --format json, nor move the cwd
        failures = _register_entry_points(manager)
        failures += _call_registration(manager, "register_models", registry.add_model)
        failures += _call_registration(manager, "register_datasets", registry.add_dataset)
        failures += _call_registration(manager, "register_runtimes", registry.add_runtime)
    for failure in failures:
        _report(failure)
    return _State(manager, registry, failures)


def _register_entry_points(manager: pluggy.PluginManager) -> list[PluginFailure]:
    """Register every entry point of the group, each on its own, named after its distribution.

    A distribution with several entry points in the group gets one plugin per entry point
    (``dist:entry``), so the second is not refused as a duplicate. A hook implementation whose name
    matches no hook (``register_model`` for ``register_models``) fails that plugin, via pluggy's
    ``check_pending``, instead of being ignored.
    """
    disabled = {n.strip() for n in os.environ.get("SEGBENCH_DISABLE_PLUGINS", "").split(",") if n}
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    per_dist = Counter(ep.dist.name if ep.dist is not None else ep.name for ep in found)
    failures = []
    for ep in found:
        dist = ep.dist.name if ep.dist is not None else ep.name
        name = dist if per_dist[dist] == 1 else f"{dist}:{ep.name}"
        if disabled & {name, dist, ep.name}:
            continue
        try:
            manager.register(ep.load(), name=name)
            manager.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if manager.has_plugin(name):
                manager.unregister(name=name)
            failures.append(PluginFailure(name, f"failed to load: {one_line(exc)}"))
    return failures


def _call_registration(
    manager: pluggy.PluginManager, hook_name: str, add: Callable[[Any], None]
) -> list[PluginFailure]:
    """Call one registration hook plugin by plugin, so one that raises cannot stop the others.

    Each plugin is called through ``subset_hook_caller`` with a ``register`` callback that stamps
    the specs with that plugin's name.
    """
    failures = []
    plugins = manager.list_name_plugin()
    for name, plugin in plugins:
        others = [other for _, other in plugins if other is not plugin]
        hook = manager.subset_hook_caller(hook_name, remove_plugins=others)

        def register(spec: Any, _plugin: str = name) -> None:
            add(replace(spec, plugin=_plugin))

        try:
            hook(register=register)
        except (DuplicateNameError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            failures.append(PluginFailure(name, f"{hook_name} raised {one_line(exc)}"))
    return failures


def _report(failure: PluginFailure) -> None:
    message = f"plugin {failure.plugin!r} {failure.reason}"
    if os.environ.get("SEGBENCH_STRICT_PLUGINS") == "1":
        raise UserError(message + " (SEGBENCH_STRICT_PLUGINS=1)")
    print(f"segbench: warning: {message}", file=sys.stderr)
