"""What is installed: registered specs with their computed parameter counts, and the environment."""

from __future__ import annotations

import os
from typing import Any

from segbench import __version__
from segbench.plugins import failed_plugins, get_registry
from segbench.registry import ModelSpec
from segbench.results import cpu_name


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
            params, error = count_params(spec), None
        except Exception as exc:  # a broken builder is reported in its entry, like a broken plugin
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


def environment() -> dict[str, Any]:
    """Versions, devices and the numerics flags that change timings (TF32, cudnn.benchmark)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "segbench_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
