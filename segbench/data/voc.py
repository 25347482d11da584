"""``voc:PATH``: PASCAL VOC 2012 segmentation, 21 classes (background + 20), 255 = ignore (borders).

PATH is the ``VOC2012`` folder (``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``) or a
folder above it (``VOCdevkit`` or the folder holding ``VOCdevkit``). The split lists are
``ImageSets/Segmentation/{train,val}.txt``. Pairs are header-checked and every mask decoded once at
construction (VOC masks are small), so a bad file fails before training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segbench.data.common import PairedImageDataset, check_pair, check_request, check_values, read_mask, require_dir
from segbench.errors import UserError

NUM_CLASSES = 21
SPLITS = ("train", "val", "trainval")


def find_root(path: Path) -> Path:
    """The VOC2012 folder at or below ``path``."""
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise UserError(
        f"{path}: not a VOC2012 folder; expected JPEGImages, SegmentationClass and ImageSets/Segmentation "
        "in PATH, PATH/VOC2012 or PATH/VOCdevkit/VOC2012"
    )


class VOCDataset(PairedImageDataset):
    """PASCAL VOC 2012 segmentation split; see the module docstring."""

    default_size = (320, 320)

    def __init__(self, path: str | None, split: str = "train", seed: int = 0, num_classes: int | None = None) -> None:
        root = find_root(require_dir(check_request("voc", path, split, SPLITS, num_classes, NUM_CLASSES), "VOC folder"))
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise UserError(f"{listing}: split list not found")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        if not ids:
            raise UserError(f"{listing}: the split list is empty")
        images = require_dir(root / "JPEGImages", "VOC JPEGImages folder")
        masks = require_dir(root / "SegmentationClass", "VOC SegmentationClass folder")
        pairs = []
        for image_id in ids:
            image, mask = images / f"{image_id}.jpg", masks / f"{image_id}.png"
            if not image.is_file():
                raise UserError(f"{image}: image listed in {listing.name} not found")
            if not mask.is_file():
                raise UserError(f"{image}: image has no mask; expected {mask}")
            check_pair(image, mask, decode=split == "val")
            check_values(np.unique(read_mask(mask)), NUM_CLASSES, mask)
            pairs.append((image, mask))
        super().__init__(pairs, num_classes=NUM_CLASSES, name=f"voc:{path}")
