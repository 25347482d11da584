"""Checkpoints: ``state_dict`` files read safely (``weights_only``), checked against a model, written.

`check_fits` needs only the model's parameter names and shapes, so a model built on the ``meta``
device checks a ``--weights`` file before anything is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from segbench.errors import UserError


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A local ``state_dict`` file's tensors; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; expected a local state_dict checkpoint (.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise UserError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state_dict (dict of tensors), found {type(state).__name__}")
    return state


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str = "this model") -> None:
    """Every key of ``model.state_dict()`` present in ``state`` with the same shape, and no other key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"missing {k}" for k in expected if k not in state]
    wrong += [f"unexpected {k}" for k in state if k not in expected]
    wrong += [
        f"{k} is {tuple(state[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if wrong:
        raise UserError(f"{path}: weights do not fit {what} ({len(wrong)} keys differ, e.g. {wrong[0]})")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``state_dict`` checkpoint from a local file (as written by `save_checkpoint`)."""
    state = read_state(path)
    check_fits(model, state, path)
    model.load_state_dict(state)


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write the model's ``state_dict`` to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
