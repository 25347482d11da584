"""The Python steps of benchmarks/gpu_acceptance.sh, one subcommand each; every one prints its
findings and exits 0 (pass), 1 (fail) or 77 (skipped: the last line says why).

    python benchmarks/gpu_checks.py env OUT_DIR         environment and an idle GPU
    python benchmarks/gpu_checks.py tests OUT_DIR [F..] the cuda-marked tests (all of tests/ by default);
                                                        a skip fails, unless marked optional_on_gpu
    python benchmarks/gpu_checks.py timer               segbench's event timer against back-to-back calls
    python benchmarks/gpu_checks.py capture             a failed capture leaves the process sane
    python benchmarks/gpu_checks.py latency FILE        the headline rows: no errors; targets reported
    python benchmarks/gpu_checks.py run FILE            segbench run rows: graph rows agree with their eager twins
    python benchmarks/gpu_checks.py ort                 skip (77) unless onnxruntime has its CUDA provider
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

SKIP = 77
#: nvidia-smi fields, newest names first where a driver renamed them; a field the driver lacks is "n/a".
SMI_FIELDS = (
    "name",
    "driver_version",
    "persistence_mode",
    "mig.mode.current",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "clocks_event_reasons.active|clocks_throttle_reasons.active",
    "memory.used",
    "memory.total",
)
#: Where the cuda-marked tests are (all of tests/: a GPU test anywhere runs, and must not skip).
CUDA_TEST_FILES = ("tests",)
#: Targets of the torch runtime on one H100/H200, Fast-SCNN 1024x2048, 19 classes (issue 23): reported, not gated.
TARGET_BS1_MS, TARGET_BS8_IPS = 1.25, 2100.0


def _smi(field: str) -> str:
    for name in field.split("|"):
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={name}", "--format=csv,noheader"], capture_output=True, text=True
        )
        if done.returncode == 0:
            return done.stdout.strip().replace("\n", " | ")
    return "n/a"


def env(out: Path) -> int:
    import torch

    lines = [
        f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
        f"device {torch.cuda.get_device_name()} capability {torch.cuda.get_device_capability()}"
    ]
    busy = False
    if shutil.which("nvidia-smi"):
        lines += [f"{field.split('|')[0]}: {_smi(field)}" for field in SMI_FIELDS]
        apps = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        others = [line for line in apps.stdout.splitlines() if line.strip()] if apps.returncode == 0 else []
        busy = bool(others)
        lines.append(f"other compute processes: {others or 'none'}" if apps.returncode == 0 else "compute apps: n/a")
    else:
        lines.append("nvidia-smi: not found (the GPU's clocks and processes are not recorded)")
    try:
        import pynvml  # noqa: F401

        lines.append("NVML (nvidia-ml-py): installed: rows record clocks, power, throttling, energy")
    except ImportError:
        lines.append("NVML (nvidia-ml-py): not installed (pip install 'segbench[gpu]'): GPU condition fields are None")
    (out / "environment.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if busy:
        print("the GPU is not idle: another process computes on it")
    return 1 if busy else 0


def tests(out: Path, *files: str) -> int:
    """The cuda-marked tests of ``files`` (default `CUDA_TEST_FILES`): fail if any fails, or skips
    without the ``optional_on_gpu`` marker (the rule is the markers, never a skip message's words)."""
    import pytest

    class CudaSkips:
        """Collects cuda-marked tests that skipped although not marked optional_on_gpu."""

        def __init__(self) -> None:
            self.bad: list[str] = []

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):  # type: ignore[no-untyped-def]
            report = (yield).get_result()
            if report.skipped and item.get_closest_marker("cuda") and not item.get_closest_marker("optional_on_gpu"):
                self.bad.append(item.nodeid)

    guard = CudaSkips()
    args = ["-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda", "--junitxml", str(out / "cuda-tests.xml")]
    code = pytest.main([*args, *(files or CUDA_TEST_FILES)], plugins=[guard])
    if guard.bad:
        print("cuda tests that skipped on a GPU machine:", ", ".join(sorted(set(guard.bad))))
    return 1 if code != 0 or guard.bad else 0


def _fast_scnn_session(batch: int):  # type: ignore[no-untyped-def]
    import tempfile

    import torch

    from segbench.measure.session import Variant
    from segbench.models.fast_scnn import FastSCNN
    from segbench.runtimes import torch_runtime

    device = torch.device("cuda")
    model = FastSCNN(19).eval().to(device)
    x = torch.randn(batch, 3, 1024, 2048, device=device)
    variant = Variant("fp16", channels_last=True, cuda_graph=True)
    return torch_runtime.prepare(
        model, x, device=device, variant=variant, threads=1, workdir=Path(tempfile.mkdtemp())
    ), x


def timer() -> int:
    """segbench's median (CUDA events, synchronised per call) against an independent clock: wall time
    of 200 back-to-back calls / 200; within 0.95-1.10 (back to back overlaps launch with work)."""
    import torch

    from segbench.measure.settings import measurement_settings
    from segbench.measure.timer import Protocol, time_sessions

    device = torch.device("cuda")
    with measurement_settings(device, None), torch.inference_mode():
        session, _ = _fast_scnn_session(8)
        samples = time_sessions([session], device, Protocol(warmup=20, iters=100))
        median = sorted(samples.device_ms[0])[len(samples.device_ms[0]) // 2]
        for _ in range(20):
            session.call()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(200):
            session.call()
        torch.cuda.synchronize()
        back_to_back = (time.perf_counter() - start) * 1e3 / 200
    ratio = median / back_to_back
    print(f"event median {median:.3f} ms, back-to-back mean {back_to_back:.3f} ms, ratio {ratio:.3f} (0.95-1.10)")
    return 0 if 0.95 <= ratio <= 1.10 else 1


def capture() -> int:
    import tempfile

    import torch
    from torch import nn

    from segbench.measure.faults import VariantUnavailable
    from segbench.measure.session import Variant
    from segbench.runtimes import torch_runtime

    class Syncs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(x.sum().item())

    device = torch.device("cuda")
    x = torch.randn(1, 3, 8, 8, device=device)
    message = ""
    with torch.inference_mode():
        try:
            torch_runtime.prepare(
                Syncs(), x, device=device, variant=Variant(cuda_graph=True), threads=1, workdir=Path(tempfile.mkdtemp())
            )
        except VariantUnavailable as exc:
            message = str(exc)
        default = torch.cuda.current_stream() == torch.cuda.default_stream()
        after = (x + 1).sum().item()  # the process still computes
    print(f"message: {message!r}; default stream current: {default}; next op: {after:.3f}")
    return 0 if default and "not permitted when stream is capturing" in message else 1


def latency(path: Path) -> int:
    rows = json.loads(path.read_text())
    errors = 0
    for r in rows:
        tag = "+".join(
            [r["precision"], *(s for s, on in (("cl", r["channels_last"]), ("graph", r["cuda_graph"])) if on)]
        )
        print(
            f"bs{r['batch_size']} {tag:<16} {r['latency_ms_median'] or float('nan'):8.3f} ms "
            f"host {r['host_ms_median'] or float('nan'):7.3f} ms  {r['throughput_ips'] or 0:8.1f} img/s "
            f"peak {r['peak_mem_mb'] or 0:8.1f} MiB  agree {r['output_argmax_agreement']}  tf32 {r['tf32']}  "
            f"throttled {r.get('gpu_throttled')}  error {r['error']}"
        )
        errors += r["error"] is not None
    ok = [r for r in rows if r["error"] is None]
    bs1 = min((r["latency_ms_median"] for r in ok if r["batch_size"] == 1), default=None)
    bs8 = max((r["throughput_ips"] for r in ok if r["batch_size"] == 8), default=None)
    print(f"TARGET bs1 <= {TARGET_BS1_MS} ms (agreement on trained weights not checked here): best {bs1}")
    print(f"TARGET bs8 >= {TARGET_BS8_IPS} img/s: best {bs8}")
    return 1 if errors or not ok else 0


def run(path: Path) -> int:
    rows = [r for r in json.loads(path.read_text()) if r.get("latency_ms_median") is not None or r.get("error")]
    failed = [r["error"] for r in rows if r["error"]]
    eager = {r["precision"]: r for r in rows if not r["cuda_graph"]}
    bad = []
    for r in rows:
        print(
            f"{r['precision']}{'+graph' if r['cuda_graph'] else '':<7} miou {r['miou']} agree "
            f"{r['output_argmax_agreement']} deterministic {r['deterministic']} error {r['error']}"
        )
        twin = eager.get(r["precision"])
        if r["cuda_graph"] and twin and r["miou"] is not None and abs(r["miou"] - twin["miou"]) > 0.005:
            bad.append(f"{r['precision']}+graph miou {r['miou']} vs eager {twin['miou']}")
        agreement = r["output_argmax_agreement"]
        if agreement is not None and agreement < 0.9:  # N4 compared later rows with another image
            bad.append(f"{r['precision']}{'+graph' if r['cuda_graph'] else ''} agreement {agreement} < 0.9")
        if twin and agreement is not None and abs(agreement - (twin["output_argmax_agreement"] or 1.0)) > 0.01:
            bad.append(f"{r['precision']} agreement {agreement} vs eager {twin['output_argmax_agreement']}")
    print("\n".join(bad))
    return 1 if failed or bad or not rows else 0


def ort() -> int:
    try:
        import onnxruntime
    except ImportError:
        print("skipped: onnxruntime not installed (pip install 'segbench[onnx-gpu]')")
        return SKIP
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        print("skipped: onnxruntime has no CUDAExecutionProvider (replace onnxruntime by onnxruntime-gpu: docs/gpu.md)")
        return SKIP
    return 0


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "tests":
        return tests(Path(rest[0]), *rest[1:])
    steps = {"env": env, "latency": latency, "run": run}
    if command in steps:
        return steps[command](Path(rest[0]))
    return {"timer": timer, "capture": capture, "ort": ort}[command]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
