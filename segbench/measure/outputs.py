"""A variant's output against the fp32 eager reference: how far its logits are, how often its argmax agrees."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class Agreement(NamedTuple):
    """Max |logit difference| (inf when either side holds inf or NaN) and the fraction of pixels whose
    argmax over channels agrees (None for outputs without a channel dimension)."""

    max_abs_diff: float
    argmax_agreement: float | None


def compare_outputs(output: torch.Tensor, reference: Any) -> Agreement:
    """Max |difference| and argmax (over dim 1) agreement of a variant's output with fp32 eager."""
    ref = main_output(reference).float()
    out = output.float().contiguous()
    diff = (out - ref).abs()
    max_diff = float("inf") if not torch.isfinite(diff).all() else diff.max().item()
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item() if out.dim() > 1 else None
    return Agreement(max_diff, agreement)


def main_output(output: Any) -> torch.Tensor:
    """The logits of a forward pass: the tensor itself, the first of a tuple or list, or ``out`` of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return main_output(output.get("out", next(iter(output.values()))))
    if isinstance(output, (list, tuple)) and output:
        return main_output(output[0])
    raise TypeError(f"cannot compare a model output of type {type(output).__name__}")
