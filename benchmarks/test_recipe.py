"""The default training recipe against a plain loop (SGD, poly, flips only) on real images, several seeds.

Real data: the ISBI-2012 EM membrane set (30 grayscale 512x512 images, labels 0 = membrane,
255 = cell) as shipped in the zhixuhao/unet repository under ``data/membrane/train``. Point
``SEGBENCH_MEMBRANE`` at that folder (it holds ``image/`` and ``label/``) or at a git repository
that holds it (read with ``git show``, no work tree needed); without it the benchmark is skipped.

The benchmark builds a ``folder:`` dataset from it: every image cut into 25 tiles of 160x160
(stride 88), the grey channel repeated to RGB, labels remapped to 0/1; images 0-23 give the train
split (600 tiles), images 24-29 the val split (150 tiles), so no val tile shares an image with a
train tile. Both loops then train the same Fast-SCNN (same seed, same initial weights) for the same
steps, batch and size, and are evaluated by the same `evaluate`.

Run: ``SEGBENCH_MEMBRANE=PATH BENCH_THREADS=2 python -m pytest benchmarks/test_recipe.py -s``
(``RECIPE_SEEDS``, default 3; ``RECIPE_STEPS``, default 150).
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segbench
from segbench.data import open_datasets
from segbench.measure import recipe
from segbench.measure.training import TrainSettings, evaluate, segmentation_loss, train_and_evaluate

TILE, STRIDE, VAL_FROM, IMAGES = 160, 88, 24, 30
MODEL, BATCH = "fast_scnn", 8
SEEDS = int(os.environ.get("RECIPE_SEEDS", "3"))
STEPS = int(os.environ.get("RECIPE_STEPS", "150"))
MEMBRANE = "data/membrane/train"


def read_png(source: Path, name: str) -> np.ndarray:
    """``image/N.png`` or ``label/N.png`` from the folder, or from the git repository's HEAD."""
    if (source / name).is_file():
        return np.array(Image.open(source / name))
    blob = subprocess.run(
        ["git", "-C", str(source), "show", f"HEAD:{MEMBRANE}/{name}"], capture_output=True, check=True
    ).stdout
    return np.array(Image.open(io.BytesIO(blob)))


@pytest.fixture(scope="module")
def membrane(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiled ``folder:`` dataset (``images/{train,val}``, ``masks/{train,val}``)."""
    source = os.environ.get("SEGBENCH_MEMBRANE")
    if not source or not Path(source).exists():
        pytest.skip(
            "real images absent: set SEGBENCH_MEMBRANE to zhixuhao/unet's data/membrane/train folder "
            "(image/N.png, label/N.png) or to a git repository holding it"
        )
    root = tmp_path_factory.mktemp("membrane")
    starts = range(0, 512 - TILE + 1, STRIDE)
    for n in range(IMAGES):
        split = "val" if n >= VAL_FROM else "train"
        image = read_png(Path(source), f"image/{n}.png")
        label = (read_png(Path(source), f"label/{n}.png") >= 128).astype(np.uint8)  # 255 (cell) -> 1
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for top in starts:
            for left in starts:
                crop = (slice(top, top + TILE), slice(left, left + TILE))
                stem = f"{n:02d}_{top:03d}_{left:03d}"
                Image.fromarray(np.repeat(image[crop][..., None], 3, axis=2)).save(
                    root / "images" / split / f"{stem}.png"
                )
                Image.fromarray(label[crop]).save(root / "masks" / split / f"{stem}.png")
    return root


def build(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return segbench.create_model(MODEL, num_classes=2)


def plain_loop(seed: int, train_set, val_set) -> float:
    """SGD momentum 0.9, the recipe's lr and weight decay, poly decay, random horizontal flips only."""
    model = build(seed).train()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=recipe.DEFAULT_LR, momentum=recipe.MOMENTUM, weight_decay=recipe.WEIGHT_DECAY, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: (1 - s / STEPS) ** recipe.POLY_POWER)
    for _ in range(STEPS):
        picks = torch.randint(len(train_set), (BATCH,), generator=generator).tolist()
        images, masks = (torch.stack(t) for t in zip(*(train_set[i] for i in picks)))
        flip = torch.rand(BATCH, generator=generator) < 0.5
        images[flip], masks[flip] = images[flip].flip(-1), masks[flip].flip(-1)
        loss = segmentation_loss(model(images), masks)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return evaluate(model, val_set, num_classes=2, size=(TILE, TILE), batch_size=BATCH).miou


def segbench_recipe(seed: int, train_set, val_set) -> float:
    settings = TrainSettings(steps=STEPS, batch_size=BATCH, size=(TILE, TILE), seed=seed)
    fields = train_and_evaluate(build(seed), train_set, val_set, settings)
    return fields["miou"]


def test_default_recipe_matches_a_plain_loop(membrane: Path) -> None:
    train_set, val_set = open_datasets(f"folder:{membrane}")
    assert (len(train_set), len(val_set), train_set.num_classes) == (600, 150, 2)
    results: dict[str, list[float]] = {"segbench recipe": [], "plain loop (flips only)": []}
    for seed in range(SEEDS):
        for name, loop in zip(results, (segbench_recipe, plain_loop)):
            results[name].append(loop(seed, train_set, val_set))
            print(f"seed {seed}: {name} mIoU {results[name][-1]:.4f}", flush=True)
    print(
        f"\n{MODEL}, {STEPS} steps x batch {BATCH} at {TILE}x{TILE}, ISBI-2012 membrane tiles, "
        f"{torch.get_num_threads()} threads, seeds 0-{SEEDS - 1}:"
    )
    for name, values in results.items():
        print(
            f"  {name:24s} mIoU mean {statistics.mean(values):.4f} sd {statistics.stdev(values):.4f} "
            f"range {min(values):.4f}-{max(values):.4f}  {[round(v, 4) for v in values]}"
        )
    ours, plain = results.values()
    noise = 2 * (statistics.variance(ours) / SEEDS + statistics.variance(plain) / SEEDS) ** 0.5
    assert statistics.mean(ours) >= statistics.mean(plain) - noise, (results, noise)
