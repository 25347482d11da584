"""Datasets: tiny trees of each on-disk format, the synthetic generator, and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.data import open_datasets
from segbench.data.cityscapes import CityscapesDataset
from segbench.data.common import MEAN, STD
from segbench.data.folder import FolderDataset
from segbench.data.synthetic import SyntheticDataset
from segbench.data.voc import VOCDataset
from segbench.errors import UserError


def write_image(path: Path, h: int = 6, w: int = 8, value: int = 100) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((h, w, 3), value, dtype=np.uint8)
    pixels[0, 0] = (10, 20, 30)
    Image.fromarray(pixels).save(path)
    return pixels


def write_mask(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="L")
    if palette:  # colours unrelated to the indices: the indices must be read, not the colours
        image = image.convert("P")
        image.putpalette([(7 * i) % 256 for i in range(768)][::-1])
        image.putdata(ids.astype(np.uint8).ravel().tolist())
    image.save(path)


def mask_ids(label: int, h: int = 6, w: int = 8) -> np.ndarray:
    ids = np.zeros((h, w), dtype=np.uint8)
    ids[2:, 3:] = label
    ids[0, :] = 255
    return ids


def folder_tree(root: Path, labels: tuple[int, ...] = (1, 2, 3, 1, 4)) -> Path:
    for i, label in enumerate(labels):
        write_image(root / "images" / f"img{i}.png", value=20 * i)
        write_mask(root / "masks" / f"img{i}.png", mask_ids(label), palette=i % 2 == 1)
    return root


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_splits_differ() -> None:
    a = SyntheticDataset(split="train", seed=1, length=3, image_size=(32, 40))
    b = SyntheticDataset(split="train", seed=1, length=3, image_size=(32, 40))
    other_seed = SyntheticDataset(split="train", seed=2, length=3, image_size=(32, 40))
    val = SyntheticDataset(split="val", seed=1, length=3, image_size=(32, 40))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, other_seed.images)
    assert not np.array_equal(a.images, val.images)
    image, mask = a[0]
    assert image.shape == (3, 32, 40) and image.dtype == torch.float32
    assert mask.shape == (32, 40) and mask.dtype == torch.int64
    assert (a.num_classes, a.name, a.default_size) == (6, "synthetic", (32, 40))


def test_synthetic_defaults_and_class_count() -> None:
    train = SyntheticDataset(split="train", length=20, image_size=(64, 64))
    assert set(np.unique(train.masks)) == {0, 1, 2, 3, 4, 5}
    three = SyntheticDataset(split="val", num_classes=3, length=10, image_size=(64, 64))
    assert set(np.unique(three.masks)) == {0, 1, 2}
    # images follow the class colours: disc pixels (class 1) are red on average
    mean_colour = train.images[train.masks == 1].mean(0)
    assert mean_colour[0] > 150 and mean_colour[1] < 110 and mean_colour[2] < 110


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 7}, "2 to 6"),
        ({"num_classes": 1}, "2 to 6"),
        ({"path": "x"}, "no path"),
        ({"split": "test"}, "unknown split"),
    ],
)
def test_synthetic_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        SyntheticDataset(length=1, **kwargs)


def test_registry_opens_default_synthetic_splits() -> None:
    train, val = open_datasets("synthetic", seed=0)
    assert (len(train), len(val)) == (200, 50)
    assert train.default_size == (128, 128)


# --- folder ----------------------------------------------------------------------------------------


def test_folder_pairs_split_and_inferred_classes(tmp_path: Path) -> None:
    root = folder_tree(tmp_path)
    train = FolderDataset(str(root), split="train")
    val = FolderDataset(str(root), split="val")
    assert [p[0].name for p in train.pairs] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert [p[0].name for p in val.pairs] == ["img4.png"]
    assert train.num_classes == val.num_classes == 5  # largest id 4 (in val) + 1; 255 ignored
    image, mask = train[1]  # a palette mask: indices, not palette colours
    assert torch.equal(mask, torch.from_numpy(mask_ids(2).astype(np.int64)))
    expected = (np.array([10, 20, 30], np.float32) - MEAN) / STD
    assert torch.allclose(image[:, 0, 0], torch.from_numpy(expected))
    assert image.shape == (3, 6, 8)


def test_folder_given_class_count_and_split_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_image(tmp_path / "images" / split / f"{split}{i}.jpg")
            write_mask(tmp_path / "masks" / split / f"{split}{i}.png", mask_ids(1))
    train = FolderDataset(str(tmp_path), split="train", num_classes=9)
    val = FolderDataset(str(tmp_path), split="val", num_classes=9)
    assert (len(train), len(val), train.num_classes) == (3, 2, 9)
    assert val.pairs[0][0].name == "val0.jpg"


def test_registry_opens_folder(tmp_path: Path) -> None:
    train, val = open_datasets(f"folder:{folder_tree(tmp_path)}", num_classes=6)
    assert (len(train), len(val), train.num_classes) == (4, 1, 6)


def test_folder_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing.*not found"):
        FolderDataset(str(tmp_path / "missing"))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(UserError, match=r"images.*no images found"):
        FolderDataset(str(tmp_path / "empty"))

    root = folder_tree(tmp_path / "a")
    (root / "masks" / "img3.png").unlink()
    with pytest.raises(UserError, match=r"img3\.png: image has no mask"):
        FolderDataset(str(root))

    root = folder_tree(tmp_path / "b")
    with pytest.raises(UserError, match=r"img4\.png: mask holds class id\(s\) \[4\] but the class count is 4"):
        FolderDataset(str(root), num_classes=4)

    root = folder_tree(tmp_path / "c")
    (root / "images" / "img2.png").write_bytes(b"not a png at all")
    with pytest.raises(UserError, match=r"img2\.png: unreadable image"):
        FolderDataset(str(root))

    root = folder_tree(tmp_path / "d")
    Image.new("RGB", (8, 6)).save(root / "masks" / "img0.png")
    with pytest.raises(UserError, match=r"img0\.png: mask has mode RGB"):
        FolderDataset(str(root))

    root = folder_tree(tmp_path / "e")
    write_mask(root / "masks" / "img1.png", np.zeros((5, 8)))
    with pytest.raises(UserError, match=r"img1\.png: mask is 8x5"):
        FolderDataset(str(root))

    root = folder_tree(tmp_path / "f", labels=(1, 2))
    with pytest.raises(UserError, match="need at least 5"):
        FolderDataset(str(root))


# --- VOC -------------------------------------------------------------------------------------------


def voc_tree(root: Path, val_label: int = 15) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for name, label in (("2007_000032", 1), ("2007_000039", 20), ("2007_000063", val_label)):
        write_image(voc / "JPEGImages" / f"{name}.jpg")
        write_mask(voc / "SegmentationClass" / f"{name}.png", mask_ids(label), palette=True)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2007_000063\n")
    return root


def test_voc_layout(tmp_path: Path) -> None:
    root = voc_tree(tmp_path)
    train = VOCDataset(str(root), split="train")
    val = VOCDataset(str(root / "VOCdevkit" / "VOC2012"), split="val")
    assert (len(train), len(val), train.num_classes) == (2, 1, 21)
    image, mask = train[1]
    assert image.shape == (3, 6, 8)
    assert sorted(torch.unique(mask).tolist()) == [0, 20, 255]


def test_voc_bad_inputs(tmp_path: Path) -> None:
    root = voc_tree(tmp_path, val_label=21)
    with pytest.raises(UserError, match=r"2007_000063\.png: mask holds class id\(s\) \[21\]"):
        VOCDataset(str(root), split="val")
    with pytest.raises(UserError, match="not a VOC2012 folder"):
        VOCDataset(str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages"))
    (root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000032.png").unlink()
    with pytest.raises(UserError, match=r"2007_000032\.jpg: image has no mask"):
        VOCDataset(str(root), split="train")
    with pytest.raises(UserError, match="21 classes"):
        VOCDataset(str(root), num_classes=5)


# --- Cityscapes ------------------------------------------------------------------------------------


def cityscapes_tree(root: Path, bad_value: int | None = None) -> Path:
    ids = np.array([[7, 8, 26, 33], [0, 1, 6, 24]] * 2, dtype=np.uint8)  # 4x4
    if bad_value is not None:
        ids[3, 3] = bad_value
    for split, city in (("train", "aachen"), ("val", "lindau")):
        stem = f"{city}_000000_000019"
        write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", h=4, w=4)
        write_mask(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return root


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    root = cityscapes_tree(tmp_path)
    train = CityscapesDataset(str(root), split="train")
    assert (len(train), train.num_classes) == (1, 19)
    _, mask = train[0]
    # road 7->0, sidewalk 8->1, car 26->13, bicycle 33->18, person 24->11; ids 0, 1, 6 are not evaluated
    assert mask[0].tolist() == [0, 1, 13, 18]
    assert mask[1].tolist() == [255, 255, 255, 11]
    assert CityscapesDataset(str(root), split="val").pairs[0][0].parent.name == "lindau"


def test_cityscapes_bad_inputs(tmp_path: Path) -> None:
    root = cityscapes_tree(tmp_path / "a", bad_value=40)
    train = CityscapesDataset(str(root), split="train")
    with pytest.raises(UserError, match=r"aachen_000000_000019_gtFine_labelIds\.png: mask value 40"):
        train[0]
    root = cityscapes_tree(tmp_path / "b")
    next((root / "gtFine" / "val").rglob("*.png")).unlink()
    with pytest.raises(UserError, match=r"lindau_000000_000019_leftImg8bit\.png: image has no mask"):
        CityscapesDataset(str(root), split="val")
    with pytest.raises(UserError, match=r"unknown cityscapes split 'test'; accepted: train, val"):
        CityscapesDataset(str(root), split="test")
    with pytest.raises(UserError, match="needs a path"):
        CityscapesDataset(None)
