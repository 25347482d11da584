"""The segbench plugin contract.

A plugin is a module or object with functions decorated by ``@segbench.hookimpl`` whose names match the
specifications below. Third-party plugins are found through the entry-point group ``segbench``; the
built-in architectures (``segbench.builtin``) are registered through these same hooks.

Hooks are always called with keyword arguments, so a plugin may accept only the arguments it needs.
Arguments may be added over time but are never removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from segbench.registry import DatasetSpec, ModelSpec, RuntimeSpec

hookspec = pluggy.HookspecMarker("segbench")
#: Marker for hook implementations, re-exported as ``segbench.hookimpl`` (the name plugins use).
hookimpl = pluggy.HookimplMarker("segbench")

# -------------------------------------------------------------------------------------------------
# registration hooks
# -------------------------------------------------------------------------------------------------


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register architectures (whole models and building blocks) with the harness.

    Called once, the first time the registry is needed (never at import time), for every plugin.

    :param register: callback owned by the core; call it once per :class:`segbench.registry.ModelSpec`.
        The core validates the spec, stamps it with the name of the plugin that registered it, and
        raises if another plugin already registered the same name (a silently replaced model would
        change the numbers).

    Return value is ignored. An exception raised here is reported with the plugin's name, and the
    specs of every other plugin still load.
    """


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register datasets that ``segbench train`` and ``segbench run`` can read.

    Called once, the first time the registry is needed, for every plugin.

    :param register: callback owned by the core; call it once per :class:`segbench.registry.DatasetSpec`.
        Names must be unique across plugins; the user selects one with ``--dataset NAME`` or
        ``--dataset NAME:PATH``.

    Return value is ignored. An exception raised here is reported with the plugin's name.
    """


@hookspec
def register_runtimes(register: Callable[[RuntimeSpec], None]) -> None:
    """Register inference runtimes that ``segbench latency --runtime`` and ``segbench run --runtime`` time.

    Called once, the first time the registry is needed, for every plugin. PyTorch, ONNX Runtime and
    OpenVINO are registered by the built-in plugin through this hook; a plugin package can add
    another (TensorRT, a vendor SDK) the same way.

    :param register: callback owned by the core; call it once per :class:`segbench.registry.RuntimeSpec`.
        The spec names the runtime, the devices and variants it supports, how to tell whether it is
        usable here (its packages importable, its device present), and how to prepare a model and an
        example input into a :class:`segbench.measure.session.Session`, reporting the preparation time
        (export + compile) apart from the timed calls. Names must be unique across plugins.

    Return value is ignored. An exception raised here is reported with the plugin's name.
    """
