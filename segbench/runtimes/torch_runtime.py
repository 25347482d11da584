"""The PyTorch runtime: eager fp32 and its variants (fp16 / bf16 casts, channels_last, torch.compile,
CUDA graphs, BatchNorm folded).

- Precision: fp16 / bf16 cast the model and the input (``model.half()`` / ``.bfloat16()``) rather than
  using autocast: for inference, a model cast once runs every layer in the low precision without the
  per-op casts autocast inserts, which is the faster honest deployment. channels_last converts the
  model and the input with ``memory_format=torch.channels_last``.
- Variants work on a copy, so the caller's model stays fp32, contiguous and unfolded.
- torch.compile: a cold compile (``torch.compiler.reset()`` and empty on-disk caches) in a first
  call, whose wall time is the session's ``prepare_seconds``, never inside the timed loop.
- CUDA graphs: after a side-stream warm-up one forward pass is captured on that stream with
  ``torch.cuda.graph``; a call replays it on the same static input.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.measure.faults import VariantUnavailable, error_reason
from segbench.measure.session import Session, Variant
from segbench.runtimes.batchnorm import fold_batchnorm

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_GRAPH_WARMUP = 2  # side-stream calls before capture, at least (PyTorch's CUDA graph recipe)
CUDA_GRAPH_ON_CPU = "cuda graphs need --device cuda"
CACHE_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


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
        torch.compiler.reset()  # no stale graphs in memory, no recompile limit reached
        forward = torch.compile(network, dynamic=False)
    start = time.perf_counter()
    with _fresh_compile_caches(workdir / f"compile-{variant.tag}") if variant.compile else contextlib.nullcontext():
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


@contextlib.contextmanager
def _fresh_compile_caches(folder: Path) -> Iterator[None]:
    """Inductor's and Triton's on-disk caches pointed at an empty folder for one compilation, so
    ``compile_seconds`` is a cold compile whatever earlier runs left behind (``torch.compiler.reset``
    clears only the in-memory state)."""
    saved = {name: os.environ.get(name) for name in CACHE_VARIABLES}
    os.environ.update({name: str(folder / name.lower()) for name in CACHE_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _graph_session(
    forward: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, variant: Variant, threads: int
) -> Session:
    """Warm up on a side stream, capture one forward pass on that stream (of ``device``: PyTorch's
    default capture stream belongs to the first device used); a call replays it on the static input.

    A forward pass that cannot be captured (a host sync such as ``.item()``) is reported with its own
    error, not the capture-invalidated error that follows it; an empty capture is an error, never a
    row of ~0 ms.
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(CUDA_GRAPH_WARMUP):
            forward(x)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    cause: BaseException | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.cuda.graph(graph, stream=stream):
                try:
                    static_output = forward(x)
                except Exception as exc:
                    cause = exc
                    raise
        except Exception as exc:
            del graph
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            raise VariantUnavailable(f"cannot capture a CUDA graph: {error_reason(cause or exc)}") from None
    if any("empty" in str(w.message).lower() for w in caught):
        raise VariantUnavailable("the captured CUDA graph is empty: nothing would be timed")

    def replay() -> Any:
        graph.replay()
        return static_output

    def predict(inputs: torch.Tensor) -> Any:
        x.copy_(convert_input(inputs.to(device), variant))
        return replay()

    return Session(call=replay, predict=predict, threads=threads)
