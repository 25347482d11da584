"""The PyTorch runtime: eager fp32 and its variants (fp16 / bf16 casts, channels_last, torch.compile,
CUDA graphs, BatchNorm folded).

- Precision: fp16 / bf16 cast the model and the input (``model.half()`` / ``.bfloat16()``) rather than
  using autocast: for inference, a model cast once runs every layer in the low precision without the
  per-op casts autocast inserts, which is the faster honest deployment. channels_last converts the
  model and the input with ``memory_format=torch.channels_last``.
- Variants work on a copy, so the caller's model stays fp32, contiguous and unfolded.
- torch.compile: a cold compile (``torch.compiler.reset()`` and empty on-disk caches) in a first
  call, whose wall time is the session's ``prepare_seconds``, never inside the timed loop. The
  variant's ``compile_mode`` (``default``, ``max-autotune-no-cudagraphs``, ...) with Inductor's
  inference ``freezing`` (weights constant, BatchNorm folded into the convolutions). Inductor's
  compile-worker pool lives as long as the process: an untimed throwaway compile starts it once, so
  every row's ``compile_seconds`` excludes the start-up, whatever the row order.
- CUDA graphs: after a side-stream warm-up one forward pass is captured on that stream with
  ``torch.cuda.graph``; a call replays it on a static input the session owns (a copy: ``predict``
  overwrites it, and the caller's tensor is shared with other sessions). The session's peak memory
  is that of warm-up and capture (a replay allocates nothing).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.measure.faults import VariantUnavailable, error_reason
from segbench.measure.memory import MIB, cuda_peak_mb, cuda_reset_peak
from segbench.measure.session import Session, Variant
from segbench.measure.settings import tf32_in_use
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
    network = variant_model(model, variant)
    x = static_input(example, device, variant) if variant.cuda_graph else convert_input(example.to(device), variant)
    forward: Callable[[torch.Tensor], Any] = network
    prepare_seconds = None
    caches = _fresh_compile_caches(workdir / f"compile-{variant.tag}") if variant.compile else contextlib.nullcontext()
    if variant.compile:
        _start_compile_workers(device, workdir)
        torch.compiler.reset()  # no stale graphs in memory, no recompile limit reached
        forward = torch.compile(network, dynamic=False, options=compile_options(variant.compile_mode))
    start = time.perf_counter()
    with caches:
        forward(x)  # priming call: compilation, cudnn autotuning, lazy initialisation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if variant.compile:
        prepare_seconds = time.perf_counter() - start
    tf32 = tf32_in_use(device, variant.precision)
    weights = sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers())) / MIB
    if variant.cuda_graph:
        return replace(_graph_session(forward, x, device, variant, threads, prepare_seconds, tf32), weights_mb=weights)

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return forward(convert_input(inputs.to(device), variant))

    return Session(
        call=lambda: forward(x),
        predict=predict,
        prepare_seconds=prepare_seconds,
        threads=threads,
        tf32=tf32,
        weights_mb=weights,
    )


def compile_options(mode: str) -> dict[str, Any]:
    """``torch.compile`` options of ``mode`` (the settings PyTorch's mode names stand for) with
    inference freezing on: ``mode=`` and ``options=`` cannot be given together."""
    from torch._inductor import list_mode_options  # named by torch.compile's docstring for exactly this

    return {**list_mode_options(mode), "freezing": True}


_COMPILE_WORKERS_STARTED: set[str] = set()


def _start_compile_workers(device: torch.device, workdir: Path) -> None:
    """One untimed throwaway compile per process and device type: Inductor's worker pool and its
    lazy initialisation are then paid here, not by whichever row compiles first."""
    if device.type in _COMPILE_WORKERS_STARTED:
        return
    with _fresh_compile_caches(workdir / "compile-start"):
        torch.compile(lambda t: t * 2 + 1, dynamic=False)(torch.ones(8, device=device))
    _COMPILE_WORKERS_STARTED.add(device.type)


def static_input(example: torch.Tensor, device: torch.device, variant: Variant) -> torch.Tensor:
    """The input a CUDA graph captures and ``predict`` overwrites: converted, on ``device``, and always
    a tensor of its own (``.to`` returns the caller's tensor itself when nothing changes)."""
    return convert_input(example.to(device), variant).clone()


def convert_input(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The input as the variant's model expects it: cast, and channels_last when asked."""
    x = x.to(dtype=DTYPES[variant.precision])
    return x.contiguous(memory_format=torch.channels_last) if variant.channels_last else x


def variant_model(model: nn.Module, variant: Variant) -> nn.Module:
    """``model`` as the variant runs it: a cast / channels_last / BN-folded copy (``model`` itself for fp32)."""
    if variant.precision == "fp32" and not (variant.channels_last or variant.fold_bn):
        return model
    network = copy.deepcopy(model)
    if variant.fold_bn:
        fold_batchnorm(network)
    network = network.to(dtype=DTYPES[variant.precision])
    if not variant.channels_last:
        return network
    return network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it


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
    forward: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    device: torch.device,
    variant: Variant,
    threads: int,
    prepare_seconds: float | None,
    tf32: tuple[bool | None, bool | None],
) -> Session:
    """Warm up on a side stream, capture one forward pass on that stream (of ``device``: PyTorch's
    default capture stream belongs to the first device used); a call replays it on the static input ``x``.

    A forward pass that cannot be captured (a host sync such as ``.item()``) is reported with its own
    error, not the capture-invalidated error that follows it, and leaves the device's current stream
    as it found it (PyTorch does not restore it when ending the capture raises); an empty capture is
    an error, never a row of ~0 ms.
    """
    baseline = cuda_reset_peak(device)
    current = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        for _ in range(CUDA_GRAPH_WARMUP):
            forward(x)
    current.wait_stream(stream)
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
            reason = error_reason(cause or exc)
            del graph, exc, cause
            torch.cuda.set_stream(current)
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            raise VariantUnavailable(f"cannot capture a CUDA graph: {reason}") from None
    if any("empty" in str(w.message).lower() for w in caught):
        raise VariantUnavailable("the captured CUDA graph is empty: nothing would be timed")
    peak = cuda_peak_mb(device, baseline)

    def replay() -> Any:
        graph.replay()
        return static_output

    def predict(inputs: torch.Tensor) -> Any:
        x.copy_(convert_input(inputs.to(device), variant))
        return replay()

    return Session(
        call=replay, predict=predict, prepare_seconds=prepare_seconds, threads=threads, tf32=tf32, peak_mem_mb=peak
    )
