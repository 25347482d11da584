"""The ONNX file that ONNX Runtime and OpenVINO run: one export per model, input shape and BatchNorm
choice, shared by both runtimes within a cell, and its int8 version.

- Export: ``torch.onnx.export(..., dynamo=True)`` at the fixed input shape. The legacy TorchScript
  exporter refuses Fast-SCNN's adaptive pooling when the feature size is not a multiple of the bins;
  and a dynamic height/width exports without error but bakes the pooling windows of the traced size
  in, so each input size gets its own file. The exporter's progress lines and warnings are silenced.
- int8: post-training static quantization with ONNX Runtime's tools (QDQ format, per-channel int8
  weights, uint8 activations, MinMax calibration) on images of the chosen dataset. Per-tensor
  weights lost more argmax agreement on Fast-SCNN than per-channel.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.measure.faults import VariantUnavailable
from segbench.measure.quiet import quiet
from segbench.measure.session import Session, Variant
from segbench.runtimes.batchnorm import fold_batchnorm

INPUT_NAME = "input"
OPSET = 18
#: What every ONNX-fed runtime needs besides itself: the exporter.
EXPORTER = ("onnx", "onnxscript")


def not_installed(runtime_package: str, install: str) -> str | None:
    """Why a runtime fed by this export cannot run for want of packages (None: all importable)."""
    import importlib.util

    missing = [m for m in (*EXPORTER, runtime_package) if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed: {install}" if missing else None


def export(model: nn.Module, example: torch.Tensor, workdir: Path, fold_bn: bool = False) -> Path:
    """``workdir/model[-foldbn].onnx`` for ``model`` at ``example``'s shape (exported once per workdir)."""
    path = workdir / f"model{'-foldbn' if fold_bn else ''}.onnx"
    if path.exists():
        return path
    network = copy.deepcopy(model).cpu()  # a copy: `.cpu()` moves in place, and the caller's model
    if fold_bn:  # is the cell's network, still on its device for the other rows
        fold_batchnorm(network)
    with quiet():
        torch.onnx.export(
            network,
            (example.cpu(),),
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            verbose=False,
        )
    return path


def onnx_file(
    model: nn.Module, example: torch.Tensor, variant: Variant, workdir: Path, calibration: Sequence[torch.Tensor]
) -> Path:
    """The file a variant runs: the export (BatchNorm folded first if asked), quantized for int8."""
    path = export(model, example, workdir, variant.fold_bn)
    return quantize_int8(path, calibration, workdir) if variant.precision == "int8" else path


#: An opened ONNX file: the session's ``call``, its ``predict`` and its ``tf32`` pair
#: (`segbench.measure.session.Session`).
Opened = tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor], tuple[bool | None, bool | None]]
#: How an ONNX runtime opens the cell's file: ``(path, example, device, threads, variant)`` -> `Opened`.
Opener = Callable[[Path, torch.Tensor, torch.device, int, Variant], Opened]


def onnx_session(
    open_file: Opener,
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: torch.device,
    variant: Variant,
    threads: int,
    workdir: Path,
    calibration: Sequence[torch.Tensor] = (),
) -> Session:
    """The ``prepare`` of an ONNX runtime (``functools.partial`` it with its ``open_file``): export (or
    reuse the cell's export), quantize for int8, open the file; the time of all three is the row's
    prepare time, and the session runs outside torch, returning only when its result is on the host."""
    start = time.perf_counter()
    path = onnx_file(model, example, variant, workdir, calibration)
    call, predict, tf32 = open_file(path, example, device, threads, variant)
    return Session(
        call=call,
        predict=predict,
        prepare_seconds=time.perf_counter() - start,
        threads=threads,
        in_torch=False,
        blocking=True,
        tf32=tf32,
    )


def quantize_int8(fp32: Path, calibration: Sequence[torch.Tensor], workdir: Path) -> Path:
    """``fp32`` quantized to int8 (QDQ, per-channel), calibrated on ``calibration`` inputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    path = fp32.with_name(fp32.stem + "-int8.onnx")
    if path.exists():
        return path
    if not calibration:
        raise VariantUnavailable("int8 needs calibration images (a dataset)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = iter(calibration)

        def get_next(self) -> dict | None:
            x = next(self.inputs, None)
            return None if x is None else {INPUT_NAME: x.cpu().numpy()}

    prepared = fp32.with_name(fp32.stem + "-pre.onnx")
    with quiet():
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return path
