"""The K^2 study: standard KxK conv block vs depthwise-separable block, on paper and on the device.

For every kernel size K and channel count C (in = out = C = N, stride 1) the registered blocks
``block_standard`` (KxK conv + BN + ReLU) and ``block_dsconv`` (KxK depthwise + BN, 1x1 pointwise +
BN + ReLU) give one result row each (kind ``block``) with params, MACs and latency. The ``dsconv``
row of each pair carries the comparison (MobileNet, Howard et al. 2017, section 3.1):

- ``mac_ratio``: measured dsconv / standard ``macs_analytic`` (convolutions only);
- ``mac_ratio_theory``: 1/N + 1/K^2 (K*K*C*H*W + C*N*H*W over K*K*C*N*H*W); equal to mac_ratio;
- ``latency_speedup``: standard / dsconv median latency, the speed-up the device actually gives.

Latency comes from `segbench.measure.latency.measure_latency`, the code ``segbench latency`` uses.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Iterator

from segbench.errors import UserError
from segbench.results import make_row, spec_fields

BLOCKS = (("standard", "block_standard"), ("dsconv", "block_dsconv"))
RATIO_COLUMNS = ("mac_ratio", "mac_ratio_theory", "latency_speedup")


def check_kernel_sizes(kernel_sizes: list[int]) -> list[int]:
    """Odd K >= 1 only: the blocks pad (K - 1) / 2 to keep the size, which needs an odd kernel."""
    for k in kernel_sizes:
        if k < 1 or k % 2 == 0:
            raise UserError(f"bad kernel size {k}: accepted odd integers >= 1, e.g. 3,5,7")
    return kernel_sizes


def theory_ratio(kernel_size: int, out_channels: int) -> Fraction:
    """Depthwise-separable / standard conv MACs (and weights): 1/N + 1/K^2, exactly."""
    return Fraction(1, out_channels) + Fraction(1, kernel_size**2)


def block_options(kernel_size: int, channels: int) -> dict[str, int]:
    return {"kernel_size": kernel_size, "in_channels": channels, "out_channels": channels, "stride": 1}


def study_rows(
    kernel_sizes: list[int],
    channels: list[int],
    size: tuple[int, int] | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    warmup: int = 3,
    iters: int = 10,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the standard and the dsconv row of every (K, C) pair, K-major, as each is measured.

    A pair's failure (e.g. out of memory) is written into its rows' ``error``; the study goes on.
    """
    import torch

    from segbench.measure.latency import error_reason, measure_latency, release_memory
    from segbench.measure.macs import count_model
    from segbench.plugins import get_registry

    registry = get_registry()
    check_kernel_sizes(kernel_sizes)
    for k in kernel_sizes:
        for c in channels:
            pair = []
            for block, name in BLOCKS:
                spec = registry.model(name)
                height, width = size or spec.default_size
                options = block_options(k, c)
                fields = spec_fields(spec, block=block, device=device, batch_size=batch_size,
                                     height=height, width=width, **options)  # fmt: skip
                if progress:
                    progress(f"{block} K={k} C={c}")
                try:
                    model = spec.build(**options)
                    example = torch.randn(batch_size, c, height, width)
                    fields.update(count_model(model, example).fields)
                    fields.update(measure_latency(model, example, device=device, warmup=warmup, iters=iters,
                                                  threads=threads))  # fmt: skip
                except UserError:
                    raise
                except Exception as exc:  # the row records why; the other cells still run
                    fields["error"] = error_reason(exc)
                model = example = None
                release_memory(device)
                pair.append(make_row(**fields))
            standard, dsconv = pair
            dsconv.update(compare(standard, dsconv, k, c))
            yield from pair


def compare(standard: dict[str, Any], dsconv: dict[str, Any], kernel_size: int, channels: int) -> dict[str, Any]:
    """The ratio columns of a pair: measured MAC ratio, theory 1/N + 1/K^2, latency speed-up."""
    std_macs, ds_macs = standard.get("macs_analytic"), dsconv.get("macs_analytic")
    std_ms, ds_ms = standard.get("latency_ms_median"), dsconv.get("latency_ms_median")
    return {
        "mac_ratio": float(Fraction(ds_macs, std_macs)) if std_macs and ds_macs else None,
        "mac_ratio_theory": float(theory_ratio(kernel_size, channels)),
        "latency_speedup": std_ms / ds_ms if std_ms and ds_ms else None,
    }
