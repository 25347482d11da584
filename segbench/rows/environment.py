"""Where a row was measured: versions, host, commit, device names, and the numerics flags."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench._version import __version__
from segbench.measure.allocator import glibc
from segbench.measure.settings import tf32_enabled

if TYPE_CHECKING:
    from segbench.rows.row import RowFields


@functools.cache
def fingerprint() -> RowFields:
    """Versions, host and commit: computed once per process, so one run's rows share a timestamp."""
    import torch

    return {
        "segbench_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "hostname": socket.gethostname(),
        **project_commit(),
        "cpu_flags": " ".join(cpu_flags()) or None,
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


def project_commit(cwd: Path | None = None) -> RowFields:
    """``project_git_sha`` and ``project_dirty`` of the git repository of the working directory (the
    user's project, which `git bisect` walks), or None for both outside one."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return {"project_git_sha": None, "project_dirty": None}
    if sha.returncode != 0 or status.returncode != 0:
        return {"project_git_sha": None, "project_dirty": None}
    return {"project_git_sha": sha.stdout.strip(), "project_dirty": bool(status.stdout.strip())}


#: The CPU features that change which kernels PyTorch, oneDNN and OpenVINO pick (as /proc/cpuinfo names them).
TIMING_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "sve2",
)


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The `TIMING_FLAGS` this CPU has (x86 ``flags``, Arm ``Features``); empty where /proc/cpuinfo is absent."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
    return tuple(flag for flag in TIMING_FLAGS if flag in found)


@functools.cache
def plugin_version(plugin: str) -> str | None:
    """The version of the distribution a plugin came from (``dist`` or ``dist:entry``; ``segbench`` for built-ins)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(plugin.split(":", 1)[0])
    except PackageNotFoundError:
        return None


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
    """``NVIDIA H100 ...`` for a CUDA device, the CPU model for ``cpu``."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def environment() -> dict[str, Any]:
    """Versions, devices and the numerics flags that change timings (TF32, cudnn.benchmark)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "segbench_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_memory_while_measuring": "freed memory kept (glibc: no mmap, no trim)" if glibc() else "C library default",
        "tf32_matmul": tf32_enabled("matmul"),
        "tf32_cudnn": tf32_enabled("conv"),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
