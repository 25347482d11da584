"""What every runtime hands the timer: a `Session`, prepared for one `Variant` of one model and input.

It sits in `segbench.measure` so that the timer never imports `segbench.runtimes`: runtimes import it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The switches a variant may turn on; each runtime says which of them it supports.
SWITCHES = ("channels_last", "compile", "cuda_graph", "fold_bn")


@dataclass(frozen=True)
class Variant:
    """One deployment variant of a model: precision and the speed switches."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    fold_bn: bool = False

    @property
    def tag(self) -> str:
        """``fp16+cl+compile+graph+foldbn``-style short name."""
        short = {"channels_last": "cl", "compile": "compile", "cuda_graph": "graph", "fold_bn": "foldbn"}
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
        )

    def fields(self) -> dict[str, Any]:
        """The row fields that name this variant."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compile,
            "cuda_graph": self.cuda_graph,
            "bn_folded": self.fold_bn,
        }


def expand_variants(precisions: tuple[str, ...] | list[str] = ("fp32",), **switches: bool) -> list[Variant]:
    """fp32 first, then each requested precision with each requested switch off and on.

    ``expand_variants(["fp32", "fp16"], channels_last=True)`` gives fp32, fp32+cl, fp16, fp16+cl.
    """
    names = [s for s in SWITCHES if switches.get(s)]
    combos = [
        Variant(precision, **dict(zip(names, flags)))
        for precision in precisions
        for flags in itertools.product((False, True), repeat=len(names))
    ]
    return list(dict.fromkeys([Variant(), *combos]))


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
    """

    call: Callable[[], Any]
    predict: Callable[[torch.Tensor], torch.Tensor]
    prepare_seconds: float | None = None
    threads: int | None = None
    in_torch: bool = True
    blocking: bool = False
