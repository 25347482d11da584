"""The result-row schema (DESIGN.md), the environment fingerprint, and saving / loading rows.

Every command emits flat rows with all of ``ROW_FIELDS``; what it did not measure stays None.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import platform
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from segbench import __version__
from segbench.errors import UserError

ROW_FIELDS: tuple[str, ...] = (
    "model", "kind", "family", "plugin", "device", "device_name", "precision", "channels_last",
    "compiled", "cuda_graph", "batch_size", "height", "width", "num_classes", "params",
    "params_trainable", "macs_fvcore", "macs_thop", "macs_analytic", "macs_other", "flops",
    "latency_ms_median", "latency_ms_mean", "latency_ms_p90", "latency_ms_min", "latency_ms_std",
    "iters", "throughput_ips", "host_ms_median", "threads", "output_max_abs_diff",
    "output_argmax_agreement", "compile_seconds", "peak_mem_mb", "trace_file", "dataset",
    "train_steps", "train_seconds", "miou", "pixel_acc", "iou_per_class",
    "block", "kernel_size", "in_channels", "out_channels", "stride", "mac_ratio", "mac_ratio_theory",
    "latency_speedup",
    "error", "segbench_version", "torch_version", "cuda_version", "timestamp", "git_sha", "hostname",
)  # fmt: skip
JSON_ONLY_FIELDS = frozenset({"iou_per_class"})
MACS_NOTE = "MACs are multiply-accumulates; FLOPs = 2 x MACs"


def make_row(**fields: Any) -> dict[str, Any]:
    """A full row: the given fields, the environment fingerprint, and None for the rest."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise KeyError(f"not result-row fields: {', '.join(sorted(unknown))}")
    row = dict.fromkeys(ROW_FIELDS)
    row.update(fingerprint())
    row.update(fields)
    return row


def spec_fields(spec: Any, **fields: Any) -> dict[str, Any]:
    """Row fields that identify a spec (model, kind, family, plugin) plus the given ones."""
    return {"model": spec.name, "kind": spec.kind, "family": spec.family, "plugin": spec.plugin, **fields}


@functools.cache
def fingerprint() -> dict[str, Any]:
    """Versions, host and commit: computed once per process, so one run's rows share a timestamp."""
    import torch

    return {
        "segbench_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "hostname": socket.gethostname(),
    }


def git_sha() -> str | None:
    """The commit of the segbench checkout in use, when it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_name() -> str:
    """The CPU model as the OS names it (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def save_rows(rows: list[dict[str, Any]], out_dir: str | Path, command: str) -> list[Path]:
    """Write ``<command>-<timestamp>.json`` and ``.csv`` (and ``.md``) under ``out_dir``."""
    from segbench.report import to_markdown

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    stem = out / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".csv"), stem.with_suffix(".md")]
    paths[0].write_text(to_json(rows) + "\n")
    paths[1].write_text(to_csv(rows))
    paths[2].write_text(to_markdown(rows) + "\n")
    return paths


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of every field but the JSON-only ones (per-class lists)."""
    buffer = io.StringIO()
    fields = [f for f in _columns(rows) if f not in JSON_ONLY_FIELDS]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(_plain(rows))
    return buffer.getvalue()


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read rows back from JSON or CSV result files (CSV values are typed back to numbers)."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"result file not found: {path}")
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                    raise ValueError("expected a JSON array of result rows")
                rows.extend(data)
            elif path.suffix == ".csv":
                with path.open(newline="") as fh:
                    rows.extend({k: _parse_cell(v) for k, v in r.items()} for r in csv.DictReader(fh))
            else:
                raise ValueError("accepted: .json or .csv result files")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read result file {path}: {exc}") from None
    return [{**dict.fromkeys(ROW_FIELDS), **r} for r in rows]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = [k for r in rows for k in r if k not in ROW_FIELDS]
    return list(ROW_FIELDS) + list(dict.fromkeys(extra))


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def to_json(rows: list[dict[str, Any]]) -> str:
    """Strict JSON (NaN becomes null) so any JSON parser reads the output."""
    return json.dumps(_plain(rows), indent=1, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
