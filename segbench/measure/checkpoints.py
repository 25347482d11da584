"""Checkpoints: ``state_dict`` files read safely (``weights_only``), checked against a model, written.

`check_fits` needs only the model's parameter names and shapes, so a model built on the ``meta``
device checks a ``--weights`` file before anything is trained. `read_vgg16` and `init_from_vgg16`
start an FCN from a VGG16 classifier checkpoint in torchvision's layout (``--init vgg16:PATH``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from segbench.errors import UserError
from segbench.models.fcn import BACKBONE, vgg16_classifier_shapes, vgg16_to_backbone

#: Keys a torchvision VGG16 checkpoint may hold that the surgery does not use (the ImageNet scores).
VGG16_UNUSED = ("classifier.6.weight", "classifier.6.bias")


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
    wrong = _differences(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if wrong:
        raise UserError(f"{path}: weights do not fit {what} ({len(wrong)} keys differ, e.g. {wrong[0]})")


def _differences(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], ignored: Sequence[str] = ()
) -> list[str]:
    """How ``state`` differs from the expected key -> shape map: missing, unexpected (``ignored`` keys
    aside) and misshapen keys, one line each."""
    wrong = [f"missing {k}" for k in expected if k not in state]
    wrong += [f"unexpected {k}" for k in state if k not in expected and k not in ignored]
    wrong += [
        f"{k} is {tuple(state[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    return wrong


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``state_dict`` checkpoint from a local file (as written by `save_checkpoint`)."""
    state = read_state(path)
    check_fits(model, state, path)
    model.load_state_dict(state)


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write the model's ``state_dict`` to ``path`` (parent folders created), atomically: a failed write
    leaves no truncated checkpoint (`segbench.writing`; a `WriteError` says why)."""
    from segbench.writing import write_with

    state = model.state_dict()
    write_with(path, lambda temporary: torch.save(state, temporary))


def read_vgg16(path: str | Path) -> dict[str, torch.Tensor]:
    """A VGG16 classifier checkpoint (torchvision's layout) as FCN backbone weights; UserError otherwise."""
    state = read_state(path)
    wrong = _differences(state, vgg16_classifier_shapes(), ignored=VGG16_UNUSED)
    if wrong:
        raise UserError(
            f"{path}: not a VGG16 classifier checkpoint in torchvision's layout (features.N.*, classifier.0/3.*): "
            f"{len(wrong)} keys differ, e.g. {wrong[0]}"
        )
    return {f"{BACKBONE}.{k}": v for k, v in vgg16_to_backbone(state).items()}


def check_vgg16_target(model: nn.Module, backbone: Mapping[str, torch.Tensor], what: str) -> None:
    """``model`` has an FCN's VGG16 backbone (every key of ``backbone`` with its shape); UserError if not.

    Decided by the model's parameters, not its name: a plugin's FCN with the same backbone qualifies.
    """
    own = model.state_dict()
    for key, value in backbone.items():
        shape = tuple(value.shape)
        if key not in own or tuple(own[key].shape) != shape:
            raise UserError(
                f"--init vgg16 fits models with an FCN's VGG16 backbone; {what} has no {key} of shape {shape}"
            )


def init_from_vgg16(model: nn.Module, path: str | Path) -> None:
    """Net surgery: load a VGG16 classifier checkpoint into ``model``'s backbone (the rest untouched)."""
    backbone = read_vgg16(path)
    check_vgg16_target(model, backbone, type(model).__name__)
    model.load_state_dict(backbone, strict=False)
