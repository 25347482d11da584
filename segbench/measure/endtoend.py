"""End to end: a uint8 camera frame in host memory in, a uint8 class mask in host memory out, in three
stages timed within the same calls.

- ``preprocess``: the N x H x W x 3 uint8 frames to the pipeline's device (uint8: a quarter of the
  bytes of float), to N x 3 x H x W float, normalised with the datasets' mean and std
  (`segbench.data.common`), resized bilinearly to the network size, then to the session's precision
  and layout. The same operations, in the same order, as the datasets and the evaluation apply.
- ``model``: the runtime's ``predict`` under the evaluation protocol (`segbench.measure.protocols`):
  one frame is the whole protocol.
- ``postprocess``: the logits resized bilinearly to the frame's size, argmax over the classes, the
  uint8 mask back to host memory.

The pipeline's device is where pre- and postprocessing run: the GPU for a PyTorch session on CUDA,
the host for runtimes fed from host memory (their own copies are then inside ``model``). Host-to-device
and device-to-host copies are inside the stages that make them. Clock: on CUDA four events on the
current stream (the first before the upload, the last after the mask is on the host), on the CPU
``time.perf_counter`` at the same four points; so each call's stages add up to its end-to-end time.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from segbench.data.common import MEAN, STD
from segbench.measure.protocols import EvalProtocol, Predict, Size, resized
from segbench.measure.session import Session
from segbench.measure.timer import Protocol, time_sessions

STAGES = ("preprocess", "model", "postprocess")


@dataclass
class Pipeline:
    """Frames in, masks out, through ``predict`` at ``size`` under ``protocol``; each call's stage
    times (ms) are appended to ``times`` as (preprocess, model, postprocess)."""

    predict: Predict
    size: Size
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    times: list[tuple[float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._mean = torch.from_numpy(MEAN).to(self.device).view(1, 3, 1, 1)
        self._std = torch.from_numpy(STD).to(self.device).view(1, 3, 1, 1)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """N x H x W x 3 uint8 (host) -> the network's input on the device, in its precision and layout."""
        x = frames.to(self.device).permute(0, 3, 1, 2).contiguous().float()
        x = resized((x - self._mean) / self._std, self.size)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.dtype, memory_format=layout)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """The protocol's logits for the preprocessed input."""
        return self.protocol.infer(self.predict, x)

    @staticmethod
    def postprocess(logits: torch.Tensor, source: Size) -> torch.Tensor:
        """N x C x h x w maps -> N x H x W uint8 class mask at the source size, in host memory."""
        # max(1).indices is argmax(1) (the first maximum, NaN propagated) but ~15x faster on CPU in
        # torch 2.x for N x C x H x W, whose channel dimension is strided: argmax(1) takes a slow path.
        return resized(logits, source).max(1).indices.to(torch.uint8).cpu()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """One timed end-to-end call: the mask of ``frames``."""
        source = (frames.shape[1], frames.shape[2])
        clock = _Clock(self.device)
        x = self.preprocess(frames)
        clock.lap()
        logits = self.model(x)
        clock.lap()
        mask = self.postprocess(logits, source)
        clock.lap()
        self.times.append(clock.stages())
        return mask


class _Clock:
    """Laps of one call: CUDA events on the current stream, or ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []
        self.lap()

    def lap(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def stages(self) -> tuple[float, float, float]:
        marks = self.marks
        if self.cuda:
            marks[-1].synchronize()
            laps = [a.elapsed_time(b) for a, b in itertools.pairwise(marks)]
        else:
            laps = [(b - a) * 1e3 for a, b in itertools.pairwise(marks)]
        return laps[0], laps[1], laps[2]


def frames_of(images: torch.Tensor, source: Size) -> torch.Tensor:
    """N x 3 x h x w normalised images as N x H x W x 3 uint8 frames of the ``source`` size (host):
    the normalisation undone, resized, rounded: what a camera would hand over."""
    mean, std = torch.from_numpy(MEAN).view(1, 3, 1, 1), torch.from_numpy(STD).view(1, 3, 1, 1)
    pixels = resized(images.float().cpu() * std + mean, source)
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def measure_pipeline(pipeline: Pipeline, frames: torch.Tensor, timing: Protocol) -> list[tuple[float, float, float]]:
    """Time ``pipeline`` on ``frames`` with the latency timer's warm-up and stopping rule; the timed
    calls' own stage laps (the warm-up's left out), for `segbench.rows.endtoend.e2e_fields`."""
    session = Session(call=lambda: pipeline(frames), predict=pipeline.predict, blocking=True)
    timed = time_sessions([session], pipeline.device, timing)
    return pipeline.times[-len(timed.device_ms[0]) :]
