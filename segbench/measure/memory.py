"""Peak memory of a forward pass, measured the same way for every model on a device.

- CUDA: ``torch.cuda.max_memory_allocated`` minus the bytes allocated when the peak counter was
  reset, i.e. the tensor memory the measured calls needed on top of the weights and the input
  (what the caching allocator hands out, not what it reserves from the driver).
- CPU: the same quantity from the CPU allocator: one forward pass runs under ``torch.profiler``
  with ``profile_memory=True``; its allocation and free events, in time order, give the running
  total of tensor bytes allocated since the pass began, and the peak of that running total is the
  figure. It is the CPU analogue of the CUDA number. Process RSS is not used: glibc keeps freed
  blocks after the warm-up, so RSS growth during the timed loop is near zero whatever the model
  needs. Not counted: allocator bookkeeping, oneDNN buffers that do not come from torch's
  allocator, and Python objects.
- Only sessions that run through PyTorch's allocator are measured (`peak_memory`); None for other runtimes.
- CUDA graphs: a replay allocates nothing (its activations live in the pool reserved at capture), so
  a graph session carries the peak of its warm-up and capture instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch

if TYPE_CHECKING:
    from segbench.measure.session import Session

MIB = 1024 * 1024


class _KinetoEvent(Protocol):
    """The part of torch's Kineto event read here (torch's stub of it lacks ``nbytes``)."""

    def name(self) -> str: ...
    def start_ns(self) -> int: ...
    def nbytes(self) -> int: ...
    def device_type(self) -> Any: ...


def cuda_reset_peak(device: torch.device) -> int:
    """Start a CUDA peak measurement; returns the bytes allocated now (the baseline)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def cuda_peak_mb(device: torch.device, baseline: int) -> float:
    """Peak bytes allocated since ``cuda_reset_peak`` beyond its baseline, in MiB."""
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - baseline) / MIB


def cpu_peak_mb(call: Callable[[], Any]) -> float:
    """Peak tensor memory (MiB) the CPU allocator hands out during one ``call()``, output included."""
    from torch.profiler import ProfilerActivity

    from segbench.measure.profiling import quiet_profile

    with quiet_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:
        raise RuntimeError("the profiler recorded no events")
    return peak_from_events(
        (event.start_ns(), event.nbytes())
        for event in cast("list[_KinetoEvent]", results.events())
        if event.name() == "[memory]" and event.device_type().name == "CPU"
    )


def peak_from_events(events: Any) -> float:
    """``(time, signed bytes)`` allocation events -> the peak of their running sum, in MiB (>= 0)."""
    ordered = (nbytes for _, nbytes in sorted(events, key=lambda e: e[0]))
    return max(itertools.accumulate(ordered, initial=0)) / MIB


def peak_memory(session: Session, device: torch.device) -> float | None:
    """Peak tensor memory (MiB) of one call beyond what was allocated before it; None outside torch.
    A session that knows its peak better (a CUDA graph: warm-up and capture) says so itself."""
    if not session.in_torch:
        return None
    if session.peak_mem_mb is not None:
        return session.peak_mem_mb
    if device.type == "cuda":
        baseline = cuda_reset_peak(device)
        session.call()
        return cuda_peak_mb(device, baseline)
    return cpu_peak_mb(session.call)
