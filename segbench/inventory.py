"""What is installed: registered specs with their computed parameter counts (``segbench list``)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from segbench.plugins import failed_plugins, get_registry
from segbench.registry import ModelSpec


def count_params(spec: ModelSpec) -> int:
    """Parameters of the spec at its defaults, built on the meta device: no memory, no init cost."""
    import torch

    with torch.device("meta"):
        model = spec.build()
    return sum(p.numel() for p in model.parameters())


def spec_entries() -> list[dict[str, Any]]:
    """One entry per registered spec, then one per plugin that failed to load (with ``error``)."""
    entries = []
    for name in get_registry().names(kind=None):
        spec = get_registry().models[name]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # plugin code: its prints must not corrupt --format json
                params, error = count_params(spec), None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: B036 - a broken builder is reported in its entry, like a broken plugin
            params, error = None, f"cannot build: {type(exc).__name__}: {exc}"
        entries.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "family": spec.family,
                "plugin": spec.plugin,
                "default_size": "x".join(map(str, spec.default_size)),
                "num_classes": spec.default_num_classes,
                "params": params,
                "description": spec.description,
                "reference": spec.reference,
                "error": error,
            }
        )
    for failure in failed_plugins():
        entries.append({"name": None, "plugin": failure.plugin, "error": failure.reason})
    return entries
