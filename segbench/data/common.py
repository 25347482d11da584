"""What every on-disk format shares: reading and checking images and masks, and the paired dataset.

Checks follow one policy so a bad dataset fails before any training or output: each format finds its
image/mask pairs at construction, and `check_pair` opens both files' headers there (unreadable file,
multi-channel mask, size mismatch), and decodes the val split's files whole. Mask *values* are checked wherever a mask is decoded; formats
that decode every mask up front (folder, VOC) therefore fail at construction on a bad value too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from segbench.errors import UserError

IGNORE_INDEX = 255
#: ImageNet channel statistics: the usual input normalisation, so models see familiar input ranges.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: PIL modes that hold one value per pixel ("P" = palette: the indices are the class ids).
MASK_MODES = ("L", "P", "I", "I;16", "1")


def _open(path: Path, what: str) -> Image.Image:
    """Open an image lazily (header only); any failure becomes a one-line UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: unreadable {what} ({exc.__class__.__name__}); expected an image file") from None


def check_pair(image_path: Path, mask_path: Path, decode: bool = False) -> None:
    """Header checks of one image/mask pair: both readable, mask single-channel, same size.

    ``decode`` also decodes both files whole, so a truncated file fails now rather than when it is
    read; the formats do it for the val split, which is read only after training.
    """
    with _open(image_path, "image") as image, _open(mask_path, "mask") as mask:
        if decode:
            for path, opened in ((image_path, image), (mask_path, mask)):
                try:
                    opened.load()
                except OSError as exc:
                    raise UserError(f"{path}: unreadable ({exc}); the file is damaged or cut short") from None
        if mask.mode not in MASK_MODES:
            raise UserError(
                f"{mask_path}: mask has mode {mask.mode}; expected a single-channel PNG of class ids (mode L, P or I)"
            )
        if image.size != mask.size:
            raise UserError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} (WxH) but its image "
                f"{image_path.name} is {image.size[0]}x{image.size[1]}"
            )


def read_image(path: Path) -> np.ndarray:
    """Decode an image to HxWx3 uint8 RGB."""
    with _open(path, "image") as image:
        try:
            return np.asarray(image.convert("RGB"))
        except OSError as exc:
            raise UserError(f"{path}: unreadable image ({exc}); expected an image file") from None


def read_mask(path: Path) -> np.ndarray:
    """Decode a single-channel mask to HxW int64 class ids; palette PNGs give their indices."""
    with _open(path, "mask") as mask:
        if mask.mode not in MASK_MODES:
            raise UserError(f"{path}: mask has mode {mask.mode}; expected a single-channel PNG of class ids")
        try:
            return np.asarray(mask).astype(np.int64)
        except OSError as exc:
            raise UserError(f"{path}: unreadable mask ({exc}); expected a PNG of class ids") from None


def check_values(mask: np.ndarray, num_classes: int, path: Path) -> None:
    """Reject ids outside ``0..num_classes-1`` other than the ignore index 255."""
    bad = (mask < 0) | ((mask >= num_classes) & (mask != IGNORE_INDEX))
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))[:5]
        raise UserError(
            f"{path}: mask holds class id(s) {values} but the class count is {num_classes}; "
            f"accepted: 0..{num_classes - 1} and {IGNORE_INDEX} (ignore)"
        )


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 + HxW ids -> normalised float32 3xHxW and int64 HxW, as every dataset returns."""
    normalised = (image.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy()), torch.from_numpy(mask.astype(np.int64))


def list_images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem; two files with one stem are ambiguous."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise UserError(f"{path}: two files share the stem {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    return found


def check_request(
    name: str,
    path: str | None,
    split: str,
    splits: Sequence[str],
    num_classes: int | None = None,
    fixed_classes: int | None = None,
) -> Path:
    """The checks every on-disk format starts with: a path given, a known split, a class count that fits.

    :param name: the format's ``--dataset`` name, for the messages.
    :param fixed_classes: the format's own class count, if it has one (VOC 21, Cityscapes 19).
    """
    if not path:
        raise UserError(f"{name} dataset needs a path: --dataset {name}:PATH")
    if split not in splits:
        raise UserError(f"unknown {name} split {split!r}; accepted: {', '.join(splits)}")
    if fixed_classes is not None and num_classes not in (None, fixed_classes):
        raise UserError(f"{name} has {fixed_classes} classes; --num-classes {num_classes} does not fit it")
    return Path(path)


def require_dir(path: Path, what: str) -> Path:
    """A directory that must exist, with a message naming the layout expected."""
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found")
    return path


class PairedImageDataset(Dataset):
    """Image/mask file pairs decoded on access.

    :param pairs: (image, mask) paths, already header-checked with `check_pair`.
    :param label_map: optional 256-entry lookup from stored mask values to class ids (Cityscapes).
    """

    default_size: tuple[int, int] = (256, 256)

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        name: str,
        label_map: np.ndarray | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.name = name
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.pairs)

    def load_mask(self, index: int) -> np.ndarray:
        """The class-id mask of pair ``index``, mapped and value-checked."""
        path = self.pairs[index][1]
        mask = read_mask(path)
        if self.label_map is not None:
            if mask.max(initial=0) >= len(self.label_map):
                raise UserError(f"{path}: mask value {mask.max()} is not a label id of this format")
            mask = self.label_map[mask]
        check_values(mask, self.num_classes, path)
        return mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(read_image(self.pairs[index][0]), self.load_mask(index))
