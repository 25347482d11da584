"""Segmentation accuracy from a confusion matrix: mIoU, pixel accuracy, per-class IoU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Accuracy:
    """What `ConfusionMatrix.compute` returns; ``None`` marks a class absent from prediction and target."""

    miou: float
    pixel_acc: float
    iou_per_class: list[float | None]


class ConfusionMatrix:
    """Counts (target, prediction) pixel pairs over any number of batches, on the tensors' device.

    - Pixels whose target is ``ignore_index`` are left out entirely.
    - ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class absent from both predictions and targets has no
      IoU (``None``) and is left out of the mean, as mmsegmentation and torchmetrics do, so a dataset
      that never shows a class is not penalised for it. A class that is predicted but never present
      has IoU 0 and counts.
    - Pixel accuracy = correctly labelled pixels / labelled (non-ignored) pixels.

    :param num_classes: class count; targets and predictions must lie in ``0..num_classes-1``.
    :param ignore_index: target value that marks unlabelled pixels.
    :param device: where to keep the matrix; the device of the first update when None.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, not {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = (
            None if device is None else torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        )

    def reset(self) -> None:
        """Forget every count (keeps the device)."""
        if self.matrix is not None:
            self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        :param pred: class ids shaped like ``target``, or logits ``N x C x H x W`` (argmax over C).
        :param target: class ids ``N x H x W`` (any shape matching ``pred``), ``ignore_index`` = unlabelled.
        """
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")
        if self.matrix is None:
            self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=target.device)
        keep = target != self.ignore_index
        t = target[keep].to(self.matrix.device, torch.int64)
        p = pred[keep].to(self.matrix.device, torch.int64)
        n = self.num_classes
        if t.numel() and bool(((t < 0) | (t >= n) | (p < 0) | (p >= n)).any()):
            raise ValueError(f"class ids must lie in 0..{n - 1} (or be {self.ignore_index} in the target)")
        self.matrix += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def compute(self) -> Accuracy:
        """mIoU, pixel accuracy and per-class IoU of everything added so far (NaN when nothing was)."""
        n = self.num_classes
        matrix = self.matrix.double().cpu() if self.matrix is not None else torch.zeros(n, n, dtype=torch.float64)
        tp = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - tp
        present = union > 0
        ious = [float(tp[c] / union[c]) if present[c] else None for c in range(n)]
        total = float(matrix.sum())
        miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else math.nan
        pixel_acc = float(tp.sum()) / total if total else math.nan
        return Accuracy(miou=miou, pixel_acc=pixel_acc, iou_per_class=ious)
