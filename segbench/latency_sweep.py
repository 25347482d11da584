"""The latency sweep: models x sizes x batch sizes x variants, one result row per cell.

``segbench latency`` and ``segbench run`` call ``iter_latency_rows``. A cell that fails (CUDA out of
memory, a dtype the device lacks, CUDA graphs on a CPU, a model that raises) becomes a row with a
one-line ``error``; memory is released and the sweep goes on. A model whose builder fails gives every
one of its cells that error. Rows are yielded as they finish, so a caller interrupted by Ctrl-C keeps
the finished ones.

Variant rule: the fp32 eager row always comes first; then one row for every combination of a
requested precision with each requested switch (``channels_last``, ``compile``, ``cuda_graph``) off
and on. ``precisions=("fp32", "fp16"), channels_last=True`` gives fp32, fp32+cl, fp16, fp16+cl.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from segbench.errors import UserError
from segbench.registry import ModelSpec
from segbench.results import make_row, spec_fields

PRECISION_NAMES = ("fp32", "fp16", "bf16")
DEFAULT_ITERATIONS = {"cpu": (3, 10), "cuda": (10, 50)}  # (warmup, iters): a CPU run must stay short
INPUT_SEED = 0


@dataclass(frozen=True)
class Variant:
    """One deployment variant of a model: precision and the speed switches."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False

    @property
    def tag(self) -> str:
        from segbench.measure.latency import variant_tag

        return variant_tag(self.precision, self.channels_last, self.compile, self.cuda_graph)

    def fields(self) -> dict[str, Any]:
        """The row fields that name this variant."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compile,
            "cuda_graph": self.cuda_graph,
        }


def expand_variants(
    precisions: Sequence[str] = ("fp32",),
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
) -> list[Variant]:
    """fp32 eager first, then each requested precision with each requested switch off and on."""
    bad = [p for p in precisions if p not in PRECISION_NAMES]
    if bad or not precisions:
        raise UserError(f"bad precision {','.join(bad) or repr('')}: accepted {', '.join(PRECISION_NAMES)}")
    switches = [(False, True) if on else (False,) for on in (channels_last, compile, cuda_graph)]
    combos = [Variant(p, *flags) for p in precisions for flags in itertools.product(*switches)]
    return list(dict.fromkeys([Variant(), *combos]))


def default_iterations(device: str, warmup: int | None = None, iters: int | None = None) -> tuple[int, int]:
    """(warmup, iters): the user's where given, else 3/10 on CPU and 10/50 on CUDA."""
    default_warmup, default_iters = DEFAULT_ITERATIONS["cuda" if device.startswith("cuda") else "cpu"]
    return (default_warmup if warmup is None else warmup, default_iters if iters is None else iters)


def iter_latency_rows(
    specs: Iterable[ModelSpec],
    *,
    device: str,
    sizes: Sequence[tuple[int, int]] | None = None,
    batch_sizes: Sequence[int] = (1,),
    variants: Sequence[Variant] = (Variant(),),
    warmup: int | None = None,
    iters: int | None = None,
    threads: int | None = None,
    trace_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one full result row per model x size (default: the model's own) x batch x variant."""
    import torch

    from segbench.measure.latency import error_reason, measure_latency, release_memory
    from segbench.results import device_name

    warmup, iters = default_iterations(device, warmup, iters)
    device_label = device_name(device)
    for spec in specs:
        try:
            model, build_error = spec.build(), None
            params = sum(p.numel() for p in model.parameters())
        except Exception as exc:  # a broken plugin model: its rows say why, the other models still run
            model, params, build_error = None, None, f"cannot build {spec.name}: {error_reason(exc)}"
        cells = itertools.product(sizes or [spec.default_size], batch_sizes, variants)
        for (height, width), batch, variant in cells:
            base = {
                **spec_fields(spec, device=device, device_name=device_label, batch_size=batch),
                **_shape_fields(spec, height, width),
                **variant.fields(),
                "params": params,
            }
            if model is None:
                yield make_row(**base, error=build_error)
                continue
            try:
                generator = torch.Generator().manual_seed(INPUT_SEED)
                example = torch.randn(batch, spec.input_channels(), height, width, generator=generator)
                fields = measure_latency(
                    model,
                    example,
                    device=device,
                    precision=variant.precision,
                    channels_last=variant.channels_last,
                    compile=variant.compile,
                    cuda_graph=variant.cuda_graph,
                    warmup=warmup,
                    iters=iters,
                    threads=threads,
                    trace_dir=trace_dir,
                    trace_name=f"{spec.name}-{batch}x{height}x{width}-{variant.tag}",
                )
            except UserError:
                raise
            except Exception as exc:  # one failing cell (OOM, unsupported dtype) must not stop the sweep
                fields = {"error": error_reason(exc)}
            if fields.get("error"):  # outside the except: its traceback holds the failed cell's tensors
                example = None
                release_memory(device)
            yield make_row(**{**base, **fields})
        model = None
        release_memory(device)


def latency_rows(specs: Iterable[ModelSpec], **options: Any) -> list[dict[str, Any]]:
    """All rows of ``iter_latency_rows`` as a list (for callers that need no progress)."""
    return list(iter_latency_rows(specs, **options))


def _shape_fields(spec: ModelSpec, height: int, width: int) -> dict[str, Any]:
    """Input size and class count; blocks also get their block fields (kernel, channels, stride)."""
    fields: dict[str, Any] = {"height": height, "width": width, "num_classes": spec.default_num_classes}
    if spec.kind == "block":
        options = spec.options()
        fields.update(
            block=spec.name,
            **{key: options.get(key) for key in ("kernel_size", "in_channels", "out_channels", "stride")},
        )
    return fields
