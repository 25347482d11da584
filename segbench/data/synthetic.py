"""``synthetic``: the embedded default dataset, generated in memory from the seed.

Each image is a smooth, randomly tinted background (class 0) with 3 to 6 overlapping objects. Every
object class has its own shape, colour and texture, jittered per object, and the whole image gets pixel
noise:

- 1 disc: red (205, 60, 55), flat;
- 2 rectangle: green (60, 175, 70), checkerboard of 8 px cells;
- 3 triangle: blue (60, 90, 210), flat;
- 4 ring: yellow (215, 200, 60), flat; its hole shows what lies beneath;
- 5 ellipse: purple (175, 70, 190), stripes of 6 px period at any angle.

With ``num_classes = n`` (2..6) only classes ``1..n-1`` are drawn. The split is fixed: train and val
come from separate random streams of the seed (200 and 50 images of 128x128 by default), so they never
share an image and the same seed always gives the same data. Cues are local (colour and texture) and
objects large, so a small network learns it in a few hundred steps at 128x128.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segbench.data.common import to_tensors
from segbench.errors import UserError

#: (colour, texture) per object class, index = class id - 1.
COLOURS = np.array([(205, 60, 55), (60, 175, 70), (60, 90, 210), (215, 200, 60), (175, 70, 190)], float)
MAX_CLASSES = len(COLOURS) + 1
SPLIT_SIZES = {"train": 200, "val": 50}
SPLIT_STREAMS = {"train": 0, "val": 1}


def _shape(cls: int, ys: np.ndarray, xs: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of object class ``cls`` centred at the origin of the ``ys, xs`` grid."""
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = xs * cos + ys * sin, -xs * sin + ys * cos  # rotated coordinates
    if cls == 1:
        return xs**2 + ys**2 <= r**2
    if cls == 2:
        return (np.abs(u) <= r) & (np.abs(v) <= 0.6 * r)
    if cls == 3:
        inside = np.ones_like(xs, dtype=bool)
        for k in range(3):  # three half-planes of an equilateral triangle of circumradius r
            a = angle + 2 * np.pi * k / 3
            inside &= xs * np.cos(a) + ys * np.sin(a) <= r / 2
        return inside
    if cls == 4:
        d2 = xs**2 + ys**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    return (u / r) ** 2 + (v / (0.6 * r)) ** 2 <= 1.0


def _texture(cls: int, ys: np.ndarray, xs: np.ndarray, angle: float) -> np.ndarray:
    """Brightness offset of the class texture (0 for flat classes)."""
    if cls == 2:
        return np.where(((ys // 8) + (xs // 8)) % 2 == 0, 35.0, -35.0)
    if cls == 5:
        return 40.0 * np.sign(np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / 6))
    return np.zeros_like(xs, dtype=float)


def make_sample(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One HxWx3 uint8 image and its HxW uint8 mask, drawn from ``rng``."""
    h, w = size
    coarse = rng.uniform(50, 150, size=(4, 4, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    scale = min(h, w) / 128.0
    for _ in range(rng.integers(3, 7)):
        cls = int(rng.integers(1, num_classes))
        r = rng.uniform(14, 34) * scale
        cy, cx, angle = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi)
        colour = COLOURS[cls - 1] + rng.uniform(-25, 25, size=3)
        # draw inside the object's bounding box only: every shape lies within 1.17 r of its centre
        e = 1.2 * r
        y0, y1 = max(0, int(cy - e)), min(h, int(cy + e) + 2)
        x0, x1 = max(0, int(cx - e)), min(w, int(cx + e) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
        region = _shape(cls, yy - cy, xx - cx, r, angle)
        shaded = colour[None, None, :] + _texture(cls, yy, xx, angle)[..., None]
        image[y0:y1, x0:x1][region] = shaded[region]
        mask[y0:y1, x0:x1][region] = cls
    image += 10 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


class SyntheticDataset(Dataset):
    """Shapes-and-textures segmentation data held in memory; see the module docstring.

    :param path: must be None (the data is generated, not read).
    :param split: ``train`` or ``val``.
    :param seed: the data seed; the same seed gives the same images.
    :param num_classes: 2..6 (background + shape classes); 6 when None.
    :param length: images in the split (200 train, 50 val when None).
    :param image_size: (H, W) of every image.
    """

    def __init__(
        self,
        path: str | None = None,
        split: str = "train",
        seed: int = 0,
        num_classes: int | None = None,
        length: int | None = None,
        image_size: tuple[int, int] = (128, 128),
    ) -> None:
        if path:
            raise UserError("the synthetic dataset takes no path; use --dataset synthetic")
        if split not in SPLIT_SIZES:
            raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLIT_SIZES)}")
        num_classes = MAX_CLASSES if num_classes is None else num_classes
        if not 2 <= num_classes <= MAX_CLASSES:
            raise UserError(f"the synthetic dataset has 2 to {MAX_CLASSES} classes, not {num_classes}")
        self.num_classes = num_classes
        self.name = "synthetic"
        self.default_size = tuple(image_size)
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
        n = SPLIT_SIZES[split] if length is None else length
        samples = [make_sample(rng, image_size, num_classes) for _ in range(n)]
        self.images = np.stack([s[0] for s in samples]) if samples else np.zeros((0, *image_size, 3), np.uint8)
        self.masks = np.stack([s[1] for s in samples]) if samples else np.zeros((0, *image_size), np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(self.images[index], self.masks[index])
