"""Freed memory stays in the process while measuring on CPU: a large tensor is not page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segbench.measure.allocator import glibc

# Page faults of ten 64 MiB tensors, each filled and dropped, after ten such warm-up rounds (the heap
# may grow by a few blocks before freed ones line up for reuse), in a fresh interpreter.
FAULTS = """
import resource, sys, torch
if sys.argv[1] == "kept":
    from segbench.measure.allocator import keep_freed_memory
    assert keep_freed_memory()
for _ in range(10):
    torch.ones(16 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 64 * 2**20 // 4096  # what a 64 MiB block costs when it comes fresh from the kernel


def faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(glibc() is None, reason="the setting is glibc's")
def test_large_blocks_are_reused_instead_of_faulted_in_again() -> None:
    assert faults("default") >= 10 * PAGES * 0.9  # glibc: fresh pages for every block over its mmap threshold
    assert faults("kept") < PAGES * 0.1  # all ten served from memory the process already had


def test_measurement_settings_apply_it_on_cpu() -> None:
    import torch

    from segbench.measure.allocator import keep_freed_memory
    from segbench.measure.settings import measurement_settings

    keep_freed_memory.cache_clear()
    with measurement_settings(torch.device("cpu"), None):
        pass
    assert keep_freed_memory.cache_info().currsize == 1
    assert keep_freed_memory() is (glibc() is not None)
