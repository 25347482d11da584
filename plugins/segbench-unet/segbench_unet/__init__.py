"""segbench-unet: a small U-Net, registered through segbench's public plugin hooks.

Read this file to learn how to add an architecture: build a plain ``nn.Module``, then register a
``ModelSpec`` from a ``register_models`` hook implementation, and name this module in the
``segbench`` entry-point group of your package (see pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import segbench
from segbench.models.blocks import ConvBNReLU
from segbench.registry import ModelSpec


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BN + ReLU: the unit U-Net repeats at every scale."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) at small width: an encoder-decoder with skip connections.

    Four scales (``width``, 2x, 4x, 8x channels), max-pool down, transposed-conv up (k2 s2), padded
    convs, so the output has the input's size; odd sizes are handled by resizing the upsampled map to
    its skip before concatenation.
    """

    def __init__(self, num_classes: int = 2, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(4)]
        self.encoders = nn.ModuleList(DoubleConv(c_in, c_out) for c_in, c_out in zip([in_channels, *chans[:-1]], chans))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2) for c in reversed(chans[1:]))
        self.decoders = nn.ModuleList(DoubleConv(c, c // 2) for c in reversed(chans[1:]))
        self.head = nn.Conv2d(chans[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([skip, x], dim=1))
        return self.head(x)


@segbench.hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    register(
        ModelSpec(
            name="unet",
            family="unet",
            builder=UNet,
            default_size=(256, 256),
            default_num_classes=2,
            description="small U-Net: 4-scale encoder-decoder with skip connections (plugin example)",
            reference="Ronneberger et al., U-Net, MICCAI 2015",
        )
    )
