"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell, CVPR 2015 / PAMI 2016) on a VGG16 backbone.

Layers follow the reference: VGG16 conv blocks (2, 2, 3, 3, 3 convs of 3x3 with bias + ReLU; 64, 128,
256, 512, 512 channels; 2x2/2 max-pool after each), fc6 as a 7x7 conv to 4096 and fc7 as a 1x1 conv
(each + ReLU + dropout 0.5), ``score_fr``, zero-initialised ``score_pool4`` / ``score_pool3`` skips,
and learnable bias-free ``ConvTranspose2d`` upsamplers (kernel 2s, stride s) initialised to bilinear
interpolation. Parameter counts with 21 classes equal the reference exactly: FCN-32s 136,152,917,
FCN-16s 134,815,994, FCN-8s 134,489,759 (padding does not change a count).

Alignment scheme (cheaper than, and equivalent to, the reference's conv1_1 padding 100 + crops):

- every 3x3 conv pads 1, every pool uses ``ceil_mode=True`` and fc6 pads 3, so an HxW input gives
  pool3/pool4/pool5 maps of exactly ceil(H/8), ceil(H/16), ceil(H/32) (same for W) and feature pixel j
  at stride s is centred on input pixel s*j + (s-1)/2, the ``align_corners=False`` grid;
- each upsampler has padding s/2, so it maps n pixels to s*n and output pixel o reads the input at
  (o + 0.5)/s - 0.5: exactly ``F.interpolate(mode="bilinear", align_corners=False)`` in the interior
  at initialisation, and the skip maps line up pixel for pixel;
- the upsampled map (at most s-1 pixels too big per side) is cropped at offset 0 to the skip's size,
  and the final output to the input's HxW. No ``F.interpolate`` is used.

At 500x500 this costs about 108 GMAC instead of the reference's 181: the VGG convs run on 500x500
rather than the 698x698 that 100-px padding makes, while fc6 still produces a 16x16 map. FCN-8s
uses the staged-training initialisation (skips zeroed, not the "at-once" 0.01 / 0.0001 scaling).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

_VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weight (channels, channels, k, k) of a transposed conv that does bilinear upsampling.

    The reference formula: factor = (k + 1) // 2, centre = factor - 1 for odd k and factor - 0.5 for
    even k, filter (1 - |i - centre| / factor) * (1 - |j - centre| / factor) on the channel diagonal,
    so each channel is upsampled independently.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = torch.outer(filt1d, filt1d).to(torch.float32)
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learnable x``factor`` upsampler (kernel 2*factor, padding factor/2, no bias), bilinear at init."""
    if factor % 2:
        raise ValueError(f"upsampling factor must be even for the aligned padding, got {factor}")
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


def _crop_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop x (spatially no smaller than ref) to ref's height and width, keeping the top-left corner."""
    return x[:, :, : ref.shape[-2], : ref.shape[-1]]


class VGG16Features(nn.Module):
    """VGG16 conv blocks plus fc6/fc7 as convolutions; returns pool3, pool4 and the fc7 map."""

    def __init__(self) -> None:
        super().__init__()
        stages: list[nn.Sequential] = []
        in_channels = 3
        for n_convs, channels in _VGG16_BLOCKS:
            layers: list[nn.Module] = []
            for _ in range(n_convs):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        self.to_pool3 = nn.Sequential(*stages[:3])
        self.to_pool4 = stages[3]
        self.to_pool5 = stages[4]
        self.head = nn.Sequential(
            OrderedDict(
                fc6=nn.Conv2d(512, 4096, 7, padding=3),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(0.5),
                fc7=nn.Conv2d(4096, 4096, 1),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(0.5),
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        fc7 = self.head(self.to_pool5(pool4))
        return pool3, pool4, fc7


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    """Zero-initialised 1x1 scoring conv, as in the reference (training starts from the coarser net)."""
    conv = nn.Conv2d(in_channels, num_classes, 1)
    assert conv.bias is not None  # Conv2d's default: with bias
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _FCNBase(nn.Module):
    """Backbone and coarse score layer shared by the three variants."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = VGG16Features()
        self.score_fr = _score(4096, num_classes)


class FCN32s(_FCNBase):
    """FCN-32s: score_fr upsampled x32 in one learnable step."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__(num_classes)
        self.upscore = bilinear_upsampler(num_classes, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, fc7 = self.backbone(x)
        return _crop_like(self.upscore(self.score_fr(fc7)), x)


class FCN16s(_FCNBase):
    """FCN-16s: score_fr x2 fused with score_pool4, then x16."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__(num_classes)
        self.score_pool4 = _score(512, num_classes)
        self.upscore2 = bilinear_upsampler(num_classes, 2)
        self.upscore16 = bilinear_upsampler(num_classes, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, pool4, fc7 = self.backbone(x)
        skip4 = self.score_pool4(pool4)
        fuse4 = _crop_like(self.upscore2(self.score_fr(fc7)), skip4) + skip4
        return _crop_like(self.upscore16(fuse4), x)


class FCN8s(_FCNBase):
    """FCN-8s: as FCN-16s to the pool4 fusion, then x2 fused with score_pool3, then x8."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__(num_classes)
        self.score_pool4 = _score(512, num_classes)
        self.score_pool3 = _score(256, num_classes)
        self.upscore2 = bilinear_upsampler(num_classes, 2)
        self.upscore_pool4 = bilinear_upsampler(num_classes, 2)
        self.upscore8 = bilinear_upsampler(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3, pool4, fc7 = self.backbone(x)
        skip4 = self.score_pool4(pool4)
        fuse4 = _crop_like(self.upscore2(self.score_fr(fc7)), skip4) + skip4
        skip3 = self.score_pool3(pool3)
        fuse3 = _crop_like(self.upscore_pool4(fuse4), skip3) + skip3
        return _crop_like(self.upscore8(fuse3), x)


# ---- net surgery: a VGG16 classifier's weights as the FCN backbone (FCN paper, section 3.1) ----------

#: The attribute of every FCN that holds its `VGG16Features`.
BACKBONE = "backbone"


def _vgg16_pairs() -> list[tuple[str, str, tuple[int, ...]]]:
    """(torchvision VGG16 key, `VGG16Features` key, torchvision shape) for every weight the surgery uses.

    torchvision's ``features`` number each conv, ReLU and pool in turn; ``classifier.0`` and
    ``classifier.3`` are the first two fully connected layers (``classifier.6`` scores ImageNet's
    classes and is not used). Derived from the same block table as the backbone, on ``meta``.
    """
    with torch.device("meta"):
        backbone = VGG16Features()
    convs = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    indices = []
    index = 0
    for n_convs, _ in _VGG16_BLOCKS:
        for _ in range(n_convs):
            indices.append(index)
            index += 2  # conv, ReLU
        index += 1  # max-pool
    pairs = []
    for (name, conv), torchvision_key in zip(
        convs, [f"features.{i}" for i in indices] + ["classifier.0", "classifier.3"]
    ):
        weight = tuple(conv.weight.shape)
        linear = torchvision_key.startswith("classifier")
        pairs.append(
            (f"{torchvision_key}.weight", f"{name}.weight", (weight[0], math.prod(weight[1:])) if linear else weight)
        )
        pairs.append((f"{torchvision_key}.bias", f"{name}.bias", (conv.out_channels,)))
    return pairs


def vgg16_classifier_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes a torchvision-layout VGG16 checkpoint must hold for `vgg16_to_backbone`."""
    return {key: shape for key, _, shape in _vgg16_pairs()}


def vgg16_to_backbone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`VGG16Features` weights from a VGG16 classifier's: convs copied, fc layers reshaped to convs.

    ``classifier.0`` (4096 x 25088, the pool5 map flattened as C, H, W) becomes fc6's 4096 x 512 x 7 x 7
    kernel and ``classifier.3`` fc7's 4096 x 4096 x 1 x 1: on a 7x7 pool5 map, fc6 at the centre then
    computes exactly the classifier's first layer. ``state`` must match `vgg16_classifier_shapes`.
    """
    with torch.device("meta"):
        target = VGG16Features().state_dict()
    return {name: state[key].reshape(target[name].shape).clone() for key, name, _ in _vgg16_pairs()}
