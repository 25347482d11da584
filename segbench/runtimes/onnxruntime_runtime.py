"""ONNX Runtime: the model exported once to ONNX (`segbench.runtimes.onnx_export`), run by ORT's CPU
provider, or its CUDA provider on ``--device cuda`` when ``onnxruntime-gpu`` is installed.

Session options: ``threads`` intra-op threads, 1 inter-op thread, sequential execution, every graph
optimisation (operator fusion, BatchNorm folding, layout changes), and no spinning: ORT's worker
threads otherwise busy-wait after each call and steal the CPU from whatever runs next.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from segbench.measure.faults import VariantUnavailable
from segbench.measure.session import Session, Variant
from segbench.runtimes.onnx_export import INPUT_NAME, not_installed, onnx_file

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


def prepare(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: torch.device,
    variant: Variant,
    threads: int,
    workdir: Path,
    calibration: Sequence[torch.Tensor] = (),
) -> Session:
    """Export (or reuse the cell's export), quantize for int8, and open an ORT session."""
    import onnxruntime as ort

    start = time.perf_counter()
    path = onnx_file(model, example, variant, workdir, calibration)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    provider = PROVIDERS[device.type]
    session = ort.InferenceSession(str(path), options, providers=[provider])
    if session.get_providers()[0] != provider:  # ORT falls back to the CPU without a word
        raise VariantUnavailable(f"onnxruntime could not start {provider} (its CUDA libraries?)")
    inputs = {INPUT_NAME: example.cpu().numpy()}

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.cpu().numpy()})[0])

    return Session(
        call=lambda: session.run(None, inputs),
        predict=predict,
        prepare_seconds=time.perf_counter() - start,
        threads=threads,
        in_torch=False,
        blocking=True,
    )
