"""Datasets: each yields ``(image float32 3xHxW normalised, mask int64 HxW, 255 = ignore)``.

Every dataset has ``num_classes``, ``name`` and ``default_size`` (the training crop used when none
is given) and checks its files at construction, so bad input fails before any training or output.
Formats are registered through the ``register_datasets`` hook; `open_datasets` resolves a
``--dataset`` value such as ``synthetic`` or ``folder:PATH`` through the registry.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, cast

from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.registry import SegmentationDataset

#: The training input (H, W) when neither the user nor the dataset names one.
TRAIN_SIZE = (256, 256)


def open_datasets(
    selection: str, seed: int = 0, num_classes: int | None = None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The train and val splits named by ``selection`` (``name`` or ``name:PATH``), and the first val
    sample read: every failure here (a missing folder, an unknown name, a damaged image, a plugin
    builder that raises, an empty val split) is a UserError, found before anything is measured."""
    from segbench.foreign import foreign_code, one_line
    from segbench.plugins import get_registry

    spec, path = get_registry().dataset(selection)
    try:
        with foreign_code():
            train = spec.open(path, "train", seed=seed, num_classes=num_classes)
            val = spec.open(path, "val", seed=seed, num_classes=num_classes)
            if not len(cast("Sized", val)):
                raise UserError(f"dataset {selection}: the val split is empty")
            len(cast("Sized", train))  # asked again by training: it must answer
            val[0]
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # a plugin's builder or dataset
        raise UserError(f"dataset {selection}: cannot open it: {one_line(exc)}") from None
    return train, val


def train_size(dataset: SegmentationDataset, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` when given, else the dataset's ``default_size``, else `TRAIN_SIZE`."""
    if size is not None:
        return size
    height, width = getattr(dataset, "default_size", TRAIN_SIZE)
    return height, width


__all__ = ["TRAIN_SIZE", "open_datasets", "train_size"]
