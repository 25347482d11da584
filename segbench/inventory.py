"""What is installed (``segbench list``): registered models with their computed parameter counts, and the
runtimes with whether each can run here."""

from __future__ import annotations

from typing import Any

from segbench.foreign import foreign_code
from segbench.plugins import failed_plugins, get_registry
from segbench.registry import ModelSpec, RuntimeSpec


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
            with foreign_code():  # plugin code: its prints must not corrupt --format json
                params, error = count_params(spec), None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
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
    for runtime in get_registry().runtimes.values():
        entries.append(runtime_entry(runtime))
    for failure in failed_plugins():
        entries.append({"name": None, "plugin": failure.plugin, "error": failure.reason})
    return entries


def runtime_entry(runtime: RuntimeSpec) -> dict[str, Any]:
    """A runtime's entry: what it runs, and on each of its devices whether it can here and why not."""
    return {
        "name": runtime.name,
        "kind": "runtime",
        "plugin": runtime.plugin,
        "devices": ", ".join(runtime.devices),
        "precisions": ", ".join(runtime.precisions),
        "switches": ", ".join(sorted(runtime.switches)),
        "available": "; ".join(f"{d}: {runtime.why_unavailable(d) or 'yes'}" for d in runtime.devices),
        "description": runtime.description,
    }
