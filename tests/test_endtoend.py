"""The end-to-end pipeline: frame in, mask out, against the datasets' and the evaluation's own path."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segbench.data.common import to_tensors
from segbench.measure.endtoend import Pipeline, frames_of, measure_pipeline
from segbench.measure.protocols import EvalProtocol, slide
from segbench.measure.settings import measurement_settings
from segbench.measure.timer import Protocol
from segbench.rows.endtoend import e2e_fields


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(8, 5, 1)).eval()


def _frame(height: int = 40, width: int = 64) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _model_only_mask(net: nn.Module, frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The dataset's normalisation, the evaluation's resize, the model, logits upsampled, argmax."""
    image, _ = to_tensors(frame, np.zeros(frame.shape[:2], dtype=np.int64))
    x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
    logits = F.interpolate(net(x), size=frame.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1).to(torch.uint8)


@torch.no_grad()
def test_the_mask_is_the_argmax_of_the_model_only_logits_upsampled() -> None:
    net, frame = _net(), _frame()
    pipeline = Pipeline(net, size=(24, 32), device=torch.device("cpu"))
    mask = pipeline(torch.from_numpy(frame)[None])
    assert mask.dtype == torch.uint8 and mask.shape == (1, 40, 64) and mask.device.type == "cpu"
    assert torch.equal(mask, _model_only_mask(net, frame, (24, 32)))
    assert len(mask.unique()) > 1  # a real segmentation, not one class everywhere
    assert len(pipeline.times) == 1 and all(t > 0 for t in pipeline.times[0])


@torch.no_grad()
def test_the_protocol_is_part_of_the_model_stage() -> None:
    net, frame = _net(), _frame()
    protocol = EvalProtocol("slide", window=(16, 16), stride=(8, 8))
    mask = Pipeline(net, size=(24, 32), device=torch.device("cpu"), protocol=protocol)(torch.from_numpy(frame)[None])
    image, _ = to_tensors(frame, np.zeros((40, 64), dtype=np.int64))
    x = F.interpolate(image[None], size=(24, 32), mode="bilinear", align_corners=False)
    logits = F.interpolate(slide(net, x, (16, 16), (8, 8)), size=(40, 64), mode="bilinear", align_corners=False)
    assert torch.equal(mask, logits.argmax(1).to(torch.uint8))


@torch.no_grad()
def test_channels_last_and_batches_give_the_same_masks() -> None:
    net, frame = _net(), _frame()
    frames = torch.from_numpy(np.stack([frame, frame[::-1].copy()]))
    plain = Pipeline(net, size=(24, 32), device=torch.device("cpu"))
    assert plain.preprocess(frames).is_contiguous()
    cl = Pipeline(
        net.to(memory_format=torch.channels_last), size=(24, 32), device=torch.device("cpu"), channels_last=True
    )
    assert cl.preprocess(frames).is_contiguous(memory_format=torch.channels_last)
    masks = cl(frames)
    assert masks.shape == (2, 40, 64)
    assert torch.equal(masks[1:], _model_only_mask(net, frame[::-1].copy(), (24, 32)))


@torch.no_grad()
def test_stage_times_add_up_to_the_end_to_end_time_on_cpu() -> None:
    """A property of how the stages are timed, not a speed claim: the stages of the same calls, timed
    inside, add up to the calls timed from outside (as the latency timer does) within 10 %.

    Means, not medians: means add up whatever the load does to single calls (on a machine shared by
    many jobs, preemptions fall into one stage or another, and a sum of medians is not the median of
    the sums); what is left over is the pipeline's own bookkeeping between its laps."""
    pipeline = Pipeline(_net(), size=(96, 128), device=torch.device("cpu"))
    frames = torch.from_numpy(_frame(192, 256))[None]
    outside = []
    with measurement_settings(torch.device("cpu"), 1):
        for _ in range(5):  # warm-up, as the latency runner does
            pipeline(frames)
        pipeline.times.clear()
        for _ in range(31):
            start = time.perf_counter()
            pipeline(frames)
            outside.append((time.perf_counter() - start) * 1e3)
    stages = sum(statistics.fmean(t[i] for t in pipeline.times) for i in range(3))
    assert len(pipeline.times) == 31
    assert abs(stages - statistics.fmean(outside)) <= 0.1 * statistics.fmean(outside)
    fields = e2e_fields(pipeline.times, (192, 256))
    assert fields["e2e_ms_ci_low"] <= fields["e2e_ms_median"] <= fields["e2e_ms_ci_high"]
    assert fields["e2e_ms_median"] == statistics.median(sum(t) for t in pipeline.times)


def test_e2e_fields_of_known_times() -> None:
    times = [(1.0, 2.0, 3.0), (2.0, 4.0, 1.0), (1.5, 3.0, 2.0)]
    fields = e2e_fields(times, (256, 512))
    assert fields["e2e_ms_median"] == statistics.median([6.0, 7.0, 6.5]) == 6.5
    assert (fields["preprocess_ms_median"], fields["model_ms_median"], fields["postprocess_ms_median"]) == (
        1.5,
        3.0,
        2.0,
    )
    assert (fields["e2e_ms_ci_low"], fields["e2e_ms_ci_high"]) == (6.0, 7.0)  # n < 6: min and max
    assert fields["e2e_ms_p90"] == 6.0 + 0.9 * 2 * 0.5  # inclusive interpolation between 6.5 and 7.0
    assert (fields["source_height"], fields["source_width"]) == (256, 512)


def test_frames_of_undoes_the_datasets_normalisation() -> None:
    frame = _frame(8, 12)
    image, _ = to_tensors(frame, np.zeros((8, 12), dtype=np.int64))
    assert torch.equal(frames_of(image[None], (8, 12))[0], torch.from_numpy(frame))
    assert frames_of(image[None], (16, 24)).shape == (1, 16, 24, 3)


@torch.no_grad()
def test_measure_pipeline_reports_the_timed_calls_only() -> None:
    pipeline = Pipeline(_net(), size=(24, 32), device=torch.device("cpu"))
    times = measure_pipeline(pipeline, torch.from_numpy(_frame())[None], Protocol(warmup=2, iters=5))
    assert len(pipeline.times) == 7
    assert times == pipeline.times[2:]
