"""Evaluation protocols (whole / slide / multiscale) against whole-image inference and hand-computed windows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segbench.errors import UserError
from segbench.measure.protocols import DEFAULT_SCALES, EvalProtocol, multiscale, route, scaled, slide


def _net(stride: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, stride=stride), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1)).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_slide_with_window_and_stride_equal_to_the_image_is_whole(images: torch.Tensor) -> None:
    net = _net()
    protocol = EvalProtocol("slide", window=(12, 20), stride=(12, 20))
    assert torch.equal(protocol.infer(net, images), EvalProtocol().infer(net, images))


@torch.no_grad()
def test_slide_of_a_coarse_model_is_whole_resized_to_the_image(images: torch.Tensor) -> None:
    net = _net(stride=2)  # logits at half resolution: slide brings them to the window's size
    whole = F.interpolate(net(images), size=(12, 20), mode="bilinear", align_corners=False)
    assert torch.equal(slide(net, images, (12, 20), (12, 20)), whole)


@torch.no_grad()
def test_multiscale_at_scale_one_without_flip_is_whole(images: torch.Tensor) -> None:
    net = _net()
    protocol = EvalProtocol("multiscale", scales=(1.0,))
    result = protocol.infer(net, images)
    whole = EvalProtocol().infer(net, images)
    assert torch.equal(result, whole)


def test_slide_averages_overlapping_windows_as_mmsegmentation() -> None:
    """Each window's logits are its index: every pixel gets the mean index of the windows over it.
    Width 7, window 4, stride 2: windows at x = 0, 2 and (moved back to the edge) 3; height 6: y = 0, 2."""
    calls: list[tuple[int, ...]] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch.full((1, 1, *x.shape[-2:]), float(len(calls) - 1))

    result = slide(predict, torch.zeros(1, 3, 6, 7), (4, 4), (2, 2))
    corners = [(y, x) for y in (0, 2) for x in (0, 2, 3)]
    expected_sum, count = torch.zeros(6, 7), torch.zeros(6, 7)
    for index, (y, x) in enumerate(corners):
        expected_sum[y : y + 4, x : x + 4] += index
        count[y : y + 4, x : x + 4] += 1
    assert calls == [(1, 3, 4, 4)] * 6
    assert torch.allclose(result[0, 0], expected_sum / count)
    assert result[0, 0, 0, 0].item() == 0.0 and result[0, 0, 5, 6].item() == 5.0


@torch.no_grad()
def test_slide_pads_an_image_smaller_than_the_window() -> None:
    net = _net()
    image = torch.randn(1, 3, 5, 9, generator=torch.Generator().manual_seed(2))
    shapes: list[tuple[int, ...]] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return net(x)

    result = slide(predict, image, (8, 8), (4, 4))  # height 5 padded to 8; width 9: windows at x = 0, 1
    assert shapes == [(1, 3, 8, 8)] * 2
    assert result.shape == (1, 4, 5, 9)
    expected = torch.zeros(1, 4, 5, 9)
    count = torch.zeros(5, 9)
    for x in (0, 1):
        expected[..., x : x + 8] += net(F.pad(image[..., x : x + 8], (0, 0, 0, 3)))[..., :5, :]
        count[:, x : x + 8] += 1
    assert torch.allclose(result, expected / count, atol=1e-6)


@torch.no_grad()
def test_multiscale_with_flip_averages_the_logits_of_every_view(images: torch.Tensor) -> None:
    net = _net()
    size = (12, 20)
    expected = torch.zeros(2, 4, *size)
    for scale in (0.5, 1.5):
        view = F.interpolate(images, size=scaled(size, scale), mode="bilinear", align_corners=False)
        for flip in (False, True):
            logits = net(view.flip(-1) if flip else view)
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            expected += logits.flip(-1) if flip else logits
    result = multiscale(net, images, EvalProtocol("multiscale", scales=(0.5, 1.5), flip=True).views)
    assert torch.allclose(result, expected / 4, atol=1e-6)


def test_input_shapes_and_routing_by_shape(images: torch.Tensor) -> None:
    assert EvalProtocol().input_shapes((12, 20)) == [(12, 20)]
    assert EvalProtocol("slide", window=(8, 8), stride=(4, 4)).input_shapes((12, 20)) == [(8, 8)]
    multi = EvalProtocol("multiscale", scales=(0.5, 1.0, 0.5), flip=True)
    assert multi.input_shapes((12, 20)) == [(6, 10), (12, 20)]
    assert scaled((12, 20), 0.75) == (9, 15) and scaled((5, 5), 0.5) == (3, 3)  # half up, as mmcv
    assert EvalProtocol("multiscale").views == [(s, False) for s in DEFAULT_SCALES]
    seen: list[str] = []
    predict = route({(6, 10): lambda x: seen.append("small") or x, (12, 20): lambda x: seen.append("full") or x})
    multi.infer(predict, images)
    assert seen == ["small", "small", "full", "full", "small", "small"]


def test_fields_name_the_protocol() -> None:
    assert EvalProtocol().fields() == {
        "protocol": "whole",
        "window": None,
        "stride": None,
        "scales": None,
        "flip": None,
    }
    assert EvalProtocol("slide", window=(512, 512), stride=(341, 341)).fields() == {
        "protocol": "slide",
        "window": "512x512",
        "stride": "341x341",
        "scales": None,
        "flip": None,
    }
    assert EvalProtocol("multiscale", flip=True).fields()["scales"] == "0.5,0.75,1,1.25,1.5,1.75"
    assert EvalProtocol("multiscale", scales=(1.0,)).fields()["flip"] is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "tiles"}, "bad --protocol 'tiles': accepted whole, slide, multiscale"),
        ({"window": (8, 8)}, "--window goes with --protocol slide, not --protocol whole"),
        ({"name": "multiscale", "stride": (4, 4)}, "--stride goes with --protocol slide, not --protocol multiscale"),
        ({"name": "slide", "window": (8, 8), "stride": (4, 4), "flip": True}, "--flip goes with --protocol multiscale"),
        ({"scales": (1.0,)}, "--scales goes with --protocol multiscale, not --protocol whole"),
        ({"name": "slide", "window": (8, 8)}, "--protocol slide needs --window HxW and --stride HxW"),
        ({"name": "slide", "window": (8, 8), "stride": (0, 4)}, "bad --stride 0x4: expected HxW with integers >= 1"),
        ({"name": "slide", "window": (8, 8), "stride": (4, 9)}, "--stride 4x9 is larger than --window 8x8"),
        ({"name": "multiscale", "scales": (0.5, 0.0)}, "bad --scales 0.5,0: expected numbers > 0"),
        ({"name": "multiscale", "scales": (float("nan"),)}, "bad --scales nan"),
        ({"name": "multiscale", "scales": ()}, "bad --scales"),
    ],
)
def test_bad_options_are_refused_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(".", r"\.")) as caught:
        EvalProtocol(**options)
    assert "\n" not in str(caught.value)


def test_sizes_the_protocol_cannot_cover_are_refused() -> None:
    slide_protocol = EvalProtocol("slide", window=(16, 16), stride=(8, 8))
    slide_protocol.check_size((16, 32))
    with pytest.raises(UserError, match=r"^--window 16x16 is larger than the --source-size 8x32$"):
        slide_protocol.check_size((8, 32), "--source-size")
    with pytest.raises(UserError, match=r"^--scales 0.01 leaves no pixel of the --size 16x16$"):
        EvalProtocol("multiscale", scales=(0.01,)).check_size((16, 16))
