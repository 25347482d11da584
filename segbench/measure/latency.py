"""Latency, throughput and memory of a prepared session (any runtime) on one input.

Timing method (docs/timing.md states it), the same for every runtime:

- ``torch.inference_mode()``; the runtime's session is prepared first (export, compile, the first
  call: ``compile_seconds``), never inside the timed loop. Then ``warmup`` untimed calls, then the
  timed calls (`segbench.measure.timer`: the clocks, the protocol).
- Process settings while measuring (`segbench.measure.settings`): CUDA: ``cudnn.benchmark = True``;
  CPU: ``threads`` (default: torch's own count) set for torch and handed to the runtime as its
  intra-op thread count; both restored afterwards.
- Reported (`segbench.rows.latency`): median, mean, p90 (linear interpolation), min and sample std of
  the per-call times in ms; throughput = batch size / median seconds.
- Correctness (`segbench.measure.outputs`): every variant other than PyTorch fp32 eager is compared
  with PyTorch fp32 eager on the same input: max |logit difference| and the fraction of pixels whose
  argmax over channels agrees. An output with inf or NaN is recorded as not finite (the row gets an
  ``error``; the latency is kept: it is the time of a wrong result).
- Memory: `segbench.measure.memory.peak_memory` (CUDA allocator peak; CPU allocator peak of one
  profiled pass); only for sessions that run through PyTorch's allocator, None for other runtimes.
- GPU conditions (`segbench.measure.gpu_monitor`, with NVML): clocks, power, temperature, throttle
  reasons and other processes before and after timing, and energy per image from a solo loop of
  about a second after timing.
- ``trace``: after timing, a few more calls of a PyTorch session run under ``torch.profiler`` and are
  written as a Chrome trace (`segbench.measure.profiling.write_trace`); never during the timed loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from segbench.measure.gpu_monitor import GpuState, monitor
from segbench.measure.memory import peak_memory
from segbench.measure.outputs import Agreement, compare_outputs, main_output
from segbench.measure.profiling import write_trace
from segbench.measure.session import Session
from segbench.measure.timer import Protocol, Samples, time_sessions


@dataclass(frozen=True)
class Measurement:
    """What `measure_session` found for one session.

    :param samples: the timed calls, the baseline's first when the session was paired with one.
    :param agreement: with the reference; None for the reference itself.
    :param finite: the session's output holds no inf or NaN.
    :param trace: the Chrome trace written, if any.
    :param gpu_before: the GPU's clocks, power, temperature, throttling and other processes before
        timing; ``gpu_after`` the same after (None off CUDA or without NVML).
    :param energy_j_per_image: from NVML's energy counter over a solo loop of the session, idle
        power subtracted (None without NVML or an energy counter).
    """

    samples: Samples
    batch_size: int
    peak_mem_mb: float | None
    weights_mb: float | None
    prepare_seconds: float | None
    threads: int | None
    tf32: tuple[bool | None, bool | None]
    agreement: Agreement | None
    finite: bool
    trace: Path | None
    gpu_before: GpuState | None = None
    gpu_after: GpuState | None = None
    energy_j_per_image: float | None = None

    @property
    def paired(self) -> bool:
        """Timed alternately with a baseline: the samples hold both, and a speed-up can be computed."""
        return len(self.samples.device_ms) == 2


def measure_session(
    session: Session,
    example: torch.Tensor,
    reference: torch.Tensor | None,
    *,
    device: torch.device,
    protocol: Protocol,
    baseline: Session | None = None,
    trace: Path | None = None,
) -> Measurement:
    """Time ``session`` (alternately with ``baseline`` when given), measure its memory, compare its output.

    :param example: the input the session was prepared for (its first dimension is the batch).
    :param reference: PyTorch fp32 eager logits for ``example`` (None: this session is the reference).
    :param baseline: the session a speed-up is relative to (PyTorch fp32 eager), timed call by call
        alternately with this one.
    :param trace: write a Chrome trace of a few more calls to this file (PyTorch sessions only).
    """
    gpu = monitor(device)
    before = gpu.state() if gpu else None
    samples = time_sessions([session] if baseline is None else [baseline, session], device, protocol)
    energy = gpu.energy_j_per_image(session.call, device, example.shape[0]) if gpu else None
    after = gpu.state() if gpu else None
    peak = peak_memory(session, device)
    output = main_output(session.predict(example)).float().cpu()
    return Measurement(
        samples=samples,
        batch_size=example.shape[0],
        peak_mem_mb=peak,
        weights_mb=session.weights_mb,
        prepare_seconds=session.prepare_seconds,
        threads=session.threads,
        tf32=session.tf32,
        agreement=None if reference is None else compare_outputs(output, reference),
        finite=bool(torch.isfinite(output).all()),
        trace=write_trace(session.call, device, trace) if trace is not None and session.in_torch else None,
        gpu_before=before,
        gpu_after=after,
        energy_j_per_image=energy,
    )
