"""Data-parallel training under torchrun, so that N ranks train like one process on the same global batch.

`segbench.measure.training` calls these hooks when given a `DataParallel`; everything else of the
recipe is unchanged.

- **Batches.** Every rank draws the same sample order (the shared seed) and takes its contiguous
  B / N of each global batch of B (`DataParallel.split`). Augmentation draws from each rank's own
  seed; the initial weights come from the shared seed (and DDP broadcasts rank 0's at the start).
- **Loss.** Cross-entropy summed over a rank's labelled pixels and divided by the labelled pixels of
  the whole batch (all-reduced), times N because DDP averages the ranks' gradients: the gradient of
  the single-process mean, even when the ranks hold different numbers of ignored pixels (a per-rank
  mean would weigh each pixel by 1 / its own rank's count).
- **BatchNorm.** One process normalises over the B images of a batch; ranks on their own would
  normalise over B / N (the prototype saw Fast-SCNN's weights differ by 0.7 after 3 steps: its
  pyramid-pooling BNs see b x bin^2 values). So every BatchNorm is synchronised while training. On
  CUDA that is torch's ``nn.SyncBatchNorm``. On CPU torch 2.13's SyncBatchNorm refuses to run (its
  kernels have no CPU implementation), so `SyncBatchNormCPU` computes the whole batch's statistics
  with differentiable all-reduces (`SumOverRanks`: the gradient of a sum over ranks is the sum of the
  ranks' gradients); it is what the CPU tests check against one process. The synchronised
  modules share the originals' parameters and running statistics and are swapped in only while
  training, so evaluation, checkpoints and later stages see the network as it was built.
- **Evaluation.** Each rank evaluates a contiguous part of the val split (no padding or dropping,
  unlike ``DistributedSampler``) and the int64 confusion matrices are summed: exactly the
  single-process matrix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sized
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Sampler, Subset

from segbench.data.common import IGNORE_INDEX
from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.registry import Samples

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class DataParallel:
    """The hooks of one rank of an initialised process group (see the module docstring)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch (UserError unless the world size divides it)."""
        if batch_size % self.world_size:
            raise UserError(
                f"batch size {batch_size} does not split over {self.world_size} ranks: "
                f"under torchrun the batch size is the global batch, a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def split(self, order: Sampler[int], batch_size: int) -> tuple[Sampler[int], int]:
        """This rank's part of every global batch of ``order``, and its batch size."""
        return _Part(order, batch_size, self.rank, self.world_size), self.local_batch(batch_size)

    @contextlib.contextmanager
    def training(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with synchronised BatchNorms, wrapped in DDP, for the duration of training."""
        cuda = next(model.parameters()).is_cuda
        swapped = []
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, BATCH_NORMS):
                    synced = nn.SyncBatchNorm.convert_sync_batchnorm(child) if cuda else SyncBatchNormCPU(child)
                    setattr(parent, name, synced)
                    swapped.append((parent, name, child))
        try:
            yield DistributedDataParallel(  # the synced BatchNorms keep the buffers equal: none broadcast
                model,
                device_ids=[torch.cuda.current_device()] if cuda else None,
                gradient_as_bucket_view=True,  # no second copy of the gradients
                broadcast_buffers=False,
            )
        finally:
            for parent, name, child in swapped:
                setattr(parent, name, child)

    def pixels(self, target: torch.Tensor) -> torch.Tensor:
        """What each rank's summed loss is divided by: the batch's labelled pixels / N (see the docstring)."""
        count = (target != IGNORE_INDEX).sum().double()
        dist.all_reduce(count)
        return (count / self.world_size).clamp(min=1.0 / self.world_size).float()

    def mean(self, loss: torch.Tensor) -> float:
        """The whole batch's loss from each rank's part, the same on every rank (so all stop on a NaN)."""
        total = loss.detach().double().clone()
        dist.all_reduce(total)
        return float(total) / self.world_size

    def part(self, dataset: Samples) -> Samples:
        """This rank's contiguous share of an evaluation split (shares differ by at most one item)."""
        size = len(dataset)
        share = range(self.rank * size // self.world_size, (self.rank + 1) * size // self.world_size)
        # Subset only indexes its dataset; torch types both sides as Dataset
        return cast("Samples", Subset(cast("Dataset", dataset), share))

    def sum(self, counts: torch.Tensor) -> None:
        """Add every rank's ``counts`` (a confusion matrix) in place."""
        dist.all_reduce(counts)


class _Part(Sampler[int]):
    """Rank r's contiguous slice [r b, (r + 1) b) of every batch of B = N b indices from ``order``."""

    def __init__(self, order: Sampler[int], batch_size: int, rank: int, world_size: int) -> None:
        self.order, self.batch_size = order, batch_size
        share = batch_size // world_size
        self.start, self.stop = rank * share, (rank + 1) * share

    def __iter__(self) -> Iterator[int]:
        indices = list(self.order)
        for first in range(0, len(indices), self.batch_size):
            yield from indices[first : first + self.batch_size][self.start : self.stop]

    def __len__(self) -> int:
        assert isinstance(self.order, Sized)
        batches = -(-len(self.order) // self.batch_size)
        return batches * (self.stop - self.start)


class SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over all ranks, differentiable: backward sums the ranks' gradients.

    (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated in torch 2.13 in
    favour of a private module.)
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncBatchNormCPU(nn.Module):
    """A BatchNorm whose training statistics are those of the whole batch over every rank, on CPU.

    Two passes, each one all-reduce: the channel sums and the element count give the mean, then the
    summed squared deviations give the (biased) variance; E[x^2] - E[x]^2 in one pass would lose
    digits to cancellation. Running statistics are updated as ``nn.BatchNorm`` does (unbiased
    variance, ``momentum`` None meaning a cumulative average). In eval mode it is the wrapped
    BatchNorm itself, and it holds that module's parameters and buffers, not copies.
    """

    def __init__(self, batch_norm: nn.Module) -> None:
        super().__init__()
        self.batch_norm = batch_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: Any = self.batch_norm
        if not self.training:
            return bn(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() / x.shape[1]])
        sums = SumOverRanks.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.reshape(shape)
        var = SumOverRanks.apply((centred * centred).sum(dims)) / n
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * n / (n - 1) if float(n) > 1 else var.detach()
                bn.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        out = centred * torch.rsqrt(var + bn.eps).reshape(shape)
        if bn.affine:
            out = out * bn.weight.reshape(shape) + bn.bias.reshape(shape)
        return out
