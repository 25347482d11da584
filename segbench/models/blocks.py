"""Convolution blocks shared by the built-in models and swept by the block study.

`ConvBNReLU` is the standard KxK convolution; `DepthwiseSeparableConv` factorises it into a KxK
depthwise and a 1x1 pointwise convolution (MobileNet, Howard et al. 2017, section 3.1). With input
channels C, output channels N and kernel K the weights are K*K*C*N versus K*K*C + C*N; each BN adds
2 affine parameters per channel (N for the standard block, C + N for the separable one).

Every model in `segbench.models` builds its convolutions from these two classes, so there is one
implementation to optimise and one place a MAC counter has to understand.
"""

from __future__ import annotations

from torch import nn


class ConvBNReLU(nn.Sequential):
    """KxK convolution without bias, BatchNorm, then an in-place ReLU (unless ``relu=False``).

    The default padding, ``dilation * (kernel_size - 1) // 2``, keeps the spatial size at stride 1
    ("same" padding for odd kernels). Children are named ``conv``, ``bn`` and ``relu`` so a per-layer
    counter can attribute them. The conv has no bias because the following BN has its own shift.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        if relu:
            self.relu = nn.ReLU(inplace=True)


class DepthwiseSeparableConv(nn.Sequential):
    """KxK depthwise conv + BN, then 1x1 pointwise conv + BN + ReLU.

    Convention: by default there is NO non-linearity between the depthwise and the pointwise
    convolution, as in the Fast-SCNN paper (Poudel et al. 2019), which follows the Xception
    convention. ``mid_activation=True`` adds a ReLU after the depthwise BN, the MobileNet v1 layout.
    The stride and dilation apply to the depthwise convolution. Children are named ``depthwise``
    and ``pointwise`` (each a `ConvBNReLU`) so MACs can be attributed to each half.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        mid_activation: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNReLU(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=in_channels,
            relu=mid_activation,
        )
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1)
