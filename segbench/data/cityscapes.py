"""``cityscapes:PATH``: Cityscapes fine annotations, label ids mapped to the 19 train ids.

Layout: ``PATH/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with
``PATH/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``. Label ids 0..33 are mapped with the
official table (cityscapesScripts ``labels.py``): the 19 evaluated classes get train ids 0..18, every
other id becomes 255 (ignore); a stored value above 33 is an error. Pairs are found and header-checked
at construction; masks (2048x1024 each) are decoded, mapped and checked when loaded.
"""

from __future__ import annotations

import numpy as np

from segbench.data.common import IGNORE_INDEX, PairedImageDataset, check_pair, check_request, require_dir
from segbench.errors import UserError

NUM_CLASSES = 19
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
#: label id -> train id for the 19 classes: road, sidewalk, building, wall, fence, pole, traffic light,
#: traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle, bicycle.
TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def label_map() -> np.ndarray:
    """34-entry lookup from label id to train id (255 for ids not evaluated)."""
    table = np.full(34, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in TRAIN_IDS.items():
        table[label_id] = train_id
    return table


class CityscapesDataset(PairedImageDataset):
    """One Cityscapes split with gtFine label ids mapped to train ids; see the module docstring."""

    default_size = (256, 512)

    def __init__(self, path: str | None, split: str = "train", seed: int = 0, num_classes: int | None = None) -> None:
        root = require_dir(
            check_request("cityscapes", path, split, SPLITS, num_classes, NUM_CLASSES), "Cityscapes folder"
        )
        images_dir = require_dir(root / "leftImg8bit" / split, f"Cityscapes leftImg8bit/{split} folder")
        masks_dir = require_dir(root / "gtFine" / split, f"Cityscapes gtFine/{split} folder")
        images = sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise UserError(f"{images_dir}: no */*{IMAGE_SUFFIX} images found")
        pairs = []
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            mask = masks_dir / image.parent.name / f"{stem}{MASK_SUFFIX}"
            if not mask.is_file():
                raise UserError(f"{image}: image has no mask; expected {mask}")
            check_pair(image, mask, decode=split == "val")
            pairs.append((image, mask))
        super().__init__(pairs, num_classes=NUM_CLASSES, name=f"cityscapes:{path}", label_map=label_map())
