"""BatchNorm folded into the convolution before it, for inference (the ``fold_bn`` variant).

Only a Conv2d followed by a BatchNorm2d as adjacent children of an ``nn.Sequential`` is folded:
inside a Sequential, child order is dataflow order, so nothing can happen between the two. Every
built-in conv block (``ConvBNReLU``) is such a Sequential. Other BatchNorms are left as they are.
"""

from __future__ import annotations

import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> int:
    """Fold in place (the model must be in eval mode: the running statistics are used); returns the count."""
    if model.training:
        raise ValueError("folding BatchNorm needs model.eval(): it uses the running statistics")
    folded = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded
