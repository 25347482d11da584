"""Fast-SCNN (Poudel et al., 2019, "Fast-SCNN: Fast Semantic Segmentation Network").

Layout (19 classes, no auxiliary heads: exactly 1,137,795 parameters, BN affine included):

- ``learning_to_downsample``: ConvBNReLU 3x3/2 to 32, DSConv 3x3/2 to 48, DSConv 3x3/2 to 64 (1/8).
- ``global_feature_extractor``: the nine MobileNetV2 bottlenecks of the paper table only
  (t=6; c=64,96,128; n=3 each; s=2,2,1), ending at 1/32 with 128 channels. Bottleneck = 1x1 expand +
  BN + ReLU, 3x3 depthwise + BN + ReLU, 1x1 project + BN (linear); residual where shapes match.
- ``pyramid_pooling``: average pooling to bins 1, 2, 3, 6; per bin a 1x1 ConvBNReLU to 32 (= 128/4);
  bilinear resize to the feature size; concat with the input (256 ch); 1x1 ConvBNReLU to 128.
- ``feature_fusion``: low-resolution branch = bilinear resize to the 1/8 feature's actual size
  (x4 when the input is divisible by 32), 3x3 depthwise with dilation 4 + BN + ReLU, 1x1 conv + BN;
  high-resolution branch = 1x1 conv + BN; add, ReLU.
- ``classifier``: two DSConv 3x3 (128), dropout p=0.1, 1x1 conv to the classes (with bias).
- Final bilinear upsampling to the input size (``align_corners=False``).

Choices the paper leaves open: ReLU (not ReLU6); DSConvs follow the paper's Xception convention (no
non-linearity between depthwise and pointwise, see `DepthwiseSeparableConv`); every conv is bias-free
and followed by BN except the last classifier conv; convs pad to keep "same" sizes, so an input of
HxW gives ceil-divided feature sizes and any size works (PPM and FFM resize to the actual sizes).

With ``aux=True`` two training-only heads (ConvBNReLU 3x3 to 32, dropout 0.1, 1x1 conv to the
classes) read the LTD output and the end of the paper's global feature extractor (after pyramid
pooling); in training mode the forward returns ``(main, aux_ltd, aux_gfe)``, all at input size, for
the paper's auxiliary losses (weight 0.4). In eval mode, or with ``aux=False``, it returns the main
logits only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import ConvBNReLU, DepthwiseSeparableConv


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with the align_corners=False convention used throughout the model."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: expand (1x1), depthwise (3x3, stride), linear project (1x1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int = 6) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, hidden, 1),
            ConvBNReLU(hidden, hidden, 3, stride=stride, groups=hidden),
            ConvBNReLU(hidden, out_channels, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _bottleneck_stage(in_channels: int, out_channels: int, repeats: int, stride: int) -> list[nn.Module]:
    """One row of the paper table: the first repeat strides and changes channels, the rest keep them."""
    blocks: list[nn.Module] = [Bottleneck(in_channels, out_channels, stride)]
    blocks += [Bottleneck(out_channels, out_channels, 1) for _ in range(repeats - 1)]
    return blocks


class PyramidPooling(nn.Module):
    """PSPNet-style pooling: context at bins 1, 2, 3, 6 concatenated with the input, then fused."""

    def __init__(self, channels: int = 128, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        branch_channels = channels // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(channels, branch_channels, 1)) for b in bins
        )
        self.project = ConvBNReLU(channels + branch_channels * len(bins), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [_resize(branch(x), size) for branch in self.branches]
        return self.project(torch.cat([x, *pooled], dim=1))


class FeatureFusion(nn.Module):
    """Adds the 1/8 detail branch to the resized 1/32 context branch, then ReLU."""

    def __init__(self, high_channels: int = 64, low_channels: int = 128, out_channels: int = 128) -> None:
        super().__init__()
        self.low_depthwise = ConvBNReLU(low_channels, low_channels, 3, dilation=4, groups=low_channels)
        self.low_project = ConvBNReLU(low_channels, out_channels, 1, relu=False)
        self.high_project = ConvBNReLU(high_channels, out_channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_project(self.low_depthwise(_resize(low, high.shape[-2:])))
        return self.relu(self.high_project(high) + low)


def _head(in_channels: int, num_classes: int, mid_channels: int) -> nn.Sequential:
    """Auxiliary head: 3x3 ConvBNReLU, dropout, 1x1 conv to the classes."""
    return nn.Sequential(
        ConvBNReLU(in_channels, mid_channels, 3),
        nn.Dropout(0.1),
        nn.Conv2d(mid_channels, num_classes, 1),
    )


class FastSCNN(nn.Module):
    """Fast-SCNN; see the module docstring for the exact layout and the open choices taken."""

    def __init__(self, num_classes: int = 19, aux: bool = False) -> None:
        super().__init__()
        self.learning_to_downsample = nn.Sequential(
            ConvBNReLU(3, 32, 3, stride=2),
            DepthwiseSeparableConv(32, 48, stride=2),
            DepthwiseSeparableConv(48, 64, stride=2),
        )
        self.global_feature_extractor = nn.Sequential(
            *_bottleneck_stage(64, 64, 3, 2),
            *_bottleneck_stage(64, 96, 3, 2),
            *_bottleneck_stage(96, 128, 3, 1),
        )
        self.pyramid_pooling = PyramidPooling(128)
        self.feature_fusion = FeatureFusion(64, 128, 128)
        self.classifier = nn.Sequential(
            DepthwiseSeparableConv(128, 128),
            DepthwiseSeparableConv(128, 128),
            nn.Dropout(0.1),
            nn.Conv2d(128, num_classes, 1),
        )
        self.aux = aux
        if aux:
            self.aux_ltd = _head(64, num_classes, 32)
            self.aux_gfe = _head(128, num_classes, 32)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        high = self.learning_to_downsample(x)
        low = self.pyramid_pooling(self.global_feature_extractor(high))
        out = _resize(self.classifier(self.feature_fusion(high, low)), size)
        if self.aux and self.training:
            return out, _resize(self.aux_ltd(high), size), _resize(self.aux_gfe(low), size)
        return out
