"""The analytic MAC counter: exact multiply-accumulates from the shapes seen in one forward pass.

Convention (the one segbench's ``macs_analytic`` and ``flops`` follow; MACs are multiply-accumulates,
FLOPs = 2 x MACs):

- Counted in ``macs_analytic`` (the "primary" ops, what papers quote as a network's MACs):

  - ``Conv{1,2,3}d``: N * H_out * W_out * C_out * (C_in / groups) * K_h * K_w (and D for 3-D). Stride,
    dilation and padding act only through the output size; taps that land on zero padding count, as
    in every published count. The bias add is not counted.
  - ``ConvTranspose{1,2,3}d``: N * H_in * W_in * C_in * (C_out / groups) * K_h * K_w, i.e. every *input*
    pixel is multiplied by the whole kernel once (the scatter view; the taps that ``padding`` crops
    away still count, ``output_padding`` adds none). This is what fvcore counts too; thop instead
    counts on the output grid (about stride^2 times more).
  - ``Linear`` and functional ``matmul`` / ``linear``: output elements * inner dimension.
- Reported separately in ``macs_other`` (never folded into ``macs_analytic``, never dropped):

  - normalisation (BatchNorm, GroupNorm, LayerNorm, InstanceNorm): 1 per output element, the folded
    inference-time scale-and-shift;
  - activations (ReLU, ReLU6, GELU, SiLU, sigmoid, ...): 1 per output element;
  - elementwise ``+ - * /`` between tensors (residual adds, fusion): 1 per output element;
  - max / average pooling: one per window tap per output element (K_h * K_w); adaptive pooling: the
    exact sum of its bin sizes;
  - interpolation: taps per output element (nearest 1, linear 2, bilinear 4, bicubic 16,
    trilinear 8; ``area`` as adaptive average pooling).
- Not counted at all: data movement (cat, slicing, views, padding), dropout and identity in eval mode.

How: forward hooks on every module keep the stack of module names; layers of a known type are
counted from their attributes and input/output shapes; functional calls made outside such layers
(``F.interpolate``, ``x + y``, ``torch.matmul``, ``F.conv2d``) are seen by a ``TorchFunctionMode``.
Only shapes are used, so the forward pass may run on the ``meta`` device (no compute, no memory).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

CONVENTION_NOTE = (
    "macs_analytic: Conv (N*H_out*W_out*C_out*C_in/groups*K_h*K_w), ConvTranspose "
    "(N*H_in*W_in*C_in*C_out/groups*K_h*K_w), Linear/matmul; macs_other: BN, activations, add, "
    "pooling, interpolation (per output element / window tap); flops = 2 x macs_fvcore"
)
PRIMARY = frozenset(
    {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear", "matmul"}
)
ROOT = "(root)"  # per-module name of ops in the model's own forward
_INTERPOLATION_TAPS = {"nearest": 1, "nearest-exact": 1, "linear": 2, "bilinear": 4, "bicubic": 16, "trilinear": 8}


@dataclass(frozen=True)
class OpRecord:
    """One counted operation: where it ran, what it was, its MACs under the convention above."""

    module: str  # dotted module name ('' = the model's own forward)
    operator: str  # e.g. conv2d, conv_transpose2d, batch_norm, relu, add, interpolate
    macs: int

    @property
    def primary(self) -> bool:
        return self.operator in PRIMARY

    @property
    def top_module(self) -> str:
        return self.module.split(".", 1)[0] or ROOT


@dataclass
class AnalyticCount:
    """All records of one forward pass, plus the layer type of every module (for attributions)."""

    records: list[OpRecord] = field(default_factory=list)
    module_operator: dict[str, str] = field(default_factory=dict)  # counted layer name -> operator

    @property
    def macs(self) -> int:
        """``macs_analytic``: convolutions, transposed convolutions, linear / matmul."""
        return sum(r.macs for r in self.records if r.primary)

    @property
    def macs_other(self) -> int:
        """Normalisation, activations, elementwise, pooling and interpolation."""
        return sum(r.macs for r in self.records if not r.primary)

    def by_operator(self) -> Counter[str]:
        return _sum_by(self.records, lambda r: r.operator)

    def by_top_module(self, primary: bool) -> Counter[str]:
        return _sum_by((r for r in self.records if r.primary == primary), lambda r: r.top_module)


def _sum_by(records: Any, key: Callable[[OpRecord], str]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for record in records:
        totals[key(record)] += record.macs
    return totals


# ---- layers counted from their attributes ---------------------------------------------------------


def conv_macs(conv: nn.modules.conv._ConvNd, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of a (transposed) convolution under the convention in the module docstring."""
    kernel = math.prod(conv.kernel_size)
    if conv.transposed:  # every input pixel meets the whole (C_out / groups) x K kernel once
        batch, spatial = inputs.shape[0], math.prod(inputs.shape[2:])
        return batch * spatial * conv.in_channels * (conv.out_channels // conv.groups) * kernel
    batch, spatial = output.shape[0], math.prod(output.shape[2:])
    return batch * spatial * conv.out_channels * (conv.in_channels // conv.groups) * kernel


def _conv_name(conv: nn.modules.conv._ConvNd) -> str:
    dims = len(conv.kernel_size)
    return f"conv_transpose{dims}d" if conv.transposed else f"conv{dims}d"


def _pool_taps(kernel: Any, dims: int) -> int:
    return math.prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel) ** dims


def adaptive_pool_macs(in_shape: torch.Size, out_shape: torch.Size) -> int:
    """Exact adds (or compares) of adaptive pooling: PyTorch's bins [floor(i*n/m), ceil((i+1)*n/m))."""
    dims = len(out_shape) - 2
    total = math.prod(out_shape[:2])
    for n, m in zip(in_shape[-dims:], out_shape[-dims:]):
        total *= sum(-((-(i + 1) * n) // m) - (i * n) // m for i in range(m))
    return total


_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_FREE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


def operator_name(module: nn.Module) -> str | None:
    """The operator a counted layer type stands for; None for types the counter looks inside."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_name(module)
    for types, name in ((nn.Linear, "linear"), (nn.modules.batchnorm._BatchNorm, "batch_norm"), (_FREE, "free")):
        if isinstance(module, types):
            return name
    if isinstance(module, _NORMS + _ACTIVATIONS + _POOLS + _ADAPTIVE):
        return _snake(type(module).__name__)
    return None


def _snake(name: str) -> str:
    """``BatchNorm2d`` -> ``batch_norm2d``, ``ReLU6`` -> ``relu6``, ``AdaptiveAvgPool2d`` -> ..."""
    out = name.replace("ReLU", "Relu").replace("GELU", "Gelu").replace("SiLU", "Silu").replace("PReLU", "Prelu")
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(out))


def module_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one call of a counted layer (the operator is ``operator_name(module)``)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return conv_macs(module, inputs, output)
    if isinstance(module, nn.Linear):
        return output.numel() // module.out_features * module.in_features * module.out_features
    if isinstance(module, _POOLS):
        return output.numel() * _pool_taps(module.kernel_size, output.dim() - 2)
    if isinstance(module, _ADAPTIVE):
        return adaptive_pool_macs(inputs.shape, output.shape)
    if isinstance(module, _FREE):
        return 0
    return output.numel()  # normalisation and activations: one per output element


# ---- functional calls made outside counted layers -------------------------------------------------


def _first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a (nested) tuple / list / dict of call arguments or outputs."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((t for t in map(_first_tensor, items) if t is not None), None)


def _interpolate_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
    if mode == "area":
        return adaptive_pool_macs(args[0].shape, out.shape)
    return out.numel() * _INTERPOLATION_TAPS.get(mode, 1)


def _matmul_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    return out.numel() * args[0].shape[-1]


def _linear_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return out.numel() * weight.shape[-1]


def _fconv_macs(transposed: bool) -> Callable[[tuple, dict, torch.Tensor], int]:
    """Functional conv: weight (C_out, C_in/g, K..) or, transposed, (C_in, C_out/g, K..)."""

    def count(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        per_element = math.prod(weight.shape[1:])
        return (args[0] if transposed else out).numel() * per_element

    return count


def _elementwise(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    return out.numel()


def _adaptive(args: tuple, kwargs: dict, out: Any) -> int:
    out = out[0] if isinstance(out, tuple) else out
    return adaptive_pool_macs(args[0].shape, out.shape)


def _pool(args: tuple, kwargs: dict, out: Any) -> int:
    out = out[0] if isinstance(out, tuple) else out
    kernel = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
    return out.numel() * _pool_taps(kernel, out.dim() - 2)


def functional_table() -> dict[Callable[..., Any], tuple[str, Callable[[tuple, dict, Any], int]]]:
    T = torch.Tensor
    table: dict[Callable[..., Any], tuple[str, Callable[[tuple, dict, Any], int]]] = {
        F.interpolate: ("interpolate", _interpolate_macs),
        F.linear: ("linear", _linear_macs),
        F.conv1d: ("conv1d", _fconv_macs(False)),
        F.conv2d: ("conv2d", _fconv_macs(False)),
        F.conv3d: ("conv3d", _fconv_macs(False)),
        F.conv_transpose1d: ("conv_transpose1d", _fconv_macs(True)),
        F.conv_transpose2d: ("conv_transpose2d", _fconv_macs(True)),
        F.conv_transpose3d: ("conv_transpose3d", _fconv_macs(True)),
        F.batch_norm: ("batch_norm", _elementwise),
        F.max_pool2d: ("max_pool2d", _pool),
        F.avg_pool2d: ("avg_pool2d", _pool),
        F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", _adaptive),
        F.adaptive_max_pool2d: ("adaptive_max_pool2d", _adaptive),
    }
    for fn in (torch.matmul, T.matmul, T.__matmul__, torch.bmm, T.bmm, torch.mm, T.mm):
        table[fn] = ("matmul", _matmul_macs)
    for op, dunder in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("div", "truediv")):
        for fn in (
            getattr(torch, op),
            getattr(T, op),
            getattr(T, f"{op}_"),
            getattr(T, f"__{dunder}__"),
            getattr(T, f"__r{dunder}__"),
            getattr(T, f"__i{dunder}__"),
        ):
            table[fn] = (op, _elementwise)
    for name in ("relu", "relu6", "gelu", "silu", "hardswish", "sigmoid", "tanh", "leaky_relu"):
        table[getattr(F, name)] = (name, _elementwise)
    for name in ("relu", "sigmoid", "tanh"):
        table[getattr(torch, name)] = (name, _elementwise)
        table[getattr(T, name)] = (name, _elementwise)
        table[getattr(T, f"{name}_")] = (name, _elementwise)
    table[F.relu_] = ("relu", _elementwise)
    return table


class _FunctionalCounter(TorchFunctionMode):
    """Counts the table's functional calls made while no counted layer is running."""

    def __init__(self, counter: _Tracker) -> None:
        super().__init__()
        self.counter = counter
        self.table = functional_table()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        entry = self.table.get(func)
        if entry is not None and self.counter.inside_layer == 0:
            name, count = entry
            self.counter.add(name, count(args, kwargs, out))
        return out


class _Tracker:
    """Module-name stack kept by hooks; counted layers record themselves when they return."""

    def __init__(self) -> None:
        self.stack: list[str] = [""]
        self.inside_layer = 0
        self.result = AnalyticCount()

    def add(self, operator: str, macs: int, module: str | None = None) -> None:
        self.result.records.append(OpRecord(self.stack[-1] if module is None else module, operator, int(macs)))

    def hooks(self, name: str, module: nn.Module) -> Iterator[Any]:
        operator = operator_name(module)
        if operator is not None:
            self.result.module_operator[name] = operator

        def enter(mod: nn.Module, args: tuple) -> None:
            self.stack.append(name)
            self.inside_layer += operator is not None

        def leave(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            self.stack.pop()
            if operator is None:
                return
            self.inside_layer -= 1
            inputs, out = _first_tensor((args, kwargs)), _first_tensor(output)
            if operator != "free" and inputs is not None and out is not None:
                self.add(operator, module_macs(mod, inputs, out), name)

        yield module.register_forward_pre_hook(enter)
        yield module.register_forward_hook(leave, with_kwargs=True)


def analytic_count(model: nn.Module, *inputs: Any) -> AnalyticCount:
    """Run ``model(*inputs)`` once (no grad, eval mode, then the mode restored) and count every op.

    Works on any device, ``meta`` included; the model is left as it was (hooks removed).
    """
    tracker = _Tracker()
    handles = [h for name, m in model.named_modules() if name for h in tracker.hooks(name, m)]
    training = model.training
    try:
        model.eval()
        with torch.no_grad(), _FunctionalCounter(tracker):
            model(*inputs)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return tracker.result
