"""ConfusionMatrix against a plain NumPy reference and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segbench.measure.accuracy import ConfusionMatrix


def numpy_reference(pred: np.ndarray, target: np.ndarray, n: int, ignore: int = 255) -> dict:
    keep = target != ignore
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (target[keep], pred[keep]), 1)
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    ious = [tp[c] / union[c] if union[c] > 0 else None for c in range(n)]
    present = [i for i in ious if i is not None]
    return {
        "matrix": matrix,
        "iou_per_class": ious,
        "miou": float(np.mean(present)),
        "pixel_acc": tp.sum() / keep.sum(),
    }


def test_hand_computed_case() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, 1, 1, 2]]), torch.tensor([[0, 0, 1, 1, 255]]))
    acc = cm.compute()
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2 only under an ignored pixel: absent
    assert acc.iou_per_class == [0.5, 2 / 3, None]
    assert acc.miou == pytest.approx(7 / 12, abs=1e-15)
    assert acc.pixel_acc == 0.75


def test_matches_numpy_on_random_data_with_absent_and_ignored() -> None:
    n = 7
    rng = np.random.default_rng(3)
    target = rng.integers(0, n, size=(4, 33, 29))
    pred = rng.integers(0, n, size=(4, 33, 29))
    target[target == 5] = 0  # class 5: absent from both target and prediction
    pred[pred == 5] = 1
    target[target == 6] = 2  # class 6: predicted only (IoU 0, counted in the mean)
    target[rng.random(target.shape) < 0.2] = 255  # ignored pixels, some over class-5-free predictions
    cm = ConfusionMatrix(n)
    for i in range(4):  # accumulated over batches
        cm.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    ref = numpy_reference(pred, target, n)
    acc = cm.compute()
    assert torch.equal(cm.matrix, torch.from_numpy(ref["matrix"]))
    assert acc.iou_per_class == ref["iou_per_class"]
    assert acc.iou_per_class[5] is None and acc.iou_per_class[6] == 0.0
    assert acc.miou == pytest.approx(ref["miou"], rel=1e-14)
    assert acc.pixel_acc == ref["pixel_acc"]


def test_logits_are_argmaxed() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    from_logits, from_ids = ConfusionMatrix(4), ConfusionMatrix(4)
    from_logits.update(logits, target)
    from_ids.update(logits.argmax(1), target)
    assert torch.equal(from_logits.matrix, from_ids.matrix)
    assert int(from_logits.matrix.sum()) == 128


def test_reset_and_empty() -> None:
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.compute().miou) and math.isnan(cm.compute().pixel_acc)
    cm.update(torch.tensor([1, 1]), torch.tensor([1, 0]))
    assert cm.compute().pixel_acc == 0.5
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_bad_shapes_and_ids_raise() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0..2"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"0..2"):
        cm.update(torch.tensor([0]), torch.tensor([7]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulates_on_cuda() -> None:
    target = torch.randint(0, 5, (2, 16, 16))
    pred = torch.randint(0, 5, (2, 16, 16))
    on_gpu, on_cpu = ConfusionMatrix(5), ConfusionMatrix(5)
    on_gpu.update(pred.cuda(), target.cuda())
    on_cpu.update(pred, target)
    assert on_gpu.matrix.device.type == "cuda"
    assert torch.equal(on_gpu.matrix.cpu(), on_cpu.matrix)
