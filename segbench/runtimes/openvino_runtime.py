"""OpenVINO: the same ONNX file as ONNX Runtime (`segbench.runtimes.onnx_export`; its int8 QDQ file
too), compiled for the CPU with ``threads`` inference threads and the latency performance hint.

Inference precision is pinned to f32: on CPUs with AVX512_BF16 or AMX, OpenVINO's default is bf16,
which would make an "fp32" row silently run in bf16 (int8 files keep their QDQ precision)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from segbench.measure.session import Variant
from segbench.runtimes.onnx_export import Opened, not_installed, onnx_session

INSTALL = "pip install 'segbench[openvino]'"


def unavailable(device: str) -> str | None:
    """Why OpenVINO cannot run on ``device`` here (None: it can)."""
    missing = not_installed("openvino", INSTALL)
    if missing:
        return missing
    if device != "cpu":
        return "segbench runs OpenVINO on the CPU only (its GPU plugin is for Intel GPUs)"
    return None


def compile_cpu(path: Path, threads: int, perf_count: bool = False) -> Any:
    """The ONNX file compiled for the CPU as every segbench session is (``perf_count``: per-layer counters on)."""
    import openvino

    core = openvino.Core()
    options = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(core.read_model(str(path)), "CPU", {**options, "PERF_COUNT": perf_count})


def _open(path: Path, example: torch.Tensor, device: torch.device, threads: int, variant: Variant) -> Opened:
    """``path`` compiled for the CPU (`segbench.runtimes.onnx_export.Opener`)."""
    compiled = compile_cpu(path, threads)
    request = compiled.create_infer_request()
    inputs = {0: example.cpu().numpy()}
    logits = compiled.output(0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(request.infer({0: x.cpu().numpy()})[logits].copy())

    return (lambda: request.infer(inputs)), predict, (None, None)


#: Export (or reuse the cell's export), quantize for int8, and compile for the CPU.
prepare = partial(onnx_session, _open)
