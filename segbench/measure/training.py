"""Brief training under one fixed, recorded budget, then mIoU on the val split.

Defaults (the same for every model, so the comparison is fair; each is a keyword you can change):

- optimiser SGD with momentum 0.9, learning rate ``DEFAULT_LR`` = 0.02, weight decay 1e-4; poly
  schedule ``lr * (1 - step / steps) ** 0.9``; from scratch (no pre-training). (AdamW at 2e-3 trained
  Fast-SCNN as well but made the BN-free VGG16 of FCN-8s diverge within three steps; SGD trains both.)
- loss: cross-entropy with ignore index 255; a model that returns a tuple ``(main, *aux)`` in training
  mode gets ``loss(main) + 0.4 * sum(loss(aux))`` (the Fast-SCNN paper's auxiliary weight);
- augmentation per sample: resize to the training size, random scale in [0.75, 1.5], pad (image 0
  = mean colour, mask 255), random crop back to the training size, horizontal flip with p = 0.5;
- evaluation: every val image resized to the training size, logits resized back (bilinear) to the
  mask's own size, argmax, `ConfusionMatrix`; so a model sees val images at the scale it trained at;
- mixed precision (float16 autocast + gradient scaling) on CUDA, float32 on CPU;
- determinism: the seed sets the weights (the train runner seeds the build), the data order and the
  augmentation; on CPU PyTorch's deterministic algorithms are on while training, and the row's
  ``deterministic`` says whether every operation that ran had a deterministic kernel. The built-ins
  do, so the same seed on the same machine gives the same mIoU. On CUDA cross-entropy,
  bilinear-upsampling backward and adaptive-pooling backward use atomics, so it is False there, the
  mIoU may differ between runs, and nothing is forced that would only make training slower (cuDNN
  autotunes).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence, Sized
from copy import deepcopy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from segbench.checks import check_lr, check_nonnegative, check_positive, check_seed
from segbench.data import train_size
from segbench.data.common import IGNORE_INDEX
from segbench.errors import UserError
from segbench.measure import recipe
from segbench.measure.accuracy import Accuracy, ConfusionMatrix
from segbench.measure.allocator import keep_freed_memory
from segbench.measure.checkpoints import load_weights, save_checkpoint
from segbench.measure.convbackend import ONEDNN, Plan, parse_plan, probe, use_plan
from segbench.measure.flags import deterministic
from segbench.measure.memory import MIB, cpu_peak_mb
from segbench.measure.protocols import WHOLE, EvalProtocol
from segbench.writing import WriteError

if TYPE_CHECKING:
    from segbench.measure.data_parallel import DataParallel
    from segbench.registry import Samples, SegmentationDataset

StepCallback = Callable[[int, float], None]
#: Timed steps (after one untimed) that measure a step's wall time for ``--train-time``.
CALIBRATION_STEPS = 3
#: How far ``train_seconds`` may exceed a ``--train-time`` budget (relative), on a quiet machine: the
#: steps are estimated from a median step, and a step is whole. Documented in docs/training.md.
BUDGET_TOLERANCE = 0.10


class BudgetError(RuntimeError):
    """A time budget too small for one training step (the model's row says so)."""


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def augment(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size``, random scale, pad, random crop to ``size``, random flip (torch's global RNG)."""
    h, w = size
    factor = float(torch.empty(()).uniform_(*recipe.SCALE_RANGE))
    sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
    image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=(sh, sw), mode="nearest")[0, 0].long()
    pad_h, pad_w = max(0, h - sh), max(0, w - sw)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    top = int(torch.randint(0, image.shape[1] - h + 1, ()))
    left = int(torch.randint(0, image.shape[2] - w + 1, ()))
    image, mask = image[:, top : top + h, left : left + w], mask[top : top + h, left : left + w]
    if float(torch.rand(())) < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    return image.contiguous(), mask.contiguous()


class _Augmented(Dataset):
    """Training view: each sample augmented to the training size (so batches stack)."""

    def __init__(self, dataset: Samples, size: tuple[int, int]) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(*self.dataset[index], self.size)


class _Resized(Dataset):
    """Evaluation view: the image resized to the evaluation size, the mask untouched."""

    def __init__(self, dataset: Samples, size: tuple[int, int]) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[index]
        if tuple(image.shape[-2:]) != self.size:
            image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False)[0]
        return image, mask


def _collate_eval(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def segmentation_loss(output: Any, target: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (ignore 255) of the main logits plus ``recipe.AUX_WEIGHT`` x each auxiliary output's.

    Each term is the mean over the labelled pixels, or the sum divided by ``pixels`` when given
    (data-parallel training: `segbench.measure.data_parallel.DataParallel.pixels`).
    """
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    losses = []
    for logits in outputs:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if pixels is None:
            losses.append(F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX))
        else:
            losses.append(F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum") / pixels)
    return losses[0] + recipe.AUX_WEIGHT * sum(losses[1:], torch.zeros((), device=target.device))


def tensor_mib(model: nn.Module) -> float:
    """MiB held by a model's parameters and buffers."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


@contextlib.contextmanager
def cuda_peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """``torch.cuda.max_memory_allocated`` (MiB) over the enclosed code, in ``result["peak_mem_mb"]``.

    Covers weights, gradients, optimiser state, activations and batches. A no-op (None) off CUDA:
    there ``fit`` measures its first step instead (see `train_and_evaluate`).
    """
    result: dict[str, float | None] = {"peak_mem_mb": None}
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield result
    torch.cuda.synchronize(device)
    result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / MIB


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _append_loss(losses: list[float], step: Callable[..., float], *batch: torch.Tensor) -> None:
    """One training step whose loss is kept (the step runs inside a memory-profiled call)."""
    losses.append(step(*batch))


def _recipe_step(
    model: nn.Module, *, steps: int, lr: float, device: torch.device, parallel: DataParallel | None = None
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One optimiser step of the recipe on a batch (the poly schedule spans ``steps``); returns the loss
    (under ``parallel``, the loss of the whole global batch)."""
    # fused: one pass over weights, gradients and momentum instead of several; the update is
    # memory-bound (docs/training.md gives the measured gain for FCN-8s)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=recipe.MOMENTUM, weight_decay=recipe.WEIGHT_DECAY, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: (1 - s / steps) ** recipe.POLY_POWER)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    def step(images: torch.Tensor, masks: torch.Tensor) -> float:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with _autocast(device):
            loss = segmentation_loss(model(images), masks, parallel.pixels(masks) if parallel is not None else None)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        return float(loss.detach()) if parallel is None else parallel.mean(loss)

    return step


def fit(
    model: nn.Module,
    train_set: SegmentationDataset,
    *,
    steps: int,
    batch_size: int,
    size: tuple[int, int],
    lr: float,
    device: torch.device,
    generator: torch.Generator,
    num_workers: int = 0,
    on_step: StepCallback | None = None,
    parallel: DataParallel | None = None,
) -> float | None:
    """Run ``steps`` optimiser steps of the module docstring's recipe on ``model`` (already on device).

    On CPU, returns the peak MiB the CPU allocator handed out during the first step (gradients,
    optimiser state, activations: later steps reuse the same sizes); None on other devices.
    ``parallel``: this rank's part of each global batch of ``batch_size`` (``model`` wrapped by
    `segbench.measure.data_parallel.DataParallel.training`).
    """
    if steps == 0:
        return None
    sampler: Sampler[int] = RandomSampler(train_set, num_samples=steps * batch_size, generator=generator)
    if parallel is not None:
        sampler, batch_size = parallel.split(sampler, batch_size)
    loader = DataLoader(
        _Augmented(train_set, size),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
    train_step = _recipe_step(model, steps=steps, lr=lr, device=device, parallel=parallel)
    model.train()
    first_step_mb = None
    for step, (images, masks) in enumerate(loader, start=1):
        if step == 1 and device.type == "cpu":
            losses: list[float] = []
            first_step_mb = cpu_peak_mb(partial(_append_loss, losses, train_step, images, masks))
            value = losses[0]
        else:
            value = train_step(images, masks)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; try a lower --lr")
        if on_step:
            on_step(step, value)
    return first_step_mb


def seconds_per_step(
    model: nn.Module,
    train_set: SegmentationDataset,
    *,
    batch_size: int,
    size: tuple[int, int],
    lr: float,
    device: torch.device,
    num_workers: int = 0,
) -> float:
    """Median wall time of a training step as `fit` runs it.

    A step here is what it is in `fit`: a batch loaded and augmented through the same loader, then the
    recipe step, on a copy of ``model`` (left untouched). The first step is not timed: it pays the
    one-time costs (lazy imports, the allocator's growth, loader workers starting), which the first
    model of a run would otherwise be charged alone. The caller reseeds afterwards, so the RNG draws
    made here (augmentation, dropout) change nothing that follows.
    """
    copy = deepcopy(model).train()
    step = _recipe_step(copy, steps=CALIBRATION_STEPS + 1, lr=lr, device=device)
    sampler = RandomSampler(
        cast("Sized", train_set),
        num_samples=(CALIBRATION_STEPS + 1) * batch_size,
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        _Augmented(train_set, size),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    times = []
    for _ in range(CALIBRATION_STEPS + 1):
        start = time.perf_counter()
        step(*next(batches))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def budget_steps(budget: float, per_step: float) -> int:
    """Optimiser steps that fit in ``budget`` seconds at ``per_step`` seconds each; at least one, or an error."""
    steps = int(budget // per_step)
    if steps < 1:
        raise BudgetError(
            f"--train-time {budget:g} s leaves no time for a step: a step takes {per_step:.2f} s "
            "(data loading included)"
        )
    return steps


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], Any],
    dataset: Samples,
    *,
    num_classes: int,
    size: tuple[int, int],
    device: torch.device | str = "cpu",
    batch_size: int,
    num_workers: int = 0,
    parallel: DataParallel | None = None,
    protocol: EvalProtocol = WHOLE,
) -> Accuracy:
    """mIoU etc. on ``dataset``: images resized to ``size``, logits back to each mask's size, in fp32.

    ``predict(images)`` gives logits: a model in eval mode, or a runtime session prepared for batches
    of exactly ``batch_size`` (the last batch is padded with copies of its last image), called as the
    evaluation ``protocol`` says (`segbench.measure.protocols`). ``parallel``:
    this rank evaluates its part of ``dataset`` and the confusion matrices of all ranks are summed.
    """
    device = torch.device(device)
    if parallel is not None:
        dataset = parallel.part(dataset)
    loader = DataLoader(
        _Resized(dataset, size), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_eval
    )
    matrix = ConfusionMatrix(num_classes, IGNORE_INDEX, device=device)
    for images, masks in loader:
        padded = torch.cat([images, images[-1:].expand(batch_size - len(images), *images.shape[1:])])
        logits = protocol.infer(predict, padded.to(device))[: len(images)].float()
        for one, mask in zip(logits, masks):
            mask = mask.to(device)
            one = one.to(device)
            if one.shape[-2:] != mask.shape:
                one = F.interpolate(one[None], size=mask.shape, mode="bilinear", align_corners=False)[0]
            matrix.update(one.argmax(0), mask)
    if parallel is not None and matrix.matrix is not None:
        parallel.sum(matrix.matrix)
    return matrix.compute()


@dataclass(frozen=True)
class TrainSettings:
    """How `train_and_evaluate` trains, checked once here (UserError on a bad value).

    :param steps: optimiser steps; None with ``time_budget``.
    :param batch_size: the global batch (under data parallelism, split over the ranks).
    :param size: training (and evaluation) size (H, W); the train set's ``default_size`` when None.
    :param lr: peak learning rate; ``recipe.DEFAULT_LR`` when None.
    :param time_budget: seconds of training steps (data loading included; the conv probe and the step
        timing come on top, see `_fit`): the steps
        that fit are run as ``steps`` would run them (poly schedule over them), so ``steps`` = the
        row's ``train_steps`` reproduces the mIoU exactly.
    :param conv_backend: CPU convolution backends while training and evaluating: ``auto`` (measured,
        see `segbench.measure.convbackend`) or a plan's text (``onednn``, ``native``, ``native:LAYER,...``).
    :param protocol: how the val split is evaluated (`segbench.measure.protocols`); the row records it.
    """

    steps: int | None
    batch_size: int
    size: tuple[int, int] | None = None
    lr: float | None = None
    device: str = "cpu"
    seed: int = 0
    time_budget: float | None = None
    conv_backend: str = ONEDNN
    num_workers: int = 0
    protocol: EvalProtocol = WHOLE

    def __post_init__(self) -> None:
        check_nonnegative(self.steps, "steps")
        check_positive(self.batch_size, "batch size")
        check_lr(self.lr)
        check_seed(self.seed)
        if self.time_budget is not None and not (self.time_budget > 0 and math.isfinite(self.time_budget)):
            raise UserError(f"bad --train-time {self.time_budget}: expected seconds > 0")
        if (self.steps is None) == (self.time_budget is None):
            raise UserError("give either a number of steps or a time budget")


def train_and_evaluate(
    model: nn.Module,
    train_set: SegmentationDataset,
    val_set: SegmentationDataset,
    settings: TrainSettings,
    *,
    weights: str | Path | None = None,
    save: str | Path | None = None,
    on_step: StepCallback | None = None,
    parallel: DataParallel | None = None,
) -> dict[str, Any]:
    """Train ``model`` briefly on ``train_set`` as ``settings`` say, measure it on ``val_set``; return row fields.

    ``weights``: a local state_dict to start from (``steps=0`` then only evaluates it); ``save``: where
    to write the trained one; ``on_step(step, loss)`` after every step; ``parallel``: train as one rank
    of a data-parallel job (`segbench.measure.data_parallel`), only rank 0 writes ``save`` (atomically: a
    failed write leaves no checkpoint, and the row keeps its measurements with ``error`` saying why).
    Returns ``dataset, train_steps, train_seconds, miou, pixel_acc, iou_per_class, peak_mem_mb``
    (training only: CUDA ``max_memory_allocated``; CPU the weights and buffers plus the allocator peak of
    the first step, see `fit`), ``train_budget_seconds, train_conv_backend, conv_probe_seconds,
    deterministic``, and the conditions; ``train_seconds`` is the training steps' time (not the conv
    probe's, ``conv_probe_seconds``, nor the step timing's; see `_fit`).
    """
    _check_splits(train_set, val_set, trains=bool(settings.steps or settings.time_budget))
    size = train_size(train_set, settings.size)
    dev = torch.device(settings.device)
    if dev.type == "cpu":
        keep_freed_memory()
    if weights:
        load_weights(model, weights)
    model.to(dev)
    channels = val_set[0][0].shape[0]
    plan, probe_seconds = _conv_plan(model, settings.conv_backend, (settings.batch_size, channels, *size), dev)
    with _deterministic(dev) as nondeterministic, use_plan(model, plan):
        steps, seconds, memory = _fit(model, train_set, settings, size, on_step, parallel)
        accuracy = evaluate(
            model.eval(),
            val_set,
            num_classes=train_set.num_classes,
            size=size,
            device=dev,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            parallel=parallel,
            protocol=settings.protocol,
        )
    return {
        **_saved(model, save, parallel),
        "dataset": train_set.name,
        "train_steps": steps,
        "train_seconds": seconds,
        "train_budget_seconds": settings.time_budget,
        "train_conv_backend": str(plan) if dev.type == "cpu" else None,
        "conv_probe_seconds": probe_seconds,
        "deterministic": not nondeterministic,
        **_accuracy_fields(accuracy),
        **settings.protocol.fields(),
        "peak_mem_mb": memory,
        **_conditions(settings.batch_size, size, train_set.num_classes, dev),
    }


def _saved(model: nn.Module, save: str | Path | None, parallel: DataParallel | None) -> dict[str, Any]:
    """Write ``save`` (rank 0 only); a failed write is the row's ``error``, beside the mIoU it keeps."""
    if save and (parallel is None or parallel.rank == 0):
        try:
            save_checkpoint(model, save)
        except WriteError as exc:
            return {"error": f"--save: {exc}"}
    return {}


def _check_splits(train_set: SegmentationDataset, val_set: SegmentationDataset, trains: bool) -> None:
    if trains and not len(train_set):
        raise UserError(f"dataset {train_set.name}: the train split is empty")
    if not len(val_set):
        raise UserError(f"dataset {val_set.name}: the val split is empty")


def _fit(
    model: nn.Module,
    train_set: SegmentationDataset,
    settings: TrainSettings,
    size: tuple[int, int],
    on_step: StepCallback | None,
    parallel: DataParallel | None,
) -> tuple[int, float, float | None]:
    """The training part of `train_and_evaluate`: (steps run, their seconds, peak MiB).

    Under a time budget the steps are those that fit in it at the timed step's pace (`seconds_per_step`,
    data loading included); the seconds are the training's, so they hold the budget within
    `BUDGET_TOLERANCE`. The conv probe (``conv_probe_seconds``) and the step timing come on top, the
    same for every model (its one-time costs are not charged to any).
    """
    dev, lr = torch.device(settings.device), settings.lr or recipe.DEFAULT_LR
    start = time.perf_counter()
    if settings.time_budget is not None:
        per_step = seconds_per_step(
            model,
            train_set,
            batch_size=settings.batch_size,
            size=size,
            lr=lr,
            device=dev,
            num_workers=settings.num_workers,
        )
        steps = budget_steps(settings.time_budget, per_step)
        start = time.perf_counter()
    elif settings.steps is not None:  # always, without a time budget (`TrainSettings`)
        steps = settings.steps
    generator = seed_everything(settings.seed)
    if parallel is not None:  # augmentation from this rank's own seed; the data order stays the shared one
        seed_everything(settings.seed + parallel.rank)
    with cuda_peak_memory(dev) as memory, _trained(model, parallel) as trained:
        first_step_mb = fit(
            trained,
            train_set,
            steps=steps,
            batch_size=settings.batch_size,
            size=size,
            lr=lr,
            device=dev,
            generator=generator,
            num_workers=settings.num_workers,
            on_step=on_step,
            parallel=parallel,
        )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    if steps:
        _check_finite(model, steps)
    return steps, seconds, memory["peak_mem_mb"] if first_step_mb is None else tensor_mib(model) + first_step_mb


def _check_finite(model: nn.Module, steps: int) -> None:
    """Trained weights must be numbers: a last step that overflowed (its loss was finite, its update was
    not) would otherwise be evaluated as the constant predictor and reported as an mIoU."""
    bad = [
        name for name, value in model.state_dict().items() if value.is_floating_point() and not value.isfinite().all()
    ]
    if bad:
        raise FloatingPointError(f"weights became non-finite in {steps} steps ({bad[0]}, ...); try a lower --lr")


def _accuracy_fields(accuracy: Accuracy) -> dict[str, Any]:
    return {"miou": accuracy.miou, "pixel_acc": accuracy.pixel_acc, "iou_per_class": accuracy.iou_per_class}


def _conditions(batch_size: int, size: tuple[int, ...], num_classes: int, device: torch.device) -> dict[str, Any]:
    """The row fields that say under what the model was trained."""
    return {
        "batch_size": batch_size,
        "height": size[0],
        "width": size[1],
        "num_classes": num_classes,
        "precision": "amp_fp16" if device.type == "cuda" else "fp32",
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def _trained(model: nn.Module, parallel: DataParallel | None) -> Any:
    """What `fit` trains: ``model``, or its data-parallel wrapper while training lasts."""
    return contextlib.nullcontext(model) if parallel is None else parallel.training(model)


def _conv_plan(
    model: nn.Module, backend: str, input_shape: tuple[int, ...], device: torch.device
) -> tuple[Plan, float | None]:
    """The plan to train with on CPU and the probe's seconds (None when the plan was given or off the CPU)."""
    if device.type != "cpu":
        return Plan(), None
    plan = parse_plan(backend)
    if plan is not None:
        plan.layers(model)  # names checked before anything runs
        return plan, None
    found = probe(model, input_shape)
    return found.plan, found.seconds


#: How PyTorch words its warnings (warn-only mode) for an operation without a deterministic kernel, and
#: for cuBLAS when CUBLAS_WORKSPACE_CONFIG was not set before the process started.
_NONDETERMINISTIC = ("does not have a deterministic implementation", "is not deterministic because it uses CuBLAS")


#: Why CUDA training is never deterministic here (segbench's loss and upsampling add with atomics).
CUDA_NONDETERMINISTIC = (
    "on CUDA, pixel-wise cross-entropy (nll_loss2d) and the backward of bilinear upsampling and adaptive "
    "pooling have no deterministic kernel"
)


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[list[str]]:
    """On CPU: PyTorch's deterministic algorithms while training, in warn-only mode so an operation
    without a deterministic kernel is recorded, not fatal; restored afterwards. On CUDA nothing is
    forced (deterministic cuDNN algorithms without autotuning would slow training and still not make
    it deterministic: `CUDA_NONDETERMINISTIC`); cuDNN autotuning is on instead.

    Yields the list that receives PyTorch's warnings for such operations (filled when the block ends);
    other warnings pass through unchanged.
    """
    if device.type == "cuda":
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield [CUDA_NONDETERMINISTIC]
        finally:
            torch.backends.cudnn.benchmark = benchmark
        return
    alerts: list[str] = []
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False  # NaN-filling every allocation costs time, buys nothing here
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield alerts
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        deterministic.fill_uninitialized_memory = saved[2]
        for warning in {(str(w.message), w.category, w.filename, w.lineno): w for w in caught}.values():
            if any(marker in str(warning.message) for marker in _NONDETERMINISTIC):
                alerts.append(str(warning.message))
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
