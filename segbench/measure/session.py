"""What every runtime hands the timer: a `Session`, prepared for one `Variant` of one model and input.

It sits in `segbench.measure` so that the timer never imports `segbench.runtimes`: runtimes import it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The switches a variant may turn on; each runtime says which of them it supports.
SWITCHES = ("channels_last", "compile", "cuda_graph", "fold_bn")
#: ``torch.compile`` modes a compiled variant may use. The last two capture CUDA graphs themselves
#: (Inductor's cudagraph trees), so they are refused together with segbench's own ``cuda_graph``.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Variant:
    """One deployment variant of a model: precision and the speed switches."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    fold_bn: bool = False
    compile_mode: str = "default"

    @property
    def tag(self) -> str:
        """``fp16+cl+compile+graph+foldbn``-style short name (``compile-MODE`` for a mode not the default)."""
        mode = "" if self.compile_mode == "default" else f"-{self.compile_mode}"
        short = {"channels_last": "cl", "compile": f"compile{mode}", "cuda_graph": "graph", "fold_bn": "foldbn"}
        return "+".join([self.precision, *(short[s] for s in self.switches)])

    @property
    def switches(self) -> tuple[str, ...]:
        """The switches turned on, in `SWITCHES` order."""
        return tuple(s for s in SWITCHES if getattr(self, s))

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Variant:
        """The variant a result row names (the inverse of `fields`)."""
        return cls(
            row["precision"],
            bool(row["channels_last"]),
            bool(row["compiled"]),
            bool(row["cuda_graph"]),
            bool(row["bn_folded"]),
            row.get("compile_mode") or "default",
        )

    def fields(self) -> dict[str, Any]:
        """The row fields that name this variant."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compile,
            "cuda_graph": self.cuda_graph,
            "bn_folded": self.fold_bn,
            "compile_mode": self.compile_mode if self.compile else None,
        }


def expand_variants(
    precisions: tuple[str, ...] | list[str] = ("fp32",), compile_mode: str = "default", **switches: bool
) -> list[Variant]:
    """fp32 first, then each requested precision with each requested switch off and on (compiled ones
    in ``compile_mode``).

    ``expand_variants(["fp32", "fp16"], channels_last=True)`` gives fp32, fp32+cl, fp16, fp16+cl.
    """
    names = [s for s in SWITCHES if switches.get(s)]
    combos = [
        Variant(precision, **on, compile_mode=compile_mode if on.get("compile") else "default")
        for precision in precisions
        for on in (dict(zip(names, flags)) for flags in itertools.product((False, True), repeat=len(names)))
    ]
    return list(dict.fromkeys([Variant(), *combos]))


def check_compile_modes(variants: Sequence[Variant]) -> None:
    """UserError for a compile mode segbench does not know, or one that captures CUDA graphs itself
    (Inductor's cudagraph trees) in a variant that also captures segbench's own."""
    from segbench.errors import UserError

    for variant in variants:
        if variant.compile_mode not in COMPILE_MODES:
            raise UserError(f"unknown compile mode {variant.compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
        if variant.compile and variant.cuda_graph and variant.compile_mode in GRAPHING_COMPILE_MODES:
            raise UserError(
                f"--compile-mode {variant.compile_mode} captures CUDA graphs itself: not with --cuda-graph "
                "(use default or max-autotune-no-cudagraphs)"
            )


@dataclass
class Session:
    """A model prepared by a runtime for one input shape.

    :param call: one inference on the prepared example input: what the timer calls.
    :param predict: the logits (a CPU or device torch tensor) for any input of the prepared shape;
        used for the agreement with fp32 eager and for mIoU.
    :param prepare_seconds: export + compile time (None when nothing was prepared ahead).
    :param threads: the intra-op threads the runtime uses.
    :param in_torch: runs through PyTorch, so torch's allocator and profiler see it (peak memory,
        traces); False for other runtimes, whose memory is not measured.
    :param blocking: ``call`` returns only when the result is ready on the host, so the host clock
        times it even on a GPU (other runtimes' own streams are invisible to torch's CUDA events).
    :param tf32: (convolutions, matmuls) run in TF32: set by the runtime from its own settings
        (None where TF32 means nothing: a CPU, fp16/bf16).
    :param weights_mb: the parameters and buffers of the model the session runs, in MiB (None where the
        runtime does not say): with ``peak_mem_mb``, what decides whether a model fits.
    :param peak_mem_mb: the peak memory when one call cannot show it (a CUDA graph replay allocates
        nothing: its activations were reserved at capture, and this is the peak of warm-up and capture).
    """

    call: Callable[[], Any]
    predict: Callable[[torch.Tensor], torch.Tensor]
    prepare_seconds: float | None = None
    threads: int | None = None
    in_torch: bool = True
    blocking: bool = False
    tf32: tuple[bool | None, bool | None] = (None, None)
    peak_mem_mb: float | None = None
    weights_mb: float | None = None
