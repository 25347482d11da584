"""The number the application sees, for one latency row: its mIoU at the evaluation protocol with its
delta against PyTorch fp32 eager, and its end-to-end latency (frame in, mask out).

A runtime session is prepared for one input shape. A protocol that calls the network at other shapes
(slide: the window; multiscale: each scale) gets one more session of the same runtime and variant per
shape (`segbench.measure.protocols.route`), prepared like the row's own, so every runtime (a plugin's
too) runs every protocol; a runtime that cannot prepare a shape fails its row, never falls back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.measure.protocols import EvalProtocol, Predict, route

if TYPE_CHECKING:
    import torch

    from segbench.measure.session import Session, Variant
    from segbench.measure.timer import Protocol

Row = dict[str, Any]
#: ``prepare(shape)``: a session of the row's runtime and variant for inputs of ``shape`` (N, C, H, W).
Prepare = Callable[[tuple[int, ...]], "Session"]


@dataclass(frozen=True)
class Application:
    """What a cell measures beyond the model-only time: the protocol, mIoU (``evaluate``, None: not
    measured) and the end-to-end frames (None: not measured)."""

    protocol: EvalProtocol
    evaluate: Callable[[Predict, int], Row] | None
    frames: torch.Tensor | None
    timing: Protocol

    def predict(self, session: Session, shape: tuple[int, ...], prepare: Prepare) -> Predict:
        """``session``'s predict at every input size the protocol needs (more sessions from ``prepare``)."""
        size = (shape[-2], shape[-1])
        predicts = {
            s: (session if s == size else prepare((*shape[:-2], *s))).predict for s in self.protocol.input_shapes(size)
        }
        return route(predicts)

    def reference(self, session: Session, shape: tuple[int, ...], prepare: Prepare) -> Row:
        """The PyTorch fp32 eager accuracy every row's ``miou_delta`` is taken against (empty: no mIoU)."""
        return {} if self.evaluate is None else self.evaluate(self.predict(session, shape, prepare), shape[0])

    def fields(
        self, session: Session, variant: Variant, x: torch.Tensor, prepare: Prepare, reference: Row | None, own: bool
    ) -> Row:
        """The row's protocol fields, mIoU and delta (when evaluated) and end-to-end fields (when asked).

        ``x``: the row's timed input; ``reference``: the fp32 eager accuracy (None when it failed);
        ``own``: this row is the reference's, whose accuracy is ``reference`` itself.
        """
        if self.evaluate is None and self.frames is None:
            return {}
        import torch

        from segbench.measure.endtoend import Pipeline, measure_pipeline
        from segbench.rows.endtoend import e2e_fields
        from segbench.runtimes.torch_runtime import DTYPES

        shape = tuple(x.shape)
        predict = self.predict(session, shape, prepare)
        fields: Row = self.protocol.fields()
        if self.evaluate is not None:
            accuracy = reference if own and reference is not None else self.evaluate(predict, shape[0])
            fields.update(accuracy)
            fields["miou_delta"] = _delta(accuracy.get("miou"), (reference or {}).get("miou"))
        if self.frames is not None:
            in_torch = session.in_torch  # else the runtime is fed from host memory: pre/post run there
            pipeline = Pipeline(
                predict,
                (shape[-2], shape[-1]),
                x.device if in_torch else torch.device("cpu"),
                DTYPES.get(variant.precision, torch.float32) if in_torch else torch.float32,
                variant.channels_last and in_torch,
                self.protocol,
            )
            times = measure_pipeline(pipeline, self.frames, self.timing)
            fields.update(e2e_fields(times, (self.frames.shape[1], self.frames.shape[2])))
        return fields


def _delta(miou: float | None, reference: float | None) -> float | None:
    """mIoU minus the reference's, in points (None when either is missing or not finite)."""
    if miou is None or reference is None or not (math.isfinite(miou) and math.isfinite(reference)):
        return None
    return (miou - reference) * 100


def shape_folder(workdir: Path, shape: tuple[int, ...]) -> Path:
    """The cell's folder for sessions of another input size (one ONNX export per size)."""
    folder = workdir / "x".join(map(str, shape))
    folder.mkdir(exist_ok=True)
    return folder
