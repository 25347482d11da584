"""Run by ``torchrun --nproc-per-node 2`` from tests/test_distributed.py: data-parallel training and
evaluation through segbench's own `fit` and `evaluate`, compared on rank 0 with one process.

Writes a JSON report to ``sys.argv[1]`` (rank 0). Augmentation is switched off (the identity), so the
one-process run sees exactly the images the ranks see together; what is compared is the distributed
part: each rank's share of every batch, DDP's gradient averaging, the loss over the whole batch's
labelled pixels (the ranks hold different numbers of ignored pixels), synchronised BatchNorm, and the
confusion matrix summed over a val split of odd length and uneven mask sizes.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import ClassVar

import torch
from torch import nn

from segbench.measure import training
from segbench.measure.accuracy import ConfusionMatrix
from segbench.runners.distributed import join

CLASSES, SIZE, STEPS, GLOBAL_BATCH = 4, 32, 3, 4


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, CLASSES, 1),
    )


def samples(count: int, sizes: list[tuple[int, int]], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images whose class shows in their colour (so the network learns), masks with ignored rows."""
    generator = torch.Generator().manual_seed(seed)
    found = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        mask = torch.randint(0, CLASSES, (height, width), generator=generator)
        image = mask.float()[None].expand(3, -1, -1) / CLASSES + 0.3 * torch.randn(
            3, height, width, generator=generator
        )
        mask[: index % 3 * 5] = 255  # 0, 5 or 10 ignored rows: the ranks' shares differ
        found.append((image, mask))
    return found


class Recording(ConfusionMatrix):
    """The confusion matrix `evaluate` computes from, kept for the comparison."""

    seen: ClassVar[list[torch.Tensor]] = []

    def compute(self):  # type: ignore[no-untyped-def]
        Recording.seen.append(self.matrix.clone())
        return super().compute()


def max_diff(a: nn.Module, b: nn.Module) -> float:
    first, second = a.state_dict(), b.state_dict()
    return max(float((first[k].double() - second[k].double()).abs().max()) for k in first)


def main(report: str) -> None:
    team = join("cpu", data_parallel=True)
    assert team is not None and team.parallel is not None
    training.augment = lambda image, mask, size: (image, mask)  # the identity: both runs see the same images
    training.ConfusionMatrix = Recording
    train_set = samples(12, [(SIZE, SIZE)], seed=1)
    val_set = samples(7, [(SIZE, SIZE), (24, 40), (40, 24)], seed=2)
    options = dict(steps=STEPS, batch_size=GLOBAL_BATCH, size=(SIZE, SIZE), lr=0.05, device=torch.device("cpu"))

    initial = network()
    ranks = copy.deepcopy(initial)
    with team.parallel.training(ranks) as wrapped:
        training.fit(wrapped, train_set, generator=torch.Generator().manual_seed(0), parallel=team.parallel, **options)
    together = training.evaluate(
        ranks.eval(), val_set, num_classes=CLASSES, size=(SIZE, SIZE), batch_size=2, parallel=team.parallel
    )
    flat = torch.cat([t.flatten().double() for t in ranks.state_dict().values()])
    everyone = [torch.empty_like(flat) for _ in range(2)]
    torch.distributed.all_gather(everyone, flat)
    if team.rank != 0:
        return
    alone = copy.deepcopy(initial)
    training.fit(alone, train_set, generator=torch.Generator().manual_seed(0), **options)
    single = training.evaluate(ranks.eval(), val_set, num_classes=CLASSES, size=(SIZE, SIZE), batch_size=2)
    matrix_ranks, matrix_alone = Recording.seen
    result = {
        "ranks_agree": float((everyone[0] - everyone[1]).abs().max()),
        "ranks_vs_one_process": max_diff(ranks, alone),
        "training_moved": max(float((p - q).abs().max()) for p, q in zip(alone.parameters(), initial.parameters())),
        "matrix_equal": bool(torch.equal(matrix_ranks, matrix_alone)),
        "pixels": int(matrix_alone.sum()),
        "miou": [together.miou, single.miou],
    }
    with open(report, "w") as stream:
        json.dump(result, stream)


if __name__ == "__main__":
    main(sys.argv[1])
