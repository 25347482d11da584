"""CUDA paths that fail if the CUDA behaviour is wrong (they skip without a GPU; the one-command GPU
acceptance script, benchmarks/gpu_acceptance.sh, runs them). Two-GPU cases skip with fewer GPUs."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from segbench.measure.faults import OOM, VariantUnavailable
from segbench.measure.latency import measure_latency, measurement_settings
from segbench.registry import ModelSpec
from segbench.runners.defaults import Timing
from segbench.runners.latency import LatencyConfig, latency
from segbench.runtimes import torch_runtime
from segbench.runtimes.base import Variant

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


def tiny_net(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1)).eval()


class Matmul(nn.Module):
    """One large matmul: microseconds to launch, milliseconds on the GPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x


def test_latency_is_the_device_time_from_events_not_the_launch_time() -> None:
    x = torch.randn(1, 1, 4096, 4096)
    row = measure_latency(Matmul(), x, device="cuda", warmup=3, iters=10)
    # the host returns right after launching; only CUDA events see the GPU's milliseconds
    assert row["latency_ms_median"] > 5 * row["host_ms_median"]
    assert row["tf32"] == torch.backends.cudnn.allow_tf32 and row["peak_mem_mb"] > 0


def test_an_out_of_memory_cell_on_the_gpu_is_a_row_error_and_its_memory_is_released() -> None:
    free, _ = torch.cuda.mem_get_info()

    class Greedy(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] == 64:
                torch.empty(2 * free, dtype=torch.uint8, device=x.device)  # twice what the GPU has free
            return self.conv(x)

    spec = ModelSpec(
        name="greedy",
        family="t",
        builder=lambda num_classes: Greedy(num_classes),
        default_size=(16, 16),
        default_num_classes=3,
        description="t",
    )
    before = torch.cuda.memory_allocated()
    rows = list(
        latency([spec], LatencyConfig(device="cuda", sizes=[(64, 64), (32, 32)], timing=Timing(warmup=1, iters=2)))
    )
    assert [r["error"] for r in rows] == [OOM, None]
    assert torch.cuda.memory_allocated() - before < 64 * 2**20  # nothing of the failed cell is held


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_a_cuda_graph_replays_real_work_on_its_static_input(precision: str, tmp_path: Path) -> None:
    model = tiny_net().cuda()
    first, second = (
        torch.randn(2, 3, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(s)) for s in (1, 2)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The CUDA Graph is empty" would fail here
        with torch.inference_mode():
            session = torch_runtime.prepare(
                model,
                first,
                device=torch.device("cuda"),
                variant=Variant(precision, cuda_graph=True),
                threads=1,
                workdir=tmp_path,
            )
            out_first = session.predict(first).clone()
            out_second = session.predict(second).clone()
            eager_second = model.to(torch_runtime.DTYPES[precision])(second.to(torch_runtime.DTYPES[precision]))
    assert not torch.equal(out_first, out_second)  # the replay computed the new input
    torch.testing.assert_close(out_second.float(), eager_second.float(), atol=2e-2, rtol=2e-2)


def test_a_model_that_breaks_capture_reports_its_own_error(tmp_path: Path) -> None:
    class Syncs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(x.sum().item())  # a host sync: not capturable

    x = torch.randn(1, 3, 8, 8, device="cuda")
    with pytest.raises(VariantUnavailable, match="cannot capture a CUDA graph") as info, torch.inference_mode():
        torch_runtime.prepare(
            Syncs(), x, device=torch.device("cuda"), variant=Variant(cuda_graph=True), threads=1, workdir=tmp_path
        )
    assert "invalidated" not in str(info.value)
    # the pool is clean: the next capture works
    row = measure_latency(tiny_net(), x, device="cuda", cuda_graph=True, warmup=1, iters=3)
    assert row["error"] is None and row["latency_ms_median"] > 0


def test_fp32_rows_say_whether_tf32_was_used_and_the_reference_is_true_fp32() -> None:
    x = torch.randn(1, 3, 64, 64)
    saved = torch.backends.cudnn.allow_tf32
    try:
        for allowed in (True, False):
            torch.backends.cudnn.allow_tf32 = allowed
            row = measure_latency(tiny_net(), x, device="cuda", channels_last=True, warmup=1, iters=3)
            assert row["tf32"] is allowed
            assert row["output_max_abs_diff"] < (1e-2 if allowed else 1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@TWO_GPUS
def test_settings_restore_the_current_device_and_graphs_capture_on_the_second_gpu(tmp_path: Path) -> None:
    torch.cuda.set_device(0)
    with measurement_settings(torch.device("cuda:1"), None):
        assert torch.cuda.current_device() == 1
    assert torch.cuda.current_device() == 0
    row = measure_latency(tiny_net(), torch.randn(1, 3, 16, 16), device="cuda:0", cuda_graph=True, warmup=1, iters=2)
    assert row["error"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = measure_latency(
            tiny_net(), torch.randn(1, 3, 16, 16), device="cuda:1", cuda_graph=True, warmup=1, iters=3
        )
    assert row["error"] is None and row["output_argmax_agreement"] == 1.0 and row["latency_ms_median"] > 0.001
