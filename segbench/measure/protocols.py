"""Evaluation protocols in mmsegmentation's vocabulary: how one image becomes logits.

Every protocol works over a ``predict(x) -> logits`` callable, so it runs through any runtime's
``Session.predict``; sessions prepared for fixed input shapes are routed by shape (`route`), one per
shape in `EvalProtocol.input_shapes`. The image is the one at the evaluation size (``--size``).

- ``whole``: one call on the image; the logits come back as the model gives them.
- ``slide`` (mmsegmentation's ``slide_inference``): windows of ``window`` every ``stride``, the last
  window of a row or column moved back to end at the image's edge; each window's logits are
  resized to the window, summed into place, and every pixel is divided by the number of windows
  that cover it. Where the image is smaller than the window, the window is padded (bottom, right) with
  zeros (the normalised mean colour) to the window's size and its logits cropped back.
- ``multiscale`` (mmsegmentation's test-time augmentation): the image resized by each of ``scales``
  (sides rounded half up, as mmcv does), and with ``flip`` also mirrored left-right; each view's
  logits are resized back to the image (and mirrored back) and averaged. mmsegmentation's
  ``SegTTAModel`` averages softmax probabilities instead; averaged logits keep the result a linear
  map of the views' logits, so one view (scale 1, no flip) of a model whose logits come at its input
  size is exactly ``whole``, also after the evaluation's own resize to the mask; the argmax differs
  from mmsegmentation's only where the views disagree.

``slide`` and ``multiscale`` return maps at the image's size; bad options raise UserError at
construction, and `EvalProtocol.check_size` rejects an image size the protocol cannot cover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from segbench.errors import UserError
from segbench.measure.outputs import main_output

NAMES = ("whole", "slide", "multiscale")
#: mmsegmentation's usual test-time scales (``--protocol multiscale`` without ``--scales``).
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

Predict = Callable[[torch.Tensor], Any]
Size = tuple[int, int]


@dataclass(frozen=True)
class EvalProtocol:
    """One protocol and its options (``window`` and ``stride`` for slide, ``scales`` and ``flip`` for
    multiscale; None: not given). Options of another protocol are refused, never ignored."""

    name: str = "whole"
    window: Size | None = None
    stride: Size | None = None
    scales: tuple[float, ...] | None = None
    flip: bool = False

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise UserError(f"bad --protocol {self.name!r}: accepted {', '.join(NAMES)}")
        given = {"--window": self.window is not None, "--stride": self.stride is not None}
        given.update({"--scales": self.scales is not None, "--flip": self.flip})
        allowed = {"slide": ("--window", "--stride"), "multiscale": ("--scales", "--flip")}.get(self.name, ())
        stray = [option for option, on in given.items() if on and option not in allowed]
        if stray:
            owner = "slide" if stray[0] in ("--window", "--stride") else "multiscale"
            raise UserError(f"{stray[0]} goes with --protocol {owner}, not --protocol {self.name}")
        if self.name == "slide":
            if self.window is None or self.stride is None:
                raise UserError("--protocol slide needs --window HxW and --stride HxW")
            for option, size in (("--window", self.window), ("--stride", self.stride)):
                if len(size) != 2 or min(size) < 1:
                    raise UserError(f"bad {option} {_text(size)}: expected HxW with integers >= 1")
            if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
                raise UserError(
                    f"--stride {_text(self.stride)} is larger than --window {_text(self.window)}: "
                    "pixels between windows would have no prediction"
                )
        if self.scales is not None:
            bad = [s for s in self.scales if not (s > 0 and math.isfinite(s))]
            if bad or not self.scales:
                raise UserError(f"bad --scales {self.scales_text}: expected numbers > 0, e.g. 0.5,1.0,1.5")

    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale, mirrored) of each multiscale view, in order."""
        flips = (False, True) if self.flip else (False,)
        return [(scale, flip) for scale in (self.scales or DEFAULT_SCALES) for flip in flips]

    @property
    def scales_text(self) -> str:
        return ",".join(f"{s:g}" for s in self.scales or DEFAULT_SCALES)

    def check_size(self, size: Size, what: str = "--size") -> None:
        """UserError when the protocol cannot run on images of ``size``: a slide window larger than the
        image, or a scale that leaves no pixel."""
        if self.name == "slide" and (self.window[0] > size[0] or self.window[1] > size[1]):  # type: ignore[index]
            raise UserError(f"--window {_text(self.window)} is larger than the {what} {_text(size)}")  # type: ignore[arg-type]
        if self.name == "multiscale":
            for scale in self.scales or DEFAULT_SCALES:
                if min(scaled(size, scale)) < 1:
                    raise UserError(f"--scales {scale:g} leaves no pixel of the {what} {_text(size)}")

    def input_shapes(self, size: Size) -> list[Size]:
        """The network input sizes (H, W) the protocol calls ``predict`` with on images of ``size``."""
        if self.name == "slide":
            return [self.window]  # type: ignore[list-item]
        if self.name == "multiscale":
            return list(dict.fromkeys(scaled(size, scale) for scale, _ in self.views))
        return [size]

    def infer(self, predict: Predict, images: torch.Tensor) -> torch.Tensor:
        """The logits of ``images`` (N x C x H x W) under the protocol."""
        if self.name == "slide":
            return slide(predict, images, self.window, self.stride)  # type: ignore[arg-type]
        if self.name == "multiscale":
            return multiscale(predict, images, self.views)
        return main_output(predict(images))

    def fields(self) -> dict[str, Any]:
        """The row fields that name the protocol (``window`` and ``stride`` as HxW text)."""
        multi = self.name == "multiscale"
        return {
            "protocol": self.name,
            "window": _text(self.window) if self.window else None,
            "stride": _text(self.stride) if self.stride else None,
            "scales": self.scales_text if multi else None,
            "flip": self.flip if multi else None,
        }


#: Today's default: one call on the whole image.
WHOLE = EvalProtocol()


def scaled(size: Size, scale: float) -> Size:
    """``size`` times ``scale``, each side rounded half up (mmcv's ``rescale_size``)."""
    return int(size[0] * scale + 0.5), int(size[1] * scale + 0.5)


def resized(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners False) of N x C x h x w maps to ``size``; unchanged when equal."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def slide(predict: Predict, images: torch.Tensor, window: Size, stride: Size) -> torch.Tensor:
    """mmsegmentation's ``slide_inference`` (see the module docstring), on every image of the batch at once."""
    height, width = images.shape[-2:]
    rows = max(height - window[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - window[1] + stride[1] - 1, 0) // stride[1] + 1
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, height, width, device=images.device)
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride[0] + window[0], height), min(col * stride[1] + window[1], width)
            y1, x1 = max(y2 - window[0], 0), max(x2 - window[1], 0)
            crop = images[..., y1:y2, x1:x2]
            padded = F.pad(crop, (0, window[1] - crop.shape[-1], 0, window[0] - crop.shape[-2]))
            logits = resized(main_output(predict(padded)), window)[..., : y2 - y1, : x2 - x1].float()
            if total is None:
                total = torch.zeros(*logits.shape[:2], height, width, device=logits.device)
            total[..., y1:y2, x1:x2] += logits.to(total.device)
            count[..., y1:y2, x1:x2] += 1
    assert total is not None
    return total / count.to(total.device)


def multiscale(predict: Predict, images: torch.Tensor, views: Sequence[tuple[float, bool]]) -> torch.Tensor:
    """The mean logits of the (scale, mirrored) ``views`` of ``images``, at their size."""
    size = images.shape[-2:]
    total: torch.Tensor | None = None
    for scale, flip in views:
        view = resized(images, scaled((size[0], size[1]), scale))
        if flip:
            view = view.flip(-1)
        logits = resized(main_output(predict(view)).float(), size)
        logits = logits.flip(-1) if flip else logits
        total = logits if total is None else total + logits.to(total.device)
    assert total is not None
    return total / len(views)


def route(predicts: Mapping[Size, Predict]) -> Predict:
    """One ``predict`` over sessions prepared for fixed shapes: each input goes to its shape's session."""

    def predict(x: torch.Tensor) -> Any:
        return predicts[(x.shape[-2], x.shape[-1])](x)

    return predict


def _text(size: Sequence[int]) -> str:
    return "x".join(map(str, size))
