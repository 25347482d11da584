"""segbench: measure segmentation networks side by side, under identical conditions.

Architectures come from plugins (entry-point group ``segbench``); the built-ins use the same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segbench._version import __version__
from segbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn


def create_model(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build a registered architecture by name, as a plain ``nn.Module``.

    :param name: a registered model or block name (see ``segbench list``).
    :param num_classes: class count; the spec's default when None.
    :param options: builder options (e.g. ``kernel_size`` for blocks).
    """
    from segbench.plugins import get_registry

    return get_registry().model(name).build(num_classes=num_classes, **options)


__all__ = ["__version__", "create_model", "hookimpl"]
