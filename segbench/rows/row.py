"""The row types: `Row`, a result row as code passes it around, and `RowFields`, the fields by name.

A row is read and written with field names held in variables (tables, CSV, comparisons), so `Row` is a
plain dict. Where code names fields itself, when it builds a row (`segbench.rows.schema.make_row`,
`segbench.rows.schema.spec_fields`), the keywords are checked against `RowFields` by mypy, so a misspelt
field fails the type check instead of a run. `RowFields` is the one list of fields: the schema's
``ROW_FIELDS`` (its order), ``TEXT_FIELDS`` (``str``) and ``JSON_ONLY_FIELDS`` (lists, mappings) derive from it.
"""

from __future__ import annotations

from typing import Any, TypedDict

Row = dict[str, Any]


class RowFields(TypedDict, total=False):
    """Every row field in column order, breakdown fields last, with its type (None: not measured)."""

    model: str | None
    kind: str | None
    family: str | None
    plugin: str | None
    plugin_version: str | None
    device: str | None
    device_name: str | None
    runtime: str | None
    precision: str | None
    channels_last: bool | None
    compiled: bool | None
    compile_mode: str | None
    cuda_graph: bool | None
    bn_folded: bool | None
    tf32: bool | None
    tf32_matmul: bool | None
    batch_size: int | None
    height: int | None
    width: int | None
    num_classes: int | None
    params: int | None
    params_trainable: int | None
    macs_fvcore: float | None
    macs_thop: float | None
    macs_analytic: float | None
    macs_other: float | None
    flops: float | None
    latency_ms_median: float | None
    latency_ms_mean: float | None
    latency_ms_p90: float | None
    latency_ms_min: float | None
    latency_ms_std: float | None
    latency_ms_ci_low: float | None
    latency_ms_ci_high: float | None
    ci_target_met: bool | None
    timing_protocol: str | None
    iters: int | None
    throughput_ips: float | None
    host_ms_median: float | None
    threads: int | None
    output_max_abs_diff: float | None
    output_argmax_agreement: float | None
    compile_seconds: float | None
    peak_mem_mb: float | None
    weights_mb: float | None
    trace_file: str | None
    dataset: str | None
    init: str | None
    train_steps: int | None
    train_seconds: float | None
    train_budget_seconds: float | None
    train_conv_backend: str | None
    conv_probe_seconds: float | None
    deterministic: bool | None
    miou: float | None
    pixel_acc: float | None
    miou_delta: float | None
    protocol: str | None
    window: str | None
    scales: str | None
    flip: bool | None
    source_height: int | None
    source_width: int | None
    e2e_ms_median: float | None
    e2e_ms_ci_low: float | None
    e2e_ms_ci_high: float | None
    e2e_ms_p90: float | None
    preprocess_ms_median: float | None
    model_ms_median: float | None
    postprocess_ms_median: float | None
    iou_per_class: list[float | None] | None
    mac_notes: dict[str, list[str]] | None
    block: str | None
    kernel_size: int | None
    in_channels: int | None
    out_channels: int | None
    stride: int | None
    mac_ratio: float | None
    mac_ratio_theory: float | None
    latency_speedup: float | None
    latency_speedup_ci_low: float | None
    latency_speedup_ci_high: float | None
    latency_samples_ms: list[float] | None
    latency_speedup_samples: list[float] | None
    samples_per_process: list[int] | None
    processes: int | None
    between_process_share: float | None
    layer: str | None
    op: str | None
    input_shape: str | None
    output_shape: str | None
    layer_ms: float | None
    layer_share: float | None
    bytes: float | None
    intensity: float | None
    achieved_gmacs: float | None
    achieved_gbs: float | None
    roofline_ms: float | None
    efficiency: float | None
    bound: str | None
    ceiling: str | None
    peak_gmacs: float | None
    bandwidth_gbs_l2: float | None
    bandwidth_gbs_llc: float | None
    bandwidth_gbs_dram: float | None
    profile_coverage: float | None
    unattributed_ms: float | None
    roofline_efficiency: float | None
    speedup_roofline: float | None
    scenario: str | None
    streams: int | None
    fps: float | None
    jitter: float | None
    workers: int | None
    max_batch: int | None
    max_delay_ms: float | None
    qps: float | None
    duration_s: float | None
    miss_budget: float | None
    latency_bound_ms: float | None
    memory_limit_mb: float | None
    search: str | None
    offered_ips: float | None
    deadline_miss_rate: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    queue_ms_p99: float | None
    dropped: int | None
    run_id: str | None
    settings: str | None  # the options the run was measured with (what --resume must match)
    world_size: int | None
    rank: int | None
    cores: str | None
    cell: int | None
    gpu_sm_mhz_before: float | None
    gpu_sm_mhz_after: float | None
    gpu_mem_mhz_before: float | None
    gpu_mem_mhz_after: float | None
    gpu_power_w_before: float | None
    gpu_power_w_after: float | None
    gpu_temp_c_before: float | None
    gpu_temp_c_after: float | None
    gpu_throttle_reasons: str | None
    gpu_other_processes: int | None
    gpu_throttled: bool | None
    gpu_shared: bool | None
    energy_j_per_image: float | None
    error: str | None
    schema_version: int | None
    segbench_version: str | None
    torch_version: str | None
    cuda_version: str | None
    timestamp: str | None
    git_sha: str | None
    hostname: str | None
    project_git_sha: str | None
    project_dirty: bool | None
    cpu_flags: str | None
    # breakdown rows (segbench flops --by operator|module)
    operator: str | None
    module: str | None
    share: float | None
