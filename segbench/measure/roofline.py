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

from typing import Any

from segbench.measure.ceilings import Ceilings

#: Below this efficiency a layer is bound by neither roof but by overhead.
OVERHEAD_EFFICIENCY = 0.1


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
