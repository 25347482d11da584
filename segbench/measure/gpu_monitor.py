"""What decides a GPU number besides the code: SM and memory clocks, power, temperature, throttle
reasons, other processes on the GPU, and the energy a call costs, read through NVML (the optional
``nvidia-ml-py`` package, ``pip install 'segbench[gpu]'``).

Without the package, without a driver that answers, or off CUDA there is no monitor and every
field it would fill is None. The NVML module is a parameter of `GpuMonitor`, so the field logic is
testable with a stand-in on a machine without a GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: NVML's clock-event (throttle) reason bits (``nvmlClocksEventReason*``, formerly ``...ThrottleReason*``).
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: The reasons that mean the GPU ran slower than it could (the others are settings or idleness).
THROTTLING = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
#: How long the energy loop runs: NVML's energy counter advances in steps of tens of milliseconds.
ENERGY_SECONDS = 1.0


@dataclass(frozen=True)
class GpuState:
    """One NVML reading of a GPU (None: NVML could not say)."""

    sm_mhz: int | None
    mem_mhz: int | None
    power_w: float | None
    temp_c: int | None
    reasons: tuple[str, ...]
    other_processes: int | None


class GpuMonitor:
    """Readings of one GPU through ``nvml`` (the ``pynvml`` module of nvidia-ml-py, or a stand-in).

    ``idle_w`` is the power drawn when the monitor was opened, before this process measured
    anything on the GPU: what energy per image subtracts.
    """

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self.idle_w = self._read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1e3)

    def _read(self, get: Callable[[], Any]) -> Any:
        try:
            return get()
        except self.nvml.NVMLError:  # a field this GPU or driver does not report
            return None

    def state(self) -> GpuState:
        nvml, handle = self.nvml, self.handle
        mask = self._read(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
        processes = self._read(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        return GpuState(
            sm_mhz=self._read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            mem_mhz=self._read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            power_w=self._read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1e3),
            temp_c=self._read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            reasons=() if mask is None else tuple(name for bit, name in REASONS.items() if mask & bit),
            other_processes=None if processes is None else sum(p.pid != os.getpid() for p in processes),
        )

    def energy_j_per_image(self, call: Callable[[], Any], device: torch.device, batch_size: int) -> float | None:
        """Joules per image of ``call`` run back to back for `ENERGY_SECONDS`, the idle power's share
        subtracted; None without an energy counter (before Volta) or an idle reading."""
        read = lambda: self._read(lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))  # noqa: E731
        synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda _: None
        synchronize(device)
        start_mj, start = read(), time.perf_counter()
        if start_mj is None or self.idle_w is None:
            return None
        calls = 0
        while calls == 0 or time.perf_counter() - start < ENERGY_SECONDS:
            call()
            synchronize(device)
            calls += 1
        seconds, end_mj = time.perf_counter() - start, read()
        if end_mj is None:
            return None
        return ((end_mj - start_mj) / 1e3 - self.idle_w * seconds) / (calls * batch_size)


_MONITORS: dict[str, GpuMonitor | None] = {}


def monitor(device: torch.device) -> GpuMonitor | None:
    """The process's monitor of the GPU ``device`` is (None off CUDA, without nvidia-ml-py or a driver)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    key = str(getattr(props, "uuid", index))
    if key not in _MONITORS:
        _MONITORS[key] = _open(props, index)
    return _MONITORS[key]


def _open(props: Any, index: int) -> GpuMonitor | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        if all(
            hasattr(props, f"pci_{n}_id") for n in ("domain", "bus", "device")
        ):  # NVML numbers GPUs without CUDA_VISIBLE_DEVICES: find it by PCI address
            address = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(address.encode())
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return GpuMonitor(pynvml, handle)
    except Exception:  # no package, no driver library, an address NVML does not know: no record
        return None
