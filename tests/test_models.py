"""Tests for the built-in architectures (issue 4): exact parameter counts, shapes, init, determinism.

Counts are derived from layer formulas here and checked against REFERENCE.md's totals. The FCNs
(~134 M parameters each) come from the session-scoped ``fcn_models`` fixture and see small inputs.

Choices under test (see the module docstrings):
- FCN alignment: pad-1 convs, ceil-mode pools, fc6 padding 3, upsamplers with padding s/2 and
  top-left crops, instead of the reference's conv1_1 padding 100 + crops. Counts are unchanged.
- Fast-SCNN layout: paper table; ReLU; Xception-style DSConv (no activation between depthwise and
  pointwise); PPM bins 1, 2, 3, 6 with 1x1 ConvBNReLU to 32 and a 1x1 ConvBNReLU 256 -> 128; FFM as
  in REFERENCE.md; classifier 2 DSConv + dropout + 1x1 conv with bias: 1,137,795 parameters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.blocks import ConvBNReLU, DepthwiseSeparableConv
from segbench.models.fast_scnn import FastSCNN
from segbench.models.fcn import bilinear_kernel, bilinear_upsampler

FCN_NAMES = ("fcn32s", "fcn16s", "fcn8s")
ODD_SIZES = ((32, 32), (33, 47), (97, 131), (300, 457))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- analytic parameter formulas


def conv_bn(k: int, c: int, n: int, groups: int = 1) -> int:
    """Bias-free KxK conv (C -> N, grouped) plus BN affine (2 per output channel)."""
    return k * k * (c // groups) * n + 2 * n


def dsconv(c: int, n: int, k: int = 3) -> int:
    """K*K*C + C*N weights plus BN terms for C + N channels."""
    return conv_bn(k, c, c, groups=c) + conv_bn(1, c, n)


def bottleneck(c: int, n: int, t: int = 6) -> int:
    return conv_bn(1, c, t * c) + conv_bn(3, t * c, t * c, groups=t * c) + conv_bn(1, t * c, n)


def conv_bias(k: int, c: int, n: int) -> int:
    return k * k * c * n + n


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("c", [3, 32, 128])
@pytest.mark.parametrize("n", [16, 128])
def test_block_parameter_formulas(k: int, c: int, n: int) -> None:
    assert n_params(ConvBNReLU(c, n, k)) == k * k * c * n + 2 * n
    assert n_params(DepthwiseSeparableConv(c, n, k)) == k * k * c + c * n + 2 * (c + n)


def test_block_weight_example_from_reference() -> None:
    """REFERENCE.md: C = N = 128, K = 3 gives 147,456 vs 17,536 weights (ratio 1/N + 1/K^2)."""
    std = ConvBNReLU(128, 128, 3)
    sep = DepthwiseSeparableConv(128, 128, 3)
    std_w = std.conv.weight.numel()
    sep_w = sep.depthwise.conv.weight.numel() + sep.pointwise.conv.weight.numel()
    assert (std_w, sep_w) == (147_456, 17_536)
    assert sep_w / std_w == pytest.approx(1 / 128 + 1 / 9)
    for block in (std, sep):
        assert all(m.bias is None for m in block.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_blocks_keep_same_padding(k: int, stride: int, dilation: int) -> None:
    x = torch.randn(2, 8, 17, 22)
    expected = (2, 12, math.ceil(17 / stride), math.ceil(22 / stride))
    assert ConvBNReLU(8, 12, k, stride=stride, dilation=dilation)(x).shape == expected
    assert DepthwiseSeparableConv(8, 12, k, stride=stride, dilation=dilation)(x).shape == expected


def test_dsconv_activation_convention() -> None:
    """Default: Xception/Fast-SCNN (no ReLU after the depthwise BN); mid_activation: MobileNet v1."""
    torch.manual_seed(0)
    paper = DepthwiseSeparableConv(4, 6)
    mobilenet = DepthwiseSeparableConv(4, 6, mid_activation=True)
    seen: dict[str, torch.Tensor] = {}
    paper.depthwise.register_forward_hook(lambda m, i, o: seen.__setitem__("paper", o.clone()))
    mobilenet.depthwise.register_forward_hook(lambda m, i, o: seen.__setitem__("mobilenet", o.clone()))
    x = torch.randn(2, 4, 9, 9)
    paper(x), mobilenet(x)
    assert (seen["paper"] < 0).any()
    assert (seen["mobilenet"] >= 0).all()
    assert (paper.pointwise(torch.randn(2, 4, 9, 9)) >= 0).all()


# ---------------------------------------------------------------- FCN


FCN_COUNTS = {"fcn32s": 136_152_917, "fcn16s": 134_815_994, "fcn8s": 134_489_759}  # REFERENCE.md


@pytest.mark.parametrize("name", FCN_NAMES)
def test_fcn_parameter_counts_match_reference(fcn_models: dict[str, nn.Module], name: str) -> None:
    model = fcn_models[name]
    vgg = sum(conv_bias(3, c, n) for c, n in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)])
    vgg += 2 * conv_bias(3, 256, 256) + conv_bias(3, 256, 512) + 5 * conv_bias(3, 512, 512)
    vgg += conv_bias(7, 512, 4096) + conv_bias(1, 4096, 4096)
    assert vgg == 134_260_544 == n_params(model.backbone)  # VGG16 without fc8
    score = {"fcn32s": conv_bias(1, 4096, 21), "fcn16s": conv_bias(1, 4096, 21) + conv_bias(1, 512, 21)}
    score["fcn8s"] = score["fcn16s"] + conv_bias(1, 256, 21)
    ups = {"fcn32s": [64], "fcn16s": [4, 32], "fcn8s": [4, 4, 16]}[name]  # kernel sizes, no bias
    expected = vgg + score[name] + sum(k * k * 21 * 21 for k in ups)
    assert n_params(model) == expected == FCN_COUNTS[name]
    kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert sorted(kernels) == sorted(ups)


@pytest.mark.parametrize("name", FCN_NAMES)
def test_fcn_init_zero_scores_and_bilinear_upsamplers(fcn_models: dict[str, nn.Module], name: str) -> None:
    model = fcn_models[name]
    for layer in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, layer):
            assert not getattr(model, layer).weight.any() and not getattr(model, layer).bias.any()
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    for up in ups:
        assert up.bias is None and up.weight.requires_grad
        assert torch.equal(up.weight, bilinear_kernel(21, up.kernel_size[0]))
        assert up.padding[0] == up.stride[0] // 2


def test_bilinear_kernel_values() -> None:
    w = bilinear_kernel(3, 4)
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])
    for i in range(3):
        assert torch.equal(w[i, i], torch.outer(row, row))
    assert not w[0, 1].any() and not w[2, 0].any()


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_bilinear_upsampler_equals_interpolate_in_interior(factor: int) -> None:
    torch.manual_seed(factor)
    x = torch.randn(2, 3, 5, 7)
    up = bilinear_upsampler(3, factor)(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape == (2, 3, 5 * factor, 7 * factor)
    b = factor // 2  # beyond this band interpolate clamps to the edge while the conv sees zeros
    torch.testing.assert_close(up[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(up[..., :b, :], ref[..., :b, :])


@contextlib.contextmanager
def randomised(model: nn.Module, layers: tuple[str, ...]) -> Iterator[None]:
    """Temporarily give the named (zero-initialised) layers random weights; restore them after."""
    present = [n for n in layers if hasattr(model, n)]
    saved = {n: [p.detach().clone() for p in getattr(model, n).parameters()] for n in present}
    try:
        with torch.no_grad():
            for n in saved:
                for p in getattr(model, n).parameters():
                    p.normal_(0, 0.01)
        yield
    finally:
        with torch.no_grad():
            for n, params in saved.items():
                for p, old in zip(getattr(model, n).parameters(), params):
                    p.copy_(old)


SCORES = ("score_fr", "score_pool4", "score_pool3")


class _FakeBackbone(nn.Module):
    """Stands in for VGG16 (same output sizes: ceil(H/8), ceil(H/16), ceil(H/32)) to test the head."""

    def __init__(self, fc7: torch.Tensor) -> None:
        super().__init__()
        self.fc7 = fc7

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        pool3 = torch.randn(x.shape[0], 256, math.ceil(h / 8), math.ceil(w / 8))
        pool4 = torch.randn(x.shape[0], 512, math.ceil(h / 16), math.ceil(w / 16))
        return pool3, pool4, self.fc7


@pytest.mark.parametrize("name", FCN_NAMES)
@pytest.mark.parametrize("size", [(300, 457), (161, 224)])
def test_fcn_head_at_init_is_aligned_bilinear(
    fcn_models: dict[str, nn.Module], name: str, size: tuple[int, int]
) -> None:
    """At init (skips zero) the head upsamples score_fr like a cascade of F.interpolate(align_corners=False)
    with top-left crops to ceil(H/16), ceil(H/8), H: the skip grids and the output grid line up."""
    model = fcn_models[name]
    h, w = size
    torch.manual_seed(1)
    fc7 = torch.randn(1, 4096, math.ceil(h / 32), math.ceil(w / 32))
    backbone = model.backbone
    try:
        model.backbone = _FakeBackbone(fc7)
        with randomised(model, ("score_fr",)), torch.no_grad():
            out = model(torch.empty(1, 3, h, w))
            ref = model.score_fr(fc7)
    finally:
        model.backbone = backbone
    stride = 32
    for factor in {"fcn32s": [32], "fcn16s": [2, 16], "fcn8s": [2, 2, 8]}[name]:
        stride //= factor
        ref = F.interpolate(ref, scale_factor=factor, mode="bilinear", align_corners=False)
        ref = ref[..., : math.ceil(h / stride), : math.ceil(w / stride)]
    assert out.shape == ref.shape == (1, 21, h, w)
    m = 32  # border band where zero padding and edge clamping differ, after all stages
    torch.testing.assert_close(out[..., m:-m, m:-m], ref[..., m:-m, m:-m], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FCN_NAMES)
def test_fcn_output_shapes_and_feature_sizes(fcn_models: dict[str, nn.Module], name: str) -> None:
    model = fcn_models[name].eval()
    seen: list[tuple[int, ...]] = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: seen.append(tuple(t.shape[-2:] for t in o)))
    try:
        with torch.no_grad():
            for h, w in ODD_SIZES[:3]:
                assert model(torch.randn(1, 3, h, w)).shape == (1, 21, h, w)
                expected = tuple((math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32))
                assert seen.pop() == expected
    finally:
        hook.remove()


@pytest.mark.parametrize(
    "name",
    # the backward allocates ~0.5 GB of gradients; FCN-8s exercises every layer kind, the others are slow
    [pytest.param(n, marks=pytest.mark.slow) for n in FCN_NAMES[:2]] + ["fcn8s"],
)
def test_fcn_forward_backward(fcn_models: dict[str, nn.Module], name: str) -> None:
    model = fcn_models[name].train()
    torch.manual_seed(2)
    x = torch.randn(1, 3, 33, 47)
    target = torch.randint(0, 21, (1, 33, 47))
    with randomised(model, SCORES):
        try:
            out = model(x)
            assert out.shape == (1, 21, 33, 47)
            F.cross_entropy(out, target).backward()
            for pname, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            first_conv = model.backbone.to_pool3[0][0]
            assert first_conv.weight.grad.abs().sum() > 0
            for up in (m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)):
                assert up.weight.grad.abs().sum() > 0
        finally:
            model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", FCN_NAMES)
def test_fcn_eval_deterministic_train_dropout(fcn_models: dict[str, nn.Module], name: str) -> None:
    model = fcn_models[name]
    x = torch.randn(1, 3, 33, 47)
    with randomised(model, SCORES), torch.no_grad():
        model.train()
        train_a, train_b = model(x), model(x)
        model.eval()
        eval_a, eval_b = model(x), model(x)
    assert not torch.equal(train_a, train_b)  # dropout 0.5 after fc6 and fc7
    assert torch.equal(eval_a, eval_b)


# ---------------------------------------------------------------- Fast-SCNN


def test_fast_scnn_parameter_count_per_module() -> None:
    model = FastSCNN()
    stages = [(64, 64, 3), (64, 96, 3), (96, 128, 3)]  # (in, out, repeats) from the paper table
    gfe = sum(bottleneck(c, n) + (r - 1) * bottleneck(n, n) for c, n, r in stages)
    expected = {
        "learning_to_downsample": conv_bn(3, 3, 32) + dsconv(32, 48) + dsconv(48, 64),
        "global_feature_extractor": gfe,
        "pyramid_pooling": 4 * conv_bn(1, 128, 32) + conv_bn(1, 256, 128),
        "feature_fusion": conv_bn(3, 128, 128, groups=128) + conv_bn(1, 128, 128) + conv_bn(1, 64, 128),
        "classifier": 2 * dsconv(128, 128) + conv_bias(1, 128, 19),
    }
    actual = {name: n_params(child) for name, child in model.named_children()}
    assert actual == expected
    assert n_params(model) == sum(expected.values()) == 1_137_795  # REFERENCE.md, paper layout
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert round(conv_weights / 1e6, 2) == 1.11  # the paper's "1.11 M"
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels != 19)


def test_fast_scnn_feature_sizes_at_cityscapes_resolution() -> None:
    """Paper table at 1024x2048: 1/8 after LTD (128x256x64), 1/32 after the bottlenecks (32x64x128).
    Real size on CPU; one no-grad forward takes about 1-3 s."""
    model = FastSCNN().eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name, child in model.named_children():
        child.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1024, 2048))
    assert seen == {
        "learning_to_downsample": (64, 128, 256),
        "global_feature_extractor": (128, 32, 64),
        "pyramid_pooling": (128, 32, 64),
        "feature_fusion": (128, 128, 256),
        "classifier": (19, 128, 256),
    }
    assert out.shape == (1, 19, 1024, 2048)


@pytest.mark.parametrize("size", ODD_SIZES)
def test_fast_scnn_sizes_not_divisible_by_32(size: tuple[int, int]) -> None:
    h, w = size
    model = FastSCNN(num_classes=7).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("learning_to_downsample", "global_feature_extractor", "feature_fusion"):
        child = getattr(model, name)
        child.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape[-2:]))
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 7, h, w)
    eighth = (math.ceil(h / 8), math.ceil(w / 8))
    assert seen == {
        "learning_to_downsample": eighth,
        "global_feature_extractor": (math.ceil(h / 32), math.ceil(w / 32)),
        "feature_fusion": eighth,
    }


def test_fast_scnn_aux_heads() -> None:
    torch.manual_seed(3)
    model = FastSCNN(aux=True)
    aux_params = conv_bn(3, 64, 32) + conv_bias(1, 32, 19) + conv_bn(3, 128, 32) + conv_bias(1, 32, 19)
    assert n_params(model) == 1_137_795 + aux_params
    x = torch.randn(2, 3, 65, 97)  # batch 2: BN after the 1x1 pyramid bin needs >1 value in training
    target = torch.randint(0, 19, (2, 65, 97))
    outs = model.train()(x)
    assert isinstance(outs, tuple) and [o.shape for o in outs] == [(2, 19, 65, 97)] * 3
    loss = F.cross_entropy(outs[0], target) + 0.4 * sum(F.cross_entropy(o, target) for o in outs[1:])
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 19, 65, 97)
    plain = FastSCNN().train()
    assert isinstance(plain(x), torch.Tensor)


def test_fast_scnn_eval_deterministic_train_dropout() -> None:
    torch.manual_seed(4)
    model = FastSCNN()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        model.train()
        train_a, train_b = model(x), model(x)
        model.eval()
        eval_a, eval_b = model(x), model(x)
    assert not torch.equal(train_a, train_b)  # dropout before the classifier's last conv
    assert torch.equal(eval_a, eval_b)


def test_fast_scnn_channels_last_matches() -> None:
    torch.manual_seed(5)
    model = FastSCNN().eval()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["fast_scnn", "fcn8s"])
def test_models_trace_without_graph_breaks(fcn_models: dict[str, nn.Module], name: str) -> None:
    """torch.compile(fullgraph=True) raises on any graph break (.item(), data-dependent shapes);
    the "eager" backend checks the trace on CPU without compiling kernels (~2 s)."""
    model = FastSCNN() if name == "fast_scnn" else fcn_models[name]
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        traced = torch.compile(model.eval(), fullgraph=True, backend="eager")(x)
        assert torch.equal(traced, model(x))


@pytest.mark.cuda
@pytest.mark.cuda
@needs_cuda
def test_models_on_cuda_compiled_channels_last(fcn_models: dict[str, nn.Module]) -> None:
    """CUDA path: torch.compile(fullgraph=True) + channels_last give the eager results (no graph breaks).

    In true fp32 (TF32 off): with TF32, eager and compiled pick different kernels and may differ by
    more than the tolerance now and then."""
    from segbench.measure.settings import strict_fp32

    torch.manual_seed(6)
    x = torch.randn(2, 3, 97, 131, device="cuda").to(memory_format=torch.channels_last)
    fast = FastSCNN().cuda().eval().to(memory_format=torch.channels_last)
    with torch.no_grad(), strict_fp32():
        eager = fast(x)
        compiled = torch.compile(fast, fullgraph=True)(x)
    assert eager.shape == (2, 19, 97, 131)
    torch.testing.assert_close(compiled, eager, atol=1e-3, rtol=1e-3)
    fcn = fcn_models["fcn8s"].cuda().eval()
    try:
        with torch.no_grad():
            assert fcn(x).shape == (2, 21, 97, 131)
    finally:
        fcn.cpu()
