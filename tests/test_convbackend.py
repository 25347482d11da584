"""Per-layer CPU conv backends: plans route the named layers, the probe decides and stops a losing oneDNN."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.profiler import profile

from segbench.errors import UserError
from segbench.measure import convbackend
from segbench.measure.convbackend import Layer, Plan, conv_layers, parse_plan, probe, use_plan


def small_net() -> nn.Sequential:
    """FCN-style: each conv followed by an in-place ReLU (the case module backward hooks cannot handle)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 4, 1),
    )


def conv_ops(model: nn.Module, plan: Plan) -> tuple[Counter, dict[str, torch.Tensor]]:
    """Profiled conv operators of one forward + backward under ``plan``, and the gradients."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model.zero_grad()
    with use_plan(model, plan), profile() as prof:
        model(x).square().sum().backward()
    names = Counter(e.name for e in prof.events() if "conv" in e.name)
    return names, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("text", ["onednn", "native", "native:0,4"])
def test_plan_text_round_trips(text: str) -> None:
    assert str(parse_plan(text)) == text
    assert parse_plan("auto") is None


@pytest.mark.parametrize("text", ["mkldnn", "native:", "onednn:0", "fast"])
def test_bad_plan_text_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="accepted auto, onednn, native"):
        parse_plan(text)


def test_plan_runs_the_named_layer_native_forward_and_backward() -> None:
    model = small_net()
    ops, grads = conv_ops(model, Plan(native=("2",)))
    assert ops["aten::_slow_conv2d_forward"] == 1 and ops["aten::_slow_conv2d_backward"] == 1
    assert ops["aten::mkldnn_convolution"] == 2  # layers 0 and 4 stay on oneDNN
    assert torch.backends.mkldnn.enabled  # restored after the step
    all_native, native_grads = conv_ops(model, Plan(everything=True))
    assert all_native["aten::_slow_conv2d_forward"] == 3 and not all_native["aten::mkldnn_convolution"]
    default, onednn_grads = conv_ops(model, Plan())
    assert not default["aten::_slow_conv2d_forward"]
    for name in grads:  # same maths, other kernels
        torch.testing.assert_close(grads[name], onednn_grads[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(native_grads[name], onednn_grads[name], rtol=1e-4, atol=1e-5)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_plan_naming_a_missing_layer_is_a_user_error() -> None:
    with pytest.raises(UserError, match="'1' is not a conv layer of Sequential"):
        Plan(native=("1",)).layers(small_net())


def test_conv_layers_come_from_a_meta_twin_without_touching_rng_or_model() -> None:
    model = small_net().train()
    before = torch.get_rng_state(), [p.clone() for p in model.parameters()]
    layers = conv_layers(model, (2, 3, 16, 16))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before[1]))
    assert list(layers) == ["0", "2", "4"]
    first, last = layers["0"], layers["4"]
    assert (first.input_shape, first.input_grad, first.output_shape) == ((2, 3, 16, 16), False, (2, 8, 16, 16))
    assert (last.input_shape, last.input_grad, last.macs) == ((2, 8, 16, 16), True, 2 * 16 * 16 * 8 * 4)


def test_small_layers_keep_onednn_untimed() -> None:
    found = probe(small_net(), (2, 3, 16, 16))
    assert str(found.plan) == "onednn" and found.timings == {}


class FakeChild:
    """Stands in for the child process: oneDNN seconds per input channel count (None: stopped)."""

    onednn: ClassVar[dict[int, float | None]] = {}

    def __init__(self) -> None:
        self.process = self

    def poll(self) -> None:
        return None

    def time(self, layer: Layer, timeout: float) -> float | None:
        seconds = self.onednn[dict(layer.options)["in_channels"]]
        return None if seconds is None or seconds > timeout else seconds

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("onednn", "plan"),
    [
        ({3: 0.0, 64: 0.0}, "onednn"),  # oneDNN faster
        ({3: None, 64: 0.0}, "native:0"),  # stopped: it had lost
        ({3: 50.0, 64: 50.0}, "native"),  # every conv loses: the whole model native
    ],
)
def test_probe_decides_from_native_and_onednn_times(monkeypatch: pytest.MonkeyPatch, onednn: dict, plan: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    monkeypatch.setattr(FakeChild, "onednn", onednn)
    monkeypatch.setattr(convbackend, "_Child", FakeChild)
    found = probe(model, (4, 3, 32, 32))
    assert str(found.plan) == plan
    assert set(found.timings) == {"0", "2"} and all(native > 0 for native, _ in found.timings.values())


@pytest.mark.parametrize(
    ("native", "onednn", "wins"),
    [(1.0, 5.0, True), (1.0, 4.9, False), (0.01, 0.2, False), (0.01, 0.3, True), (1.0, None, True)],
)
def test_native_wins_only_decisively(native: float, onednn: float | None, wins: bool) -> None:
    assert convbackend._native_wins(native, onednn) is wins


def test_child_call_past_its_timeout_is_stopped() -> None:
    layer = conv_layers(nn.Sequential(nn.Conv2d(64, 64, 3)), (4, 64, 64, 64))[
        "0"
    ]  # tens of ms: longer than the timeout
    child = convbackend._Child()
    assert child.time(layer, timeout=60.0) > 0  # answered
    assert child.time(layer, timeout=1e-4) is None
    assert child.process.poll() is not None  # ended
