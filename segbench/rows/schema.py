"""The result-row schema (DESIGN.md): flat, snake_case fields, the same for every command.

Every runner yields rows made by `make_row`: all of ``ROW_FIELDS``, with None for what the command
did not measure, plus the environment fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

#: The version of the row schema, in every row (``schema_version``). Raise it when a field is renamed,
#: removed or changes meaning, and teach ``rows.files.load_rows`` to migrate the previous version.
#: 1: the rows before the field existed; 2: adds ``schema_version`` and ``timing_protocol``.
SCHEMA_VERSION = 2

ROW_FIELDS: tuple[str, ...] = (
    "model",
    "kind",
    "family",
    "plugin",
    "plugin_version",
    "device",
    "device_name",
    "runtime",
    "precision",
    "channels_last",
    "compiled",
    "cuda_graph",
    "bn_folded",
    "tf32",
    "batch_size",
    "height",
    "width",
    "num_classes",
    "params",
    "params_trainable",
    "macs_fvcore",
    "macs_thop",
    "macs_analytic",
    "macs_other",
    "flops",
    "latency_ms_median",
    "latency_ms_mean",
    "latency_ms_p90",
    "latency_ms_min",
    "latency_ms_std",
    "latency_ms_ci_low",
    "latency_ms_ci_high",
    "ci_target_met",
    "timing_protocol",
    "iters",
    "throughput_ips",
    "host_ms_median",
    "threads",
    "output_max_abs_diff",
    "output_argmax_agreement",
    "compile_seconds",
    "peak_mem_mb",
    "trace_file",
    "dataset",
    "init",
    "train_steps",
    "train_seconds",
    "train_budget_seconds",
    "train_conv_backend",
    "conv_probe_seconds",
    "deterministic",
    "miou",
    "pixel_acc",
    "iou_per_class",
    "miou_delta",
    "protocol",
    "window",
    "scales",
    "flip",
    "source_height",
    "source_width",
    "e2e_ms_median",
    "e2e_ms_ci_low",
    "e2e_ms_ci_high",
    "e2e_ms_p90",
    "preprocess_ms_median",
    "model_ms_median",
    "postprocess_ms_median",
    "mac_notes",
    "block",
    "kernel_size",
    "in_channels",
    "out_channels",
    "stride",
    "mac_ratio",
    "mac_ratio_theory",
    "latency_speedup",
    "latency_speedup_ci_low",
    "latency_speedup_ci_high",
    "latency_samples_ms",
    "run_id",
    "world_size",
    "rank",
    "cores",
    "cell",
    "error",
    "schema_version",
    "segbench_version",
    "torch_version",
    "cuda_version",
    "timestamp",
    "git_sha",
    "hostname",
    "project_git_sha",
    "project_dirty",
    "cpu_flags",
)
#: Fields that hold text: never read back as numbers, whatever they look like.
TEXT_FIELDS = frozenset(
    {
        "model",
        "kind",
        "family",
        "plugin",
        "device",
        "device_name",
        "precision",
        "trace_file",
        "dataset",
        "block",
        "runtime",
        "run_id",
        "init",
        "cores",
        "train_conv_backend",
        "protocol",
        "window",
        "scales",
        "error",
        "timing_protocol",
        "segbench_version",
        "torch_version",
        "cuda_version",
        "timestamp",
        "git_sha",
        "hostname",
        "plugin_version",
        "project_git_sha",
        "cpu_flags",
    }
)
#: Lists and mappings: kept in JSON, left out of CSV and tables.
JSON_ONLY_FIELDS = frozenset({"iou_per_class", "mac_notes", "latency_samples_ms"})
#: Extra fields of breakdown rows (``segbench flops --by operator|module``): what the row is a part of.
BREAKDOWN_FIELDS = ("operator", "module", "share")
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


def make_row(**fields: Any) -> dict[str, Any]:
    """A full row: the given fields, the schema version, the environment fingerprint, and None for the rest.

    Breakdown rows also keep their ``BREAKDOWN_FIELDS``; any other unknown name is a bug (KeyError).
    """
    from segbench.rows.environment import fingerprint

    unknown = set(fields) - set(ROW_FIELDS) - set(BREAKDOWN_FIELDS)
    if unknown:
        raise KeyError(f"not result-row fields: {', '.join(sorted(unknown))}")
    row = dict.fromkeys(ROW_FIELDS)
    row["schema_version"] = SCHEMA_VERSION
    row.update(fingerprint())
    row.update(fields)
    return row


def spec_fields(spec: Any, options: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
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
