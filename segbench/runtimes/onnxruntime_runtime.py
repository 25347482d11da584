"""ONNX Runtime: the model exported once to ONNX (`segbench.runtimes.onnx_export`), run by ORT's CPU
provider, or its CUDA provider on ``--device cuda`` when ``onnxruntime-gpu`` is installed.

On CUDA: the provider runs on the requested GPU (``device_id``), uses TF32 exactly when PyTorch's fp32
convolutions do (the row's ``tf32`` says), may not fall back to the CPU for a node it lacks, and the
timed call runs with input and outputs bound to device memory (IOBinding): no host<->device copies
are timed, as for PyTorch rows.

Session options: ``threads`` intra-op threads, 1 inter-op thread, sequential execution, every graph
optimisation (operator fusion, BatchNorm folding, layout changes), and no spinning: ORT's worker
threads otherwise busy-wait after each call and steal the CPU from whatever runs next.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from segbench.measure.faults import VariantUnavailable
from segbench.measure.session import Variant
from segbench.measure.settings import tf32_enabled
from segbench.runtimes.onnx_export import INPUT_NAME, Opened, not_installed, onnx_session

INSTALL = "pip install 'segbench[onnx]'"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def unavailable(device: str) -> str | None:
    """Why ONNX Runtime cannot run on ``device`` here (None: it can)."""
    missing = not_installed("onnxruntime", INSTALL)
    if missing:
        return missing
    import onnxruntime

    if PROVIDERS[device] not in onnxruntime.get_available_providers():
        return f"onnxruntime has no {PROVIDERS[device]} here (for CUDA: pip install onnxruntime-gpu)"
    return None


def session_options(threads: int) -> Any:
    """The ``ort.SessionOptions`` of every segbench session (see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _open(path: Path, example: torch.Tensor, device: torch.device, threads: int, variant: Variant) -> Opened:
    """An ORT session of ``path`` on ``device`` (`segbench.runtimes.onnx_export.Opener`)."""
    import onnxruntime as ort

    options = session_options(threads)
    tf32 = device.type == "cuda" and variant.precision != "int8" and tf32_enabled("conv")
    if device.type == "cuda":
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    provider = PROVIDERS[device.type]
    session = ort.InferenceSession(str(path), options, providers=[provider_of(device, tf32)])
    if session.get_providers()[0] != provider:  # ORT falls back to the CPU without a word
        raise VariantUnavailable(f"onnxruntime could not start {provider} (its CUDA libraries?)")

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.cpu().numpy()})[0])

    return _bound_call(session, example, device), predict, (tf32, tf32) if device.type == "cuda" else (None, None)


#: Export (or reuse the cell's export), quantize for int8, and open an ORT session.
prepare = partial(onnx_session, _open)


def provider_of(device: torch.device, tf32: bool) -> str | tuple[str, dict[str, Any]]:
    """The execution provider for ``device``: on CUDA with its GPU index and the TF32 choice."""
    if device.type != "cuda":
        return PROVIDERS[device.type]
    index = device.index if device.index is not None else torch.cuda.current_device()
    return PROVIDERS["cuda"], {"device_id": index, "use_tf32": int(tf32)}


def _bound_call(session: Any, example: torch.Tensor, device: torch.device) -> Callable[[], Any]:
    """One inference on ``example``: on CUDA with input and outputs in device memory (no copies timed)."""
    if device.type != "cuda":
        inputs = {INPUT_NAME: example.cpu().numpy()}
        return lambda: session.run(None, inputs)
    import numpy as np

    x = example.to(device=device, dtype=torch.float32).contiguous()
    index = x.device.index or 0
    binding = session.io_binding()
    binding.bind_input(INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda", index)  # allocated by ORT on the GPU, kept there

    return partial(_run_bound, session, binding, x)


def _run_bound(session: Any, binding: Any, bound_input: torch.Tensor) -> None:
    """Run with the bindings (``bound_input`` is passed only to keep the bound memory alive)."""
    binding.synchronize_inputs()
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()
