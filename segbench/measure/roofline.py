"""Roofline arithmetic for one layer: its compulsory bytes, intensity, floor time and bound.

- ``bytes``: the compulsory traffic at the precision: every input, every output and the weights
  (parameters and buffers) read or written once. An in-place op still reads and writes its tensor.
- ``intensity`` = MACs / bytes (MACs: the analytic count, primary and other ops together).
- ``roofline_ms`` = max(MACs / compute ceiling, bytes / the bandwidth of the level the working set
  (= ``bytes``) fits in): no schedule of this layer can beat it on this machine.
- ``efficiency`` = roofline_ms / layer_ms; ``bound`` is ``compute`` or ``memory`` (which term of the
  max is larger), or ``overhead`` where the layer reaches less than `OVERHEAD_EFFICIENCY` of its roof
  (dispatch, threading and Python costs dominate, not the hardware).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from segbench.measure.ceilings import Ceilings

if TYPE_CHECKING:
    from segbench.measure.layers import Layer

#: Below this efficiency a layer is bound by neither roof but by overhead.
OVERHEAD_EFFICIENCY = 0.1
#: Ops a runtime fuses into the op that produced their input (ONNX Runtime, OpenVINO, oneDNN post-ops).
FUSABLE_OPS = frozenset({"bn", "relu", "relu6", "add", "sigmoid", "hardswish", "silu", "gelu", "leaky_relu"})


def roofline_fields(macs: int, nbytes: int, layer_ms: float | None, ceilings: Ceilings) -> dict[str, Any]:
    """The row's roofline fields for a layer of ``macs`` MACs and ``nbytes`` compulsory bytes."""
    level, gbs = ceilings.memory_roof(nbytes)
    compute_ms = macs / (ceilings.peak_gmacs * 1e6)
    memory_ms = nbytes / (gbs * 1e6)
    roof = max(compute_ms, memory_ms)
    fields: dict[str, Any] = {
        "bytes": nbytes,
        "intensity": macs / nbytes if nbytes else None,
        "roofline_ms": roof,
        "ceiling": "compute" if compute_ms >= memory_ms else f"bandwidth_{level}",
        "bound": "compute" if compute_ms >= memory_ms else "memory",
        "efficiency": None,
        "achieved_gmacs": None,
        "achieved_gbs": None,
    }
    if layer_ms:
        fields["efficiency"] = roof / layer_ms
        fields["achieved_gmacs"] = macs / (layer_ms * 1e6)
        fields["achieved_gbs"] = nbytes / (layer_ms * 1e6)
        if fields["efficiency"] < OVERHEAD_EFFICIENCY:
            fields["bound"] = "overhead"
    return fields


def network_floor(layers: Sequence[Layer], ceilings: Ceilings, itemsize: int) -> float:
    """The network's floor (ms): the sum of the layers' roofs with each fusable layer (`FUSABLE_OPS`)
    that reads the output of the layer before it fused into that layer, as ONNX Runtime and OpenVINO
    run it: the fused group reads its inputs and weights once and writes its last output once. One
    floor for every runtime: none can beat it by fusing more of what this counts."""
    groups: list[list[int]] = []  # [macs, bytes, output bytes] per group
    previous_output = None
    for layer in layers:
        out = math.prod(int(d) for d in layer.output_shape.split("x")) * itemsize if layer.output_shape else 0
        inputs = layer.input_shape.split("+")
        if groups and layer.op in FUSABLE_OPS and previous_output in inputs:
            group = groups[-1]
            extra = layer.nbytes - group[2] - out  # its weights and other inputs
            group[0] += layer.total_macs
            group[1] += extra - group[2] + out  # the group's old output stays inside; the new one leaves
            group[2] = out
        else:
            groups.append([layer.total_macs, layer.nbytes, out])
        previous_output = layer.output_shape
    return sum(roofline_fields(macs, nbytes, None, ceilings)["roofline_ms"] for macs, nbytes, _ in groups)
