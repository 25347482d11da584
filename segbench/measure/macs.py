"""Parameters and MACs by three counters (analytic, fvcore, thop), reconciled with one footnote per cause.

``macs_analytic`` follows the convention of `segbench.measure.analytic` (convolutions, transposed
convolutions, linear / matmul); everything else that computes is in ``macs_other``. MACs are
multiply-accumulates; FLOPs = 2 x MACs; ``flops`` = 2 x ``macs_fvcore``.

- ``macs_fvcore`` is fvcore's count of the same ops (its ``conv``, ``linear``, ``addmm``, ``matmul``,
  ``bmm``, ``einsum`` handles), so it equals ``macs_analytic`` whenever fvcore traces the model
  correctly (asserted for every built-in by the tests). fvcore's default total also counts batch
  norm, upsampling and adaptive pooling with its own formulas; those appear in ``--by operator``.
- ``macs_thop`` is thop's total as thop reports it (conv on the output grid, BN, pooling, upsample
  modules; nothing functional).

Cheapest exact path: the analytic and thop counts need only shapes, so they run on a ``meta`` twin
of the model (no compute, no memory). fvcore needs a TorchScript trace, which cannot run on ``meta``
tensors, so it traces one real forward pass; `count_spec` builds that model with uninitialised
(zero-filled) weights to skip the weight initialisation. Counters' own prints, warnings and log
lines are swallowed; each cause of disagreement becomes one footnote.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from segbench.measure.analytic import PRIMARY, ROOT, AnalyticCount, analytic_count, operator_name
from segbench.measure.quiet import quiet

FVCORE_PRIMARY = frozenset({"conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum"})
# fvcore operator names -> segbench operator names (ops fvcore finds outside counted layers)
_FVCORE_OPERATOR = {
    "conv": "conv2d",
    "linear": "linear",
    "addmm": "linear",
    "matmul": "matmul",
    "mm": "matmul",
    "bmm": "matmul",
    "einsum": "matmul",
    "batch_norm": "batch_norm",
    "upsample_bilinear2d": "interpolate",
    "upsample_nearest2d": "interpolate",
    "adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "group_norm": "group_norm",
    "layer_norm": "layer_norm",
    "instance_norm": "instance_norm2d",
}
_FVCORE_HINTS = {
    "batch_norm": "batch_norm as 2 per element (scale and shift not folded)",
    "adaptive_avg_pool2d": "adaptive_avg_pool2d as 1 per input element (overlapping bins once)",
}
_THOP_HINTS = {
    "batch_norm": "BatchNorm as 4 per element (2, doubled for the affine)",
    "adaptive_avg_pool2d": "adaptive pooling as output elements x (input/output size + 1)",
    "interpolate": "nn.Upsample by its own per-mode costs",
}

# Footnote templates: "{}" receives the operators concerned, merged over all counted models.
FV_DIFFERS = "fvcore's count differs from the analytic one for {} (a tracing problem; see --by operator)"
FV_SKIPS = "fvcore skips {}: it has no formula for them (the analytic macs_other counts them)"
FV_EXTRA = "fvcore also counts {}; these are in its total but not in macs_fvcore (see --by operator)"
FV_OTHER_FORMULA = "fvcore's own formulas: {}"
THOP_TRANSPOSED = (
    "thop counts {} on the output grid (N*H_out*W_out*C_out*C_in/groups*K^2, about stride^2 x the "
    "analytic N*H_in*W_in*C_in*C_out/groups*K^2)"
)
THOP_DIFFERS = "thop's count differs from the analytic one for {}"
THOP_MISSES = "thop sees modules only and misses functional {} (e.g. F.interpolate, x + y)"
THOP_ZERO = "thop counts {} as 0"
THOP_OTHER_FORMULA = "thop's own formulas: {} (analytic: 1 per element, per window tap or bin read)"
THOP_NONPRIMARY = "macs_thop also includes {} (analytic: in macs_other, not in macs_analytic)"


# ---- fvcore -----------------------------------------------------------------------------------------


@dataclass
class FvcoreCount:
    """fvcore's counts per module (cumulative, as fvcore reports them) and the ops it skipped."""

    by_module_operator: dict[str, Counter[str]]
    skipped: Counter[str]

    @property
    def macs(self) -> int:
        """fvcore's conv/linear/matmul count: the ops of the analytic convention."""
        return self.primary("")

    @property
    def total(self) -> int:
        """fvcore's own total (also batch norm, upsampling, adaptive pooling)."""
        return int(sum(self.by_module_operator.get("", Counter()).values()))

    def primary(self, module: str) -> int:
        ops = self.by_module_operator.get(module, Counter())
        return int(sum(v for op, v in ops.items() if op in FVCORE_PRIMARY))

    def own(self, model: nn.Module) -> dict[str, Counter[str]]:
        """Per module, what fvcore counted in that module's own code (its children's counts removed)."""
        own = {name: Counter(ops) for name, ops in self.by_module_operator.items()}
        for name, _ in model.named_modules():
            if name and name in own:
                parent = name.rpartition(".")[0]
                if parent in own:
                    own[parent].subtract(self.by_module_operator[name])
        return own


def fvcore_count(model: nn.Module, *inputs: Any) -> FvcoreCount:
    """Trace ``model(*inputs)`` once with fvcore (real tensors: TorchScript cannot trace on meta)."""
    training = model.training
    try:
        model.eval()
        with quiet(), torch.no_grad():
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            by_module = {
                k: Counter({op: int(v) for op, v in ops.items()})
                for k, ops in analysis.by_module_and_operator().items()
            }
            skipped = Counter(analysis.unsupported_ops())
    finally:
        model.train(training)
    return FvcoreCount(by_module, skipped)


# ---- thop -------------------------------------------------------------------------------------------


@dataclass
class ThopCount:
    """thop's total and its count per leaf module (dotted names)."""

    total: int
    by_leaf: dict[str, int]


def thop_count(model: nn.Module, *inputs: Any) -> ThopCount:
    """Profile a deep copy with thop, which adds ``total_ops``/``total_params`` buffers to modules."""
    twin = copy.deepcopy(model)
    with quiet():
        import thop

        total, _, tree = thop.profile(twin, inputs=inputs, verbose=False, ret_layer_info=True)
    leaves: dict[str, int] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for name, (ops, _params, children) in node.items():
            path = f"{prefix}{name}"
            if children:
                walk(path + ".", children)
            else:
                leaves[path] = int(ops)

    walk("", tree)
    return ThopCount(int(total), leaves)


# ---- the three together -----------------------------------------------------------------------------


def meta_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on ``meta`` (no data is copied)."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        twin = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(twin, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else twin
    return copy.deepcopy(model, memo)


@dataclass
class MacCount:
    """Everything counted for one model on one input: result-row fields, breakdowns and footnotes."""

    params: int
    params_trainable: int
    analytic: AnalyticCount
    fvcore: FvcoreCount
    thop: ThopCount
    operator_params: Counter[str] = field(default_factory=Counter)
    module_params: Counter[str] = field(default_factory=Counter)
    fvcore_by_operator: Counter[str] = field(default_factory=Counter)
    thop_by_operator: Counter[str] = field(default_factory=Counter)
    functional: set[str] = field(default_factory=set)  # operators seen outside counted layers
    top_modules: list[str] = field(default_factory=list)  # the model's children, in order

    @property
    def fields(self) -> dict[str, Any]:
        """The result-row fields: params, params_trainable, macs_* and flops (= 2 x macs_fvcore)."""
        return {
            "params": self.params,
            "params_trainable": self.params_trainable,
            "macs_fvcore": self.fvcore.macs,
            "macs_thop": self.thop.total,
            "macs_analytic": self.analytic.macs,
            "macs_other": self.analytic.macs_other,
            "flops": 2 * self.fvcore.macs,
        }

    @property
    def total_counted(self) -> int:
        return self.analytic.macs + self.analytic.macs_other

    def operator_rows(self) -> list[dict[str, Any]]:
        """One entry per operator: ``operator``, params, macs_* of each counter, flops and ``share``."""
        analytic = self.analytic.by_operator()
        names = set(analytic) | set(self.fvcore_by_operator) | set(self.thop_by_operator)
        names |= {n for n, v in self.operator_params.items() if v}
        rows = []
        for name in sorted(names, key=lambda n: (n not in PRIMARY, -analytic.get(n, 0), n)):
            macs = analytic.get(name, 0)
            fv = self.fvcore_by_operator.get(name, 0)
            rows.append(
                {
                    "operator": name,
                    "params": self.operator_params.get(name, 0),
                    "macs_analytic": macs if name in PRIMARY else None,
                    "macs_other": None if name in PRIMARY else macs,
                    "macs_fvcore": fv,
                    "macs_thop": self.thop_by_operator.get(name, 0),
                    "flops": 2 * fv,
                    "share": macs / self.total_counted if self.total_counted else None,
                }
            )
        return rows

    def module_rows(self) -> list[dict[str, Any]]:
        """One entry per top-level module (in model order) plus ``(root)`` if its own forward counts."""
        primary = self.analytic.by_top_module(True)
        other = self.analytic.by_top_module(False)
        names = list(self.top_modules)
        if primary.get(ROOT) or other.get(ROOT) or self.module_params.get(ROOT):
            names.append(ROOT)
        own_root = self.fvcore_root_primary()
        rows = []
        for name in names:
            macs = primary.get(name, 0)
            fv = own_root if name == ROOT else self.fvcore.primary(name)
            thop = sum(v for leaf, v in self.thop.by_leaf.items() if leaf.split(".", 1)[0] == name)
            rows.append(
                {
                    "module": name,
                    "params": self.module_params.get(name, 0),
                    "macs_analytic": macs,
                    "macs_other": other.get(name, 0),
                    "macs_fvcore": fv,
                    "macs_thop": thop,
                    "flops": 2 * fv,
                    "share": (macs + other.get(name, 0)) / self.total_counted if self.total_counted else None,
                }
            )
        return rows

    def fvcore_root_primary(self) -> int:
        top = {name.split(".", 1)[0] for name in self.fvcore.by_module_operator if name}
        return self.fvcore.macs - sum(self.fvcore.primary(name) for name in top)

    def notes(self) -> dict[str, set[str]]:
        """Footnote template -> operators it concerns: one entry per cause of disagreement."""
        analytic = self.analytic.by_operator()
        notes: dict[str, set[str]] = {}

        def add(template: str, name: str) -> None:
            notes.setdefault(template, set()).add(name)

        for name in sorted(set(analytic) | set(self.fvcore_by_operator) | set(self.thop_by_operator)):
            a = analytic.get(name, 0)
            fv = self.fvcore_by_operator.get(name, 0)
            th = self.thop_by_operator.get(name, 0)
            if name in PRIMARY:
                if fv != a:
                    add(FV_DIFFERS, name)
                if th != a:
                    add(THOP_TRANSPOSED if name.startswith("conv_transpose") else THOP_DIFFERS, name)
                continue
            if a and not fv:
                add(FV_SKIPS, name)
            elif fv:
                add(FV_EXTRA, name)
                if fv != a:
                    add(FV_OTHER_FORMULA, _FVCORE_HINTS.get(name, name))
            if a and not th:
                add(THOP_MISSES if name in self.functional else THOP_ZERO, name)
            elif th:
                add(THOP_NONPRIMARY, name)
                if th != a:
                    add(THOP_OTHER_FORMULA, _THOP_HINTS.get(name, name))
        return notes


def count_model(model: nn.Module, example: torch.Tensor) -> MacCount:
    """Count ``model(example)`` with all three counters; the model is left unchanged.

    The analytic and thop counts run on a meta twin (shapes only) when the model supports it and
    fall back to a real forward pass otherwise; fvcore traces one real forward pass.
    """
    try:
        twin, shape_example = meta_twin(model), example.to("meta")
        analytic, thop = analytic_count(twin, shape_example), thop_count(twin, shape_example)
    except Exception:  # an op without a meta kernel, or a copy that fails: count on real tensors
        twin, analytic, thop = model, analytic_count(model, example), thop_count(model, example)
    return _assemble(model, twin, analytic, fvcore_count(model, example), thop)


def count_spec(
    spec: Any,
    size: tuple[int, int] | None = None,
    num_classes: int | None = None,
    batch_size: int = 1,
    **options: Any,
) -> MacCount:
    """Build ``spec`` on ``meta`` (instant) and count it at ``size`` (default: the spec's own).

    fvcore's real forward pass runs on a CPU copy with zero-filled weights (no initialisation cost);
    a model that cannot be built on meta is built normally and counted by `count_model`.
    """
    height, width = size or spec.default_size
    shape = (batch_size, spec.input_channels(**options), height, width)
    try:
        with torch.device("meta"):
            twin = spec.build(num_classes, **options)
        shape_example = torch.zeros(shape, device="meta")
        analytic, thop = analytic_count(twin, shape_example), thop_count(twin, shape_example)
    except Exception:
        return count_model(spec.build(num_classes, **options), torch.zeros(shape))
    model = copy.deepcopy(twin).to_empty(device="cpu")
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            t.zero_()
    return _assemble(model, twin, analytic, fvcore_count(model, torch.zeros(shape)), thop)


def _assemble(model: nn.Module, twin: nn.Module, analytic: AnalyticCount, fv: FvcoreCount, thop: ThopCount) -> MacCount:
    count = MacCount(
        params=sum(p.numel() for p in model.parameters()),
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        analytic=analytic,
        fvcore=fv,
        thop=thop,
    )
    layers = analytic.module_operator
    for name, module in twin.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        count.module_params[name.split(".", 1)[0] or ROOT] += own
        count.operator_params[layers.get(name) or operator_name(module) or "(other layers)"] += own
    for name, ops in fv.own(model).items():
        for op, value in ops.items():
            if value:
                count.fvcore_by_operator[layers.get(name) or _FVCORE_OPERATOR.get(op, op)] += value
    types = dict(twin.named_modules())
    for leaf, value in thop.by_leaf.items():
        module = types.get(leaf)
        name = layers.get(leaf) or (operator_name(module) if module is not None else None) or leaf
        count.thop_by_operator[name] += value
    count.top_modules = [name for name, _ in twin.named_children()]
    count.functional = {r.operator for r in analytic.records if r.module not in layers}
    count.operator_params.pop("free", None)
    count.fvcore_by_operator.pop("free", None)
    count.thop_by_operator.pop("free", None)
    return count
