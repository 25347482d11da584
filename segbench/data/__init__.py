"""Datasets: each yields ``(image float32 3xHxW normalised, mask int64 HxW, 255 = ignore)``.

Every dataset has ``num_classes``, ``name`` and ``default_size`` (the training crop used when none
is given) and checks its files at construction, so bad input fails before any training or output.
Formats are registered through the ``register_datasets`` hook; `open_datasets` resolves a
``--dataset`` value such as ``synthetic`` or ``folder:PATH`` through the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segbench.registry import SegmentationDataset

#: The training input (H, W) when neither the user nor the dataset names one.
TRAIN_SIZE = (256, 256)


def open_datasets(
    selection: str, seed: int = 0, num_classes: int | None = None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The train and val splits named by ``selection`` (``name`` or ``name:PATH``)."""
    from segbench.plugins import get_registry

    spec, path = get_registry().dataset(selection)
    train = spec.open(path, "train", seed=seed, num_classes=num_classes)
    val = spec.open(path, "val", seed=seed, num_classes=num_classes)
    return train, val


def train_size(dataset: SegmentationDataset, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` when given, else the dataset's ``default_size``, else `TRAIN_SIZE`."""
    if size is not None:
        return size
    height, width = getattr(dataset, "default_size", TRAIN_SIZE)
    return height, width


__all__ = ["TRAIN_SIZE", "open_datasets", "train_size"]
