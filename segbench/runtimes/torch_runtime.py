"""The PyTorch runtime: eager fp32 and its variants (fp16 / bf16 casts, channels_last, torch.compile,
CUDA graphs, BatchNorm folded).

- Precision: fp16 / bf16 cast the model and the input (``model.half()`` / ``.bfloat16()``) rather than
  using autocast: for inference, a model cast once runs every layer in the low precision without the
  per-op casts autocast inserts, which is the faster honest deployment. channels_last converts the
  model and the input with ``memory_format=torch.channels_last``.
- Variants work on a copy, so the caller's model stays fp32, contiguous and unfolded.
- torch.compile: a cold compile (``torch.compiler.reset()``) in a first call, whose wall time is the
  session's ``prepare_seconds``, never inside the timed loop.
- CUDA graphs: after a side-stream warm-up one forward pass is captured with ``torch.cuda.graph``; a
  call replays it on the same static input.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from segbench.measure.faults import VariantUnavailable
from segbench.runtimes.base import Session, Variant
from segbench.runtimes.batchnorm import fold_batchnorm

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_GRAPH_WARMUP = 2  # side-stream calls before capture, at least (PyTorch's CUDA graph recipe)
CUDA_GRAPH_ON_CPU = "cuda graphs need --device cuda"


def unavailable(device: str) -> str | None:
    """PyTorch runs wherever segbench does; on CUDA it needs a visible GPU."""
    return None if device == "cpu" or torch.cuda.is_available() else "no CUDA device visible to torch"


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
    """A session of ``model`` (eval, on ``device``) in ``variant`` for inputs shaped like ``example``."""
    if variant.cuda_graph and device.type != "cuda":
        raise VariantUnavailable(CUDA_GRAPH_ON_CPU)
    network = _variant_model(model, variant)
    x = convert_input(example.to(device), variant)
    forward: Callable[[torch.Tensor], Any] = network
    prepare_seconds = None
    if variant.compile:
        torch.compiler.reset()  # a cold compile per row: no stale graphs, no recompile limit reached
        forward = torch.compile(network, dynamic=False)
    start = time.perf_counter()
    forward(x)  # priming call: compilation, cudnn autotuning, lazy initialisation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if variant.compile:
        prepare_seconds = time.perf_counter() - start
    if variant.cuda_graph:
        return _graph_session(forward, x, device, variant, threads)

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return forward(convert_input(inputs.to(device), variant))

    return Session(call=lambda: forward(x), predict=predict, prepare_seconds=prepare_seconds, threads=threads)


def convert_input(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The input as the variant's model expects it: cast, and channels_last when asked."""
    x = x.to(dtype=DTYPES[variant.precision])
    return x.contiguous(memory_format=torch.channels_last) if variant.channels_last else x


def _variant_model(model: nn.Module, variant: Variant) -> nn.Module:
    if variant.precision == "fp32" and not (variant.channels_last or variant.fold_bn):
        return model
    network = copy.deepcopy(model)
    if variant.fold_bn:
        fold_batchnorm(network)
    network = network.to(dtype=DTYPES[variant.precision])
    return network.to(memory_format=torch.channels_last) if variant.channels_last else network


def _graph_session(
    forward: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, variant: Variant, threads: int
) -> Session:
    """Warm up on a side stream, capture one forward pass; a call replays it on the static input ``x``."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(CUDA_GRAPH_WARMUP):
            forward(x)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = forward(x)

    def replay() -> Any:
        graph.replay()
        return static_output

    def predict(inputs: torch.Tensor) -> Any:
        x.copy_(convert_input(inputs.to(device), variant))
        return replay()

    return Session(call=replay, predict=predict, threads=threads)
