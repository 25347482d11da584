"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="session")
def fcn_models() -> dict[str, torch.nn.Module]:
    """FCN-32s/16s/8s (21 classes) built once per test session: ~134 M parameters, ~1 s each to build.

    Tests that change a model (e.g. randomise its zero-initialised score layers) must restore it.
    """
    from segbench.models.fcn import FCN8s, FCN16s, FCN32s

    torch.manual_seed(0)
    return {"fcn32s": FCN32s(), "fcn16s": FCN16s(), "fcn8s": FCN8s()}
