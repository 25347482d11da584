"""Per-model file paths (``--weights``, ``--save``) and the check that a checkpoint fits its model.

Both are checked when a runner is called, before anything is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.registry import ModelSpec

#: In a ``--weights`` or ``--save`` path, replaced by the model's name.
MODEL_FIELD = "{model}"


def per_model(template: str | None, option: str, names: Sequence[str]) -> dict[str, str | None]:
    """One path per model: ``{model}`` in the path is replaced by its name (required for several)."""
    if template is not None and len(names) > 1 and MODEL_FIELD not in template:
        raise UserError(f"{option} {template!r} with {len(names)} models: put {MODEL_FIELD} in the path")
    return {n: None if template is None else template.replace(MODEL_FIELD, n) for n in names}


def check_weights(spec: ModelSpec, path: str, num_classes: int | None) -> None:
    """The ``--weights`` file fits the model as it will be built (on ``meta``: no memory, no time)."""
    import torch

    from segbench.measure.checkpoints import check_fits, read_state

    state = read_state(path)
    try:
        with torch.device("meta"):
            model = spec.build(num_classes=num_classes)
    except Exception:  # a builder that fails here fails its cells, whose rows say why
        return
    what = f"{spec.name} with {num_classes} classes" if num_classes else spec.name
    check_fits(model, state, path, what)
