"""Where a forward pass spends its time, layer by layer, from the runtimes' own profilers.

A *layer* is one call of a counted leaf module (conv, BatchNorm, activation, pooling: the types
`segbench.measure.analytic` counts), named by its module path, or one tensor-valued functional call
made outside such a module (``F.interpolate``, ``x + y``, ``torch.cat``), named
``<enclosing module>:<op>`` (``#k`` for its k-th repeat there; ``(root)`` for the model's own forward).

- `describe` runs the model once and gives each layer's op, shapes, MACs (the analytic counter's own
  functions, so the numbers of ``segbench flops --by module``) and compulsory bytes
  (`segbench.measure.roofline`).
- `torch_times`: PyTorch's profiler with one ``record_function`` range per layer, opened and closed by
  the same hooks; a layer's time is its range (CPU) or the kernels inside it (CUDA), per call.
- `onnxruntime_times`: ONNX Runtime's session profiling; each node is mapped back to the original
  ONNX nodes it was made from (NCHWc nodes are named after the output they end at, fused
  activations walked back to their convolution), and through the exporter's ``name_scopes`` metadata
  to module paths and so to `describe`'s layers. Layout reorders map to no module: their own row.
- `openvino_times`: OpenVINO's per-layer performance counters, mapped the same way (its nodes keep
  the ONNX names; fused nodes name the last original node).
"""

from __future__ import annotations

import ast
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from segbench.measure.analytic import PRIMARY, ROOT, functional_table, module_macs, operator_name

PREFIX = "layer:"
#: The row of a runtime's layout reorders, which no module made.
REORDER = "(reorder)"
#: ONNX op types -> the op of the functional layer they come from.
ONNX_FUNCTIONAL = {"Resize": "interpolate", "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Concat": "cat"}
_FUSABLE = {"Relu", "Add", "Clip", "Sigmoid", "BatchNormalization", "Mul", "HardSigmoid", "LeakyRelu"}


@dataclass
class Layer:
    """One layer of a forward pass: what it is, its work, and its time per profiled call."""

    name: str
    op: str
    input_shape: str
    output_shape: str
    macs: int = 0  # primary ops (conv, linear): macs_analytic
    macs_other: int = 0  # normalisation, activations, elementwise, pooling, interpolation
    nbytes: int = 0
    times_ms: list[float] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return self.macs + self.macs_other

    @property
    def ms(self) -> float | None:
        """The median over calls."""
        return statistics.median(self.times_ms) if self.times_ms else None


def op_kind(operator: str, module: nn.Module | None = None) -> str:
    """The short op name of a row: conv, dwconv, pwconv, bn, relu, pool, interpolate, add, cat, ..."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            return "deconv"
        if module.groups > 1 and module.groups == module.in_channels:
            return "dwconv"
        return "pwconv" if math.prod(module.kernel_size) == 1 and module.groups == 1 else "conv"
    if operator.startswith("batch_norm"):
        return "bn"
    if "pool" in operator:
        return "pool"
    return operator.removesuffix("_")


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _nbytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


class _Layers(TorchFunctionMode):
    """Hooks on leaf layers + a function mode for functional calls: each layer's range and facts."""

    def __init__(self, model: nn.Module, profile: bool) -> None:
        super().__init__()
        self.model, self.profile = model, profile
        self.table = functional_table()
        self.layers: dict[str, Layer] = {}
        self.stack: list[str] = [""]
        self.inside = 0
        self.seen: dict[tuple[str, str], int] = defaultdict(int)
        self.ranges: list[Any] = []

    def hooks(self) -> Iterator[Any]:
        for name, module in self.model.named_modules():
            operator = operator_name(module) if name else None
            yield module.register_forward_pre_hook(self._enter(name, operator))
            yield module.register_forward_hook(self._leave(name, operator), with_kwargs=True)

    def _enter(self, name: str, operator: str | None) -> Callable[..., None]:
        def enter(module: nn.Module, args: tuple) -> None:
            self.stack.append(name)
            if operator is not None:  # dropout, identity ("free"): no layer, and nothing inside them either
                self.inside += 1
                if self.inside == 1:  # no functional layers inside a layer: the mode's dispatch costs
                    self.__exit__(None, None, None)  # microseconds a call, and would be timed with it
                if operator != "free":
                    self._open(name)

        return enter

    def _leave(self, name: str, operator: str | None) -> Callable[..., None]:
        def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            self.stack.pop()
            if operator is None:
                return
            if operator != "free":
                self._close()
                first, out = next(_tensors((args, kwargs)), None), next(_tensors(output), None)
                if first is not None and out is not None:
                    macs = module_macs(module, first, out)
                    weights = _nbytes(iter([*module.parameters(recurse=False), *module.buffers(recurse=False)]))
                    self._add(name, op_kind(operator, module), operator, macs, (args, kwargs), out, weights)
            self.inside -= 1
            if self.inside == 0:
                self.__enter__()

        return leave

    def forward(self, x: torch.Tensor) -> None:
        """``model(x)`` with the mode on outside layers (the hooks take it off inside them)."""
        self.__enter__()
        try:
            self.model(x)
        finally:
            if self.inside == 0:  # a layer that raised left the mode off
                self.__exit__(None, None, None)
            self.inside = 0

    def _open(self, name: str) -> None:
        if self.profile:
            scope = torch.autograd.profiler.record_function(PREFIX + name)
            scope.__enter__()
            self.ranges.append(scope)

    def _close(self) -> None:
        if self.profile:
            self.ranges.pop().__exit__(None, None, None)

    def _add(self, name: str, op: str, operator: str, macs: int, inputs: Any, out: torch.Tensor, weights: int) -> None:
        """Record a call of layer ``name``; a module called twice in one forward pass (a shared ReLU)
        is one layer doing the work of both calls."""
        ins = [t for t in _tensors(inputs) if t.is_floating_point()]
        call = Layer(
            name,
            op,
            "+".join(map(_shape, ins)),
            _shape(out),
            macs=macs if operator in PRIMARY else 0,
            macs_other=0 if operator in PRIMARY else macs,
            nbytes=_nbytes(iter(ins)) + out.numel() * out.element_size() + weights,
        )
        known = self.layers.setdefault(name, call)
        if known is not call:
            known.macs, known.macs_other = known.macs + call.macs, known.macs_other + call.macs_other
            known.nbytes += call.nbytes

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.inside or getattr(func, "__name__", "") in {"__get__", "__set__"}:
            return func(*args, **kwargs)
        operator = self.table.get(func, (getattr(func, "__name__", "op").strip("_"), None))[0]
        module = self.stack[-1]
        key = (module, operator)
        name = f"{module or ROOT}:{operator}" + (f"#{self.seen[key]}" if self.seen[key] else "")
        self._open(name)
        try:
            out = func(*args, **kwargs)
        finally:
            self._close()
        if not isinstance(out, torch.Tensor):
            return out  # a size, a shape: no layer (its profiler range names none and is ignored)
        self.seen[key] += 1
        count = self.table.get(func, (None, None))[1]
        macs = count(args, kwargs, out) if count is not None else 0
        self._add(name, op_kind(operator), operator, macs, (args, kwargs), out, 0)
        return out


def _instrumented(model: nn.Module, x: torch.Tensor, profile: bool) -> tuple[_Layers, Any]:
    """One forward pass with every layer recorded (and, with ``profile``, under PyTorch's profiler)."""
    from segbench.measure.profiling import quiet_profile

    recorder = _Layers(model, profile)
    handles = list(recorder.hooks())
    prof = None
    try:
        with torch.inference_mode():
            if not profile:
                recorder.forward(x)
            else:
                from torch.profiler import ProfilerActivity

                cuda = x.device.type == "cuda"
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                with quiet_profile(activities=activities) as prof:
                    recorder.forward(x)
                    if cuda:
                        torch.cuda.synchronize(x.device)
    finally:
        for handle in handles:
            handle.remove()
    return recorder, prof


def describe(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    """Every layer of ``model(x)`` in call order, with its op, shapes, MACs and bytes (no times)."""
    return list(_instrumented(model, x, profile=False)[0].layers.values())


def torch_times(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    """`describe`'s layers, each with its time in one call under PyTorch's profiler (the sum of its
    ranges: a module called twice is one layer)."""
    recorder, prof = _instrumented(model, x, profile=True)
    layers = recorder.layers
    totals: dict[str, float] = defaultdict(float)
    cuda = x.device.type == "cuda"
    for event in prof.events():
        name = event.name[len(PREFIX) :]
        if event.name.startswith(PREFIX) and name in layers:
            totals[name] += (event.device_time_total if cuda else event.time_range.elapsed_us()) / 1e3
    for name, ms in totals.items():
        layers[name].times_ms.append(ms)
    return list(layers.values())


# ---- ONNX Runtime and OpenVINO: nodes back to modules --------------------------------------------


class OnnxGraph:
    """The exported ONNX graph: each node's layers (by the exporter's metadata) and tensor sizes."""

    def __init__(self, path: Path, layers: list[Layer]) -> None:
        import onnx

        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        graph = model.graph
        self.nodes = list(graph.node)
        self.by_name = {n.name: n for n in self.nodes}
        self.order = {n.name: i for i, n in enumerate(self.nodes)}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {t.name for t in graph.initializer}
        self.sizes: dict[str, int] = {}
        for value in [*graph.value_info, *graph.input, *graph.output]:
            self.sizes[value.name] = _value_bytes(value.type.tensor_type)
        for tensor in graph.initializer:
            self.sizes[tensor.name] = math.prod(tensor.dims) * _itemsize(tensor.data_type)
        self.layer_of = _node_layers(self.nodes, layers)

    def find(self, name: str) -> Any | None:
        """The original node a runtime's node name stands for: its own name, the output it ends at, or
        the node an ORT fusion renamed (``node_select_3/GatherSliceToSplitFusion``)."""
        candidates = (name, name.removesuffix("_nchwc"), name.removeprefix("fused "), name.split("/")[0])
        for candidate in candidates:
            if candidate in self.by_name:
                return self.by_name[candidate]
            if candidate in self.producer:
                return self.producer[candidate]
        return None

    def group(self, end: Any, op_type: str | None) -> list[Any]:
        """The original nodes a fused node ending at ``end`` was made of: walk back through activations,
        adds and BN (the latest producer first) until the node of the fused op type."""
        group = [end]
        node = end
        while op_type and node.op_type != op_type and node.op_type in _FUSABLE and len(group) < 5:
            producers = [self.producer[i] for i in node.input if i in self.producer]
            if not producers:
                break
            node = max(producers, key=lambda n: self.order[n.name])
            group.append(node)
        if op_type and node.op_type != op_type:
            return [end]
        return group[::-1]

    def boundary_bytes(self, nodes: list[Any]) -> int:
        """Compulsory bytes of a set of nodes: what enters it (weights included) and what leaves it."""
        inside = {n.name for n in nodes}
        produced = {o for n in nodes for o in n.output}
        inputs = {i for n in nodes for i in n.input if i and i not in produced}
        outputs = {
            o for o in produced if o in self.outputs or any(c.name not in inside for c in self.consumers.get(o, []))
        }
        return sum(self.sizes.get(t, 0) for t in inputs | outputs)


def _itemsize(elem_type: int) -> int:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize if elem_type else 4


def _value_bytes(tensor_type: Any) -> int:
    dims = [d.dim_value for d in tensor_type.shape.dim]
    return math.prod(dims) * _itemsize(tensor_type.elem_type) if dims and all(dims) else 0


def _scopes(node: Any) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            return list(ast.literal_eval(prop.value))
    return []


def _node_layers(nodes: list[Any], layers: list[Layer]) -> dict[str, list[str]]:
    """ONNX node name -> the names of the layers it computes (empty: none known)."""
    names = [layer.name for layer in layers]
    index = {name: i for i, name in enumerate(names)}
    functional: dict[tuple[str, str], list[str]] = defaultdict(list)
    for layer in layers:
        if ":" in layer.name:
            module, op = layer.name.split(":", 1)
            functional[(module, op.split("#")[0])].append(layer.name)
    taken: dict[tuple[str, str], int] = defaultdict(int)
    found: dict[str, list[str]] = {}
    for node in nodes:
        scopes = _scopes(node)
        modules = [s for s in scopes[:-1] if s] or [""]
        leaf = next((m for m in reversed(modules) if m in index), None)
        if leaf is not None:
            found[node.name] = [leaf]
            previous = names[index[leaf] - 1] if index[leaf] else None
            folded = any(p.key.endswith("rule_name") and "FuseBatchNorm" in p.value for p in node.metadata_props)
            if folded and previous is not None and layers[index[previous]].op.endswith("conv"):
                found[node.name] = [previous, leaf]  # BatchNorm folded into the conv by the exporter
            continue
        key = (modules[-1] or ROOT, ONNX_FUNCTIONAL.get(node.op_type, ""))
        queue = functional.get(key, [])
        if taken[key] < len(queue):
            found[node.name] = [queue[taken[key]]]
            taken[key] += 1
        else:
            found[node.name] = []
    return found


@dataclass
class NodeTime:
    """One runtime node's time in one call, with the op type the runtime says it ran."""

    name: str
    op_type: str | None
    ms: float
    shapes_bytes: int = 0  # from the runtime's own record: for nodes that map to no ONNX node
    originals: tuple[str, ...] = ()  # the original node names, where the runtime lists them (OpenVINO)


def map_nodes(graph: OnnxGraph, runs: list[list[NodeTime]], layers: list[Layer]) -> list[Layer]:
    """Rows of a runtime's profile: its nodes grouped by the layers they compute, timed per call."""
    by_name = {layer.name: layer for layer in layers}
    rows: dict[tuple[str, ...], Layer] = {}
    nodes_of: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for run_index, run in enumerate(runs):
        for node_time in run:
            if node_time.originals:
                group = [g for g in map(graph.find, node_time.originals) if g is not None]
            else:
                end = graph.find(node_time.name)
                group = graph.group(end, node_time.op_type) if end is not None else []
            names = tuple(dict.fromkeys(n for g in group for n in graph.layer_of.get(g.name, [])))
            key = names or (_unmapped(node_time.op_type),)
            if key not in rows:
                rows[key] = _runtime_row(key, [by_name[n] for n in names])
            row = rows[key]
            if run_index == 0:
                nodes_of[key].extend(group)
                if not names:
                    row.nbytes += node_time.shapes_bytes
            if len(row.times_ms) <= run_index:
                row.times_ms.append(0.0)
            row.times_ms[run_index] += node_time.ms
    for key, nodes in nodes_of.items():
        if nodes and not is_unmapped(key[0]):
            rows[key].nbytes = graph.boundary_bytes(list({n.name: n for n in nodes}.values()))
    return list(rows.values())


def is_unmapped(name: str) -> bool:
    """Whether a runtime row stands for nodes no module made (reorders, nodes the runtime inserted)."""
    return name == REORDER or name.startswith("(unmapped ")


def _unmapped(op_type: str | None) -> str:
    """The row of nodes no module made: layout reorders, or ``(unmapped <op type>)``."""
    return REORDER if "reorder" in str(op_type).lower() else f"(unmapped {op_type})"


def _runtime_row(key: tuple[str, ...], parts: list[Layer]) -> Layer:
    if not parts:
        return Layer(key[0], "reorder" if key[0] == REORDER else key[0][1:-1].split()[-1].lower(), "", "")
    parents = {p.name.rsplit(".", 1)[0] for p in parts}
    if len(parts) > 1 and len(parents) == 1 and all(":" not in p.name for p in parts):
        name = parents.pop() + "." + "+".join(p.name.rsplit(".", 1)[-1] for p in parts)
    else:
        name = ", ".join(key)
    return Layer(
        name,
        "+".join(p.op for p in parts),
        parts[0].input_shape,
        parts[-1].output_shape,
        macs=sum(p.macs for p in parts),
        macs_other=sum(p.macs_other for p in parts),
    )


def onnxruntime_runs(profile_file: Path, warmup: int) -> list[list[NodeTime]]:
    """Per call after ``warmup`` calls, the kernel time of each node, from ORT's profile JSON."""
    events = json.loads(profile_file.read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs: list[list[NodeTime]] = [[] for _ in starts]
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        run = max((i for i, ts in enumerate(starts) if ts <= event["ts"]), default=0)
        args = event.get("args", {})
        shapes = [*args.get("input_type_shape", []), *args.get("output_type_shape", [])]
        nbytes = sum(math.prod(dims) * 4 for shape in shapes for dims in shape.values())
        runs[run].append(
            NodeTime(event["name"].removesuffix("_kernel_time"), args.get("op_name"), event["dur"] / 1e3, nbytes)
        )
    return runs[warmup:]


def openvino_runs(compiled: Any, runs: list[list[Any]]) -> list[list[NodeTime]]:
    """Per call, each executed node's real time from OpenVINO's performance counters, with the original
    ONNX nodes it fused (the runtime model's ``originalLayersNames``)."""
    originals: dict[str, tuple[str, ...]] = {}
    traffic: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        originals[op.get_friendly_name()] = tuple(n for n in names.split(",") if n)
        ports = [*op.inputs(), *op.outputs()]
        traffic[op.get_friendly_name()] = sum(
            math.prod(p.get_shape()) * p.get_element_type().size for p in ports if p.get_partial_shape().is_static
        )
    return [
        [
            NodeTime(
                p.node_name,
                p.node_type,
                p.real_time.total_seconds() * 1e3,
                traffic.get(p.node_name, 0),
                originals.get(p.node_name, ()),
            )
            for p in run
            if p.status.name == "EXECUTED" and p.real_time.total_seconds() > 0
        ]
        for run in runs
    ]
