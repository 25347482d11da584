"""``folder:PATH``: your own data as ``PATH/images`` and ``PATH/masks``, matched by file stem.

Masks are single-channel PNGs of class ids (palette PNGs are read as their indices), 255 = ignore.
The split: when ``images/train`` and ``images/val`` exist (with the same subfolders under ``masks/``)
they are the splits; otherwise the pairs, sorted by stem, go to val every fifth one (the 5th, 10th, ...)
and to train otherwise, so the split is fixed whatever the training seed (an 80/20 split).
Every mask is decoded once at construction, to check its values and to infer the class count
(largest id + 1 over both splits, so train and val agree) when it is not given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segbench.data.common import (
    IGNORE_INDEX,
    PairedImageDataset,
    check_pair,
    check_request,
    check_values,
    list_images,
    read_mask,
    require_dir,
)
from segbench.errors import UserError

VAL_EVERY = 5
SPLITS = ("train", "val")


def _pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs of one folder pair; an image without its mask is an error."""
    images = list_images(images_dir)
    if not images:
        raise UserError(f"{images_dir}: no images found; expected image files (.png, .jpg, ...)")
    masks = list_images(masks_dir)
    pairs = []
    for stem, image in images.items():
        if stem not in masks:
            raise UserError(f"{image}: image has no mask; expected {masks_dir / (stem + '.png')}")
        pairs.append((image, masks[stem]))
    return pairs


def _splits(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    images_dir = require_dir(root / "images", "images folder (expected PATH/images and PATH/masks)")
    masks_dir = require_dir(root / "masks", "masks folder (expected PATH/images and PATH/masks)")
    if all((images_dir / s).is_dir() for s in SPLITS):
        return {s: _pairs(images_dir / s, require_dir(masks_dir / s, f"{s} masks folder")) for s in SPLITS}
    pairs = _pairs(images_dir, masks_dir)
    if len(pairs) < VAL_EVERY:
        raise UserError(
            f"{images_dir}: {len(pairs)} image(s); need at least {VAL_EVERY} to hold out every "
            f"{VAL_EVERY}th as val, or use images/train and images/val subfolders"
        )
    return {
        "train": [p for i, p in enumerate(pairs) if i % VAL_EVERY != VAL_EVERY - 1],
        "val": [p for i, p in enumerate(pairs) if i % VAL_EVERY == VAL_EVERY - 1],
    }


def _largest_id(ids: np.ndarray) -> int:
    labelled = ids[ids != IGNORE_INDEX]
    return int(labelled.max()) if labelled.size else -1


class FolderDataset(PairedImageDataset):
    """Images and masks from ``PATH/images`` and ``PATH/masks``; see the module docstring."""

    def __init__(self, path: str | None, split: str = "train", seed: int = 0, num_classes: int | None = None) -> None:
        root = require_dir(check_request("folder", path, split, SPLITS), "dataset folder")
        splits = _splits(root)
        everything = [p for s in SPLITS for p in splits[s]]
        val = set(splits["val"])
        for image, mask in everything:
            check_pair(image, mask, decode=(image, mask) in val)
        ids = {mask: np.unique(read_mask(mask)) for _, mask in everything}  # small: kept, masks are not
        if set(np.concatenate(list(ids.values())).tolist()) == {0, IGNORE_INDEX}:
            raise UserError(
                f"{root / 'masks'}: masks hold only 0 and {IGNORE_INDEX}, and {IGNORE_INDEX} means 'ignore', so this "
                f"would train one class; for binary masks store the foreground as 1 (e.g. with numpy: "
                f"mask = (mask == {IGNORE_INDEX}).astype('uint8'))"
            )
        if num_classes is None:
            num_classes = max(_largest_id(i) for i in ids.values()) + 1
            if num_classes < 1:
                raise UserError(f"{root / 'masks'}: every mask pixel is 255 (ignore); no class to learn")
        elif num_classes < 1:
            raise UserError(f"--num-classes must be a positive integer, not {num_classes}")
        for mask_path, mask_ids in ids.items():
            check_values(mask_ids, num_classes, mask_path)
        super().__init__(splits[split], num_classes=num_classes, name=f"folder:{root}")
