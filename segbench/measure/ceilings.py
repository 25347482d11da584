"""This machine's roofs, measured: a compute ceiling and three memory-bandwidth ceilings (cache-aware
roofline, as Intel Advisor draws it), cached on disk per machine and thread count.

Method (the same every time; a few seconds at the default setting):

- Compute (``peak_gmacs``): the best MAC rate over dense ``torch.mm`` of a few GEMM shapes (square,
  and the tall-skinny shapes a 1x1 convolution lowers to) and a measured 3x3 and 1x1 convolution
  (oneDNN can beat the BLAS GEMM on a CPU: the ceiling must be the best this machine reaches, or a
  layer would run faster than its roof). Each kernel's time is the best of its calls (`Calibration`).
- Bandwidth: for a working set that fits in L2 (half the L2 of the cores in use), in the last-level
  cache (above all L2, within half the LLC) and in DRAM (four times the LLC), the best of a tensor
  copy (bytes read + bytes written) and a sum (bytes read), each the best of its calls.
  Bytes are counted as a layer's compulsory traffic is (`segbench.measure.roofline`), so the two compare.
- Cache sizes come from ``/sys/devices/system/cpu/cpu0/cache`` (L2 per core, LLC shared).

The cache file holds the machine fingerprint the caller gives (CPU, host, versions), the method's
version, the thread count, the precision, the date and the ceilings. A file that cannot be read, or
that was measured on another machine, by another method, for another thread count or precision, is
re-measured and replaced, never trusted.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CACHE_VARIABLE = "SEGBENCH_CACHE_DIR"
#: The calibration method's version: a cache written by another method is measured again.
METHOD = 2
#: (M, K, N) of the GEMM shapes tried; the tall-skinny ones are 1x1 convolutions at 64x64 pixels.
#: Each call takes about a millisecond or less: on a shared machine a short call is more often
#: timed whole, without a preemption, and the best call is what the roof needs.
GEMM_SHAPES = ((512, 512, 512), (4096, 64, 384), (4096, 384, 64), (4096, 128, 128))
#: (C_in, C_out, K, H, W) of the measured convolutions (dense 3x3, and a 1x1 expansion).
CONV_SHAPES = ((32, 32, 3, 64, 64), (64, 64, 3, 32, 64), (64, 384, 1, 32, 64))
FALLBACK_L2 = 1 << 20
FALLBACK_LLC = 32 << 20


@dataclass(frozen=True)
class Ceilings:
    """The roofs of one machine at one thread count and precision; GMAC/s and GB/s (1e9)."""

    peak_gmacs: float
    bandwidth_gbs_l2: float
    bandwidth_gbs_llc: float
    bandwidth_gbs_dram: float
    l2_bytes: int  # the L2 of the cores in use: a working set up to this fits in L2
    llc_bytes: int
    threads: int
    precision: str
    measured_at: str

    def fields(self) -> dict[str, float]:
        """The row fields every profiled row records."""
        return {
            "peak_gmacs": self.peak_gmacs,
            "bandwidth_gbs_l2": self.bandwidth_gbs_l2,
            "bandwidth_gbs_llc": self.bandwidth_gbs_llc,
            "bandwidth_gbs_dram": self.bandwidth_gbs_dram,
        }

    def memory_roof(self, working_set: int) -> tuple[str, float]:
        """(level, GB/s) of the memory ceiling a working set of ``working_set`` bytes runs from."""
        if working_set <= self.l2_bytes:
            return "l2", self.bandwidth_gbs_l2
        if working_set <= self.llc_bytes:
            return "llc", self.bandwidth_gbs_llc
        return "dram", self.bandwidth_gbs_dram


def cache_sizes(threads: int, root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> tuple[int, int]:
    """(L2 bytes of ``threads`` cores, last-level cache bytes), from sysfs (typical sizes if absent)."""
    levels: dict[int, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            levels[level] = _size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
    l2 = levels.get(2, FALLBACK_L2)
    llc = levels[max(levels)] if levels and max(levels) > 2 else FALLBACK_LLC
    return l2 * max(1, threads), llc


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


@dataclass(frozen=True)
class Calibration:
    """How long each kernel is timed: at least ``repeats`` calls spread over at least ``seconds``
    (on a shared machine a burst of load must not be the whole sample: the best call is the roof)."""

    repeats: int = 10
    seconds: float = 0.25


QUICK = Calibration(repeats=3, seconds=0.0)


def _best_seconds(fn: Callable[[], Any], calibration: Calibration) -> float:
    fn()  # warm: first-touch, kernel selection
    best, calls, begin = float("inf"), 0, time.perf_counter()
    while calls < calibration.repeats or time.perf_counter() - begin < calibration.seconds:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return best


def compute_ceiling(dtype: torch.dtype, calibration: Calibration) -> float:
    """GMAC/s: the best of the GEMM shapes and the convolutions (see the module docstring)."""
    rates = []
    for m, k, n in GEMM_SHAPES:
        a, b, out = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.empty(m, n, dtype=dtype)
        rates.append(m * k * n / _best_seconds(partial(torch.mm, a, b, out=out), calibration))
    for c_in, c_out, kernel, h, w in CONV_SHAPES:
        x, weight = torch.randn(1, c_in, h, w, dtype=dtype), torch.randn(c_out, c_in, kernel, kernel, dtype=dtype)
        macs = h * w * c_out * c_in * kernel * kernel
        with torch.inference_mode():
            rates.append(macs / _best_seconds(partial(F.conv2d, x, weight, padding=kernel // 2), calibration))
    return max(rates) / 1e9


def bandwidth(working_set: int, dtype: torch.dtype, calibration: Calibration) -> float:
    """GB/s over a working set of about ``working_set`` bytes: the best of a copy and a sum."""
    size = torch.empty((), dtype=dtype).element_size()
    numel = max(1, working_set // (2 * size))
    src, dst = torch.ones(numel, dtype=dtype), torch.empty(numel, dtype=dtype)
    copy = 2 * numel * size / _best_seconds(lambda: dst.copy_(src), calibration)
    total = torch.ones(2 * numel, dtype=dtype)
    read = 2 * numel * size / _best_seconds(lambda: total.sum(), calibration)
    return max(copy, read) / 1e9


def measure_ceilings(
    threads: int, precision: str, dtype: torch.dtype, calibration: Calibration = Calibration()
) -> Ceilings:
    """Measure every roof with ``threads`` torch threads (restored afterwards)."""
    l2, llc = cache_sizes(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        peak = compute_ceiling(dtype, calibration)
        l2_gbs = bandwidth(l2 // 2, dtype, calibration)
        llc_gbs = bandwidth(min(llc // 2, max(4 * l2, llc // 4)), dtype, calibration)
        dram_gbs = bandwidth(4 * llc, dtype, calibration)
    finally:
        torch.set_num_threads(previous)
    return Ceilings(
        peak_gmacs=peak,
        bandwidth_gbs_l2=max(l2_gbs, llc_gbs, dram_gbs),  # a nearer level is never slower than a farther one
        bandwidth_gbs_llc=max(llc_gbs, dram_gbs),
        bandwidth_gbs_dram=dram_gbs,
        l2_bytes=l2,
        llc_bytes=llc,
        threads=threads,
        precision=precision,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def cache_dir() -> Path:
    """``$SEGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/segbench`` (``~/.cache/segbench``)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segbench"


def cache_file(threads: int, precision: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / f"ceilings-cpu-{precision}-{threads}t.json"


def load_cached(path: Path, machine: Mapping[str, Any], threads: int, precision: str) -> Ceilings | None:
    """The cached ceilings at ``path`` if they were measured on ``machine`` at this setting, else None."""
    try:
        saved = json.loads(path.read_text())
        if saved["machine"] != dict(machine) or saved.get("method") != METHOD:
            return None
        ceilings = Ceilings(**saved["ceilings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ceilings if (ceilings.threads, ceilings.precision) == (threads, precision) else None


def ceilings_for(
    machine: Mapping[str, Any],
    threads: int,
    precision: str,
    dtype: torch.dtype,
    *,
    recalibrate: bool = False,
    calibration: Calibration = Calibration(),
    folder: Path | None = None,
) -> tuple[Ceilings, bool]:
    """(ceilings, whether they came from the cache): cached for ``machine``, else measured and saved."""
    path = cache_file(threads, precision, folder)
    cached = None if recalibrate else load_cached(path, machine, threads, precision)
    if cached is not None:
        return cached, True
    ceilings = measure_ceilings(threads, precision, dtype, calibration)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"machine": dict(machine), "method": METHOD, "ceilings": asdict(ceilings)}, indent=1) + "\n"
        )
    except OSError:
        pass  # a read-only home: measured again next time, nothing wrong with this run
    return ceilings, False


def cached_ceilings(machine: Mapping[str, Any], folder: Path | None = None) -> list[Ceilings]:
    """Every cached entry measured on ``machine`` (for ``segbench env``)."""
    found = []
    for path in sorted((folder or cache_dir()).glob("ceilings-cpu-*.json")):
        match = re.fullmatch(r"ceilings-cpu-(\w+)-(\d+)t\.json", path.name)
        entry = match and load_cached(path, machine, int(match[2]), match[1])
        if entry:
            found.append(entry)
    return found
