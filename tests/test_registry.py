"""Selection strings, lookup errors and create_model."""

import pytest
import torch

import segbench
from segbench.errors import UserError
from segbench.plugins import get_registry
from segbench.registry import ModelSpec, Registry, natural_key

BUILTIN_MODELS = ["fast_scnn", "fcn8s", "fcn16s", "fcn32s"]


def names(selection, kind="model"):
    return [s.name for s in get_registry().select(selection, kind=kind)]


def test_all_and_none_select_every_model_naturally_sorted():
    expected = [n for n in get_registry().names("model")]
    assert names("all") == names(None) == expected
    assert [n for n in expected if n in BUILTIN_MODELS] == BUILTIN_MODELS
    assert "block_dsconv" not in expected


def test_globs_expand_in_natural_order_and_keep_user_order():
    assert names("fcn*") == ["fcn8s", "fcn16s", "fcn32s"]
    assert names("fast_scnn,fcn3*") == ["fast_scnn", "fcn32s"]
    assert names("fcn8s, fcn8s ,fcn*") == ["fcn8s", "fcn16s", "fcn32s"]
    assert names("block_*", kind="block") == ["block_dsconv", "block_standard"]


def test_exact_block_name_selects_it_from_a_model_selection():
    assert names("block_dsconv,fcn8s") == ["block_dsconv", "fcn8s"]


@pytest.mark.parametrize("selection", ["fcn9s", "resnet*", "fcn8s,nope"])
def test_unknown_names_list_the_known_ones(selection):
    with pytest.raises(UserError) as info:
        get_registry().select(selection)
    message = str(info.value)
    assert "\n" not in message
    assert "known: " in message and "fcn8s" in message and "fast_scnn" in message


def test_close_match_is_suggested():
    with pytest.raises(UserError, match=r"did you mean fcn8s"):
        get_registry().model("fcn8")


def test_natural_key_orders_numbers_numerically():
    assert sorted(["fcn32s", "fcn8s", "fcn16s"], key=natural_key) == ["fcn8s", "fcn16s", "fcn32s"]


def test_create_model_returns_plain_module_with_requested_classes():
    block = segbench.create_model("block_dsconv", in_channels=8, out_channels=16, kernel_size=5)
    assert block(torch.randn(1, 8, 9, 9)).shape == (1, 16, 9, 9)
    model = segbench.create_model("fast_scnn", num_classes=5)
    assert isinstance(model, torch.nn.Module)
    assert model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def test_dataset_selection_parses_paths():
    registry = get_registry()
    spec, path = registry.dataset("folder:/data/x")
    assert (spec.name, path) == ("folder", "/data/x")
    assert registry.dataset("synthetic") == (registry.datasets["synthetic"], None)
    with pytest.raises(UserError, match="needs a path"):
        registry.dataset("voc")
    with pytest.raises(UserError, match="takes no path"):
        registry.dataset("synthetic:/tmp")
    with pytest.raises(UserError, match="known: cityscapes, folder, synthetic, voc"):
        registry.dataset("imagenet")


def _spec(**overrides):
    fields = dict(
        name="ok",
        family="f",
        builder=lambda num_classes: None,
        default_size=(4, 4),
        default_num_classes=2,
        description="d",
    )
    return ModelSpec(**{**fields, **overrides})


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"name": "Bad-Name"}, "snake case"),
        ({"kind": "layer"}, "kind"),
        ({"builder": 3}, "callable"),
        ({"default_size": (0, 4)}, "default_size"),
        ({"default_num_classes": 0}, "default_num_classes"),
    ],
)
def test_malformed_specs_are_rejected(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        Registry().add_model(_spec(**overrides))
