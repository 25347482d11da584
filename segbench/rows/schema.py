"""The result-row schema (docs/architecture.md): flat, snake_case fields, the same for every command.

Every runner yields rows made by `make_row`: all of ``ROW_FIELDS``, with None for what the command
did not measure, plus the environment fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from segbench.rows.row import RowFields

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from segbench.rows.row import Row

#: The version of the row schema, in every row (``schema_version``). Raise it when a field is renamed,
#: removed or changes meaning, and teach ``rows.files.load_rows`` to migrate the previous version.
#: 1: the rows of segbench before the field existed; 2: adds ``schema_version``, ``timing_protocol`` and
#: the third wave's fields (layer profiles, load scenarios, history, end-to-end, GPU state, and timing
#: across processes).
SCHEMA_VERSION = 2
#: Fields added to the current version after rows of it were written: absent, they read as None
#: (``settings``: the options a run was measured with, which ``--resume`` checks).
LATE_FIELDS = ("settings",)

#: What a ``kind = "layer"`` row of ``segbench profile`` holds (every one of them filled), the
#: ceilings it was set against last.
LAYER_FIELDS: tuple[str, ...] = (
    "layer",
    "op",
    "input_shape",
    "output_shape",
    "layer_ms",
    "layer_share",
    "bytes",
    "intensity",
    "achieved_gmacs",
    "achieved_gbs",
    "roofline_ms",
    "efficiency",
    "bound",
    "ceiling",
    "peak_gmacs",
    "bandwidth_gbs_l2",
    "bandwidth_gbs_llc",
    "bandwidth_gbs_dram",
)
#: Extra fields of breakdown rows (``segbench flops --by operator|module``): what the row is a part of.
BREAKDOWN_FIELDS = ("operator", "module", "share")
_TYPES = get_type_hints(RowFields)
#: Every field of a result row, in column order: `segbench.rows.row.RowFields` declares them with their types.
ROW_FIELDS: tuple[str, ...] = tuple(field for field in _TYPES if field not in BREAKDOWN_FIELDS)
#: Fields that hold text: never read back as numbers, whatever they look like.
TEXT_FIELDS = frozenset(field for field in ROW_FIELDS if str in get_args(_TYPES[field]))
#: Lists and mappings: kept in JSON, left out of CSV and tables.
JSON_ONLY_FIELDS = frozenset(
    field for field in ROW_FIELDS if any(get_origin(kind) in (list, dict) for kind in get_args(_TYPES[field]))
)
#: What was measured: the network, its block geometry and its input. Equal for the same block or
#: model at the same size in the rows of every command (a test checks latency, blocks, flops, run).
IDENTITY_FIELDS: tuple[str, ...] = (
    "model",
    "kind",
    "block",
    "kernel_size",
    "in_channels",
    "out_channels",
    "stride",
    "batch_size",
    "height",
    "width",
    "num_classes",
)
#: How it was run: the device type, the runtime and the deployment variant.
VARIANT_FIELDS: tuple[str, ...] = (
    "device",
    "runtime",
    "precision",
    "channels_last",
    "compiled",
    "cuda_graph",
    "bn_folded",
)
BLOCK_GEOMETRY = ("kernel_size", "in_channels", "out_channels", "stride")
MACS_NOTE = "MACs are multiply-accumulates; FLOPs = 2 x MACs"
#: The meaning of the block-pair columns, on the dsconv row of each standard/dsconv pair.
RATIO_NOTE = (
    "on each dsconv row: mac_ratio = dsconv / standard macs_analytic, mac_ratio_theory = 1/N + 1/K^2, "
    "latency_speedup = median of standard / dsconv per-call ratios, the two timed alternately (95% interval "
    "in latency_speedup_ci_low/high)"
)


def make_row(**fields: Unpack[RowFields]) -> Row:
    """A full row: the given fields, the environment fingerprint, and None for the rest.

    Breakdown rows also keep their ``BREAKDOWN_FIELDS``; any other unknown name is a bug (KeyError).
    """
    from segbench.rows.environment import fingerprint

    unknown = set(fields) - set(ROW_FIELDS) - set(BREAKDOWN_FIELDS)
    if unknown:
        raise KeyError(f"not result-row fields: {', '.join(sorted(unknown))}")
    row = dict.fromkeys(ROW_FIELDS)
    row.update(fingerprint(), schema_version=SCHEMA_VERSION)
    row.update(fields)
    return row


def spec_fields(spec: Any, options: Mapping[str, Any] | None = None, **fields: Unpack[RowFields]) -> Row:
    """Row fields that identify a spec (model, kind, family, plugin), plus the given ones.

    A block also gets ``block`` (its name without the ``block_`` prefix: ``standard``, ``dsconv``)
    and its geometry from ``options`` over its defaults, so every command names a block the same way.
    """
    from segbench.rows.environment import plugin_version

    identity = {
        "model": spec.name,
        "kind": spec.kind,
        "family": spec.family,
        "plugin": spec.plugin,
        "plugin_version": plugin_version(spec.plugin),
    }
    if spec.kind == "block":
        geometry = spec.options(**(options or {}))
        identity["block"] = spec.name.removeprefix("block_")
        identity.update({key: geometry.get(key) for key in BLOCK_GEOMETRY})
    return {**identity, **fields}


def theory_ratio(kernel_size: int, out_channels: int) -> Fraction:
    """Depthwise-separable / standard conv MACs (and weights): 1/N + 1/K^2, exactly (MobileNet 3.1)."""
    return Fraction(1, out_channels) + Fraction(1, kernel_size**2)


def pair_ratios(standard: Mapping[str, Any], dsconv: Mapping[str, Any]) -> dict[str, Any]:
    """The ratio columns of a standard/dsconv pair of rows (see ``RATIO_NOTE``).

    The dsconv row's own ``latency_speedup`` (the two blocks timed alternately) is kept with its
    interval; rows timed apart (``segbench latency`` of each block) get the ratio of their medians.
    """
    std_macs, ds_macs = standard.get("macs_analytic"), dsconv.get("macs_analytic")
    std_ms, ds_ms = standard.get("latency_ms_median"), dsconv.get("latency_ms_median")
    paired = dsconv.get("latency_speedup") is not None
    return {
        "mac_ratio": float(Fraction(ds_macs, std_macs)) if std_macs and ds_macs else None,
        "mac_ratio_theory": float(theory_ratio(dsconv["kernel_size"], dsconv["out_channels"])),
        "latency_speedup": dsconv["latency_speedup"] if paired else std_ms / ds_ms if std_ms and ds_ms else None,
        "latency_speedup_ci_low": dsconv.get("latency_speedup_ci_low") if paired else None,
        "latency_speedup_ci_high": dsconv.get("latency_speedup_ci_high") if paired else None,
    }


def mac_footnotes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per reason the MAC counters differ, over all rows, naming every operator concerned.

    Each counted row holds ``mac_notes``: footnote template -> the operators it concerns.
    """
    merged: dict[str, set[str]] = {}
    for row in rows:
        for template, names in (row.get("mac_notes") or {}).items():
            merged.setdefault(template, set()).update(names)
    return [template.format(", ".join(sorted(names))) for template, names in merged.items()]
