"""Plugin discovery: built-ins and entry points by one path; broken plugins reported, not fatal."""

import inspect
import re

import pytest

from segbench import hookspecs, plugins
from segbench.errors import UserError

GOOD = """
import segbench
from segbench.registry import ModelSpec
from torch import nn

@segbench.hookimpl
def register_models(register):
    register(ModelSpec(name="tiny_net", family="tiny", builder=lambda num_classes: nn.Conv2d(3, num_classes, 1),
                       default_size=(8, 8), default_num_classes=3, description="1x1 conv"))
"""

BROKEN_IMPORT = """
raise ImportError("missing dependency frobnicate")
"""

RAISES_IN_HOOK = """
import segbench

@segbench.hookimpl
def register_models(register):
    raise RuntimeError("model table corrupt")
"""

DUPLICATE = """
import segbench
from segbench.registry import ModelSpec
from torch import nn

@segbench.hookimpl
def register_models(register):
    register(ModelSpec(name="fcn8s", family="fake", builder=lambda num_classes: nn.Identity(),
                       default_size=(8, 8), default_num_classes=3, description="impostor"))
"""


def test_builtins_are_registered_by_the_builtin_plugin():
    registry = plugins.get_registry()
    for name in ("fcn32s", "fcn16s", "fcn8s", "fast_scnn", "block_standard", "block_dsconv"):
        assert registry.models[name].plugin == plugins.BUILTIN_NAME
    assert set(registry.datasets) >= {"synthetic", "folder", "voc", "cityscapes"}


def test_entry_point_plugin_is_discovered_and_stamped(fake_plugins):
    fake_plugins("good-plugin", GOOD)
    spec = plugins.get_registry().model("tiny_net")
    assert spec.plugin == "good-plugin"
    assert spec.build().out_channels == 3


MISSPELLED = """
import segbench

@segbench.hookimpl
def register_model(register):  # the hook is register_models
    pass
"""

DATASETS_ONLY = """
import segbench
from segbench.registry import DatasetSpec

@segbench.hookimpl
def register_datasets(register):
    register(DatasetSpec(name="tiny_set", builder=lambda **kw: [], description="empty"))
"""


def test_a_misspelled_hook_is_a_reported_plugin_failure(fake_plugins, capsys):
    fake_plugins("typo-plugin", MISSPELLED)
    fake_plugins("good-plugin", GOOD)
    assert "tiny_net" in plugins.get_registry().models
    (failure,) = plugins.failed_plugins()
    assert failure.plugin == "typo-plugin"
    assert failure.reason.startswith("failed to load: PluginValidationError: unknown hook 'register_model'")
    assert "typo-plugin" not in {spec.plugin for spec in plugins.get_registry().models.values()}
    assert "unknown hook 'register_model'" in capsys.readouterr().err


def test_a_distribution_with_two_entry_points_loads_both(fake_plugins):
    fake_plugins("two-part", GOOD, DATASETS_ONLY)
    registry = plugins.get_registry()
    assert registry.models["tiny_net"].plugin == "two-part:two_part"
    assert registry.datasets["tiny_set"].plugin == "two-part:two_part_1"
    assert plugins.failed_plugins() == []


def test_hooks_are_called_through_pluggy_with_keyword_arguments(fake_plugins):
    """An implementation may take fewer arguments than the spec (pluggy's rule), so specs can grow."""
    fake_plugins(
        "no-args",
        """
import segbench
CALLED = []

@segbench.hookimpl
def register_models():
    CALLED.append(True)
""",
    )
    plugins.get_registry()
    import no_args

    assert no_args.CALLED == [True]
    assert plugins.failed_plugins() == []


def test_broken_plugins_are_reported_and_others_still_load(fake_plugins, capsys):
    fake_plugins("broken-import", BROKEN_IMPORT)
    fake_plugins("raises-in-hook", RAISES_IN_HOOK)
    fake_plugins("good-plugin", GOOD)
    registry = plugins.get_registry()
    assert "tiny_net" in registry.models and "fast_scnn" in registry.models
    failures = {f.plugin: f.reason for f in plugins.failed_plugins()}
    assert failures == {
        "broken-import": "failed to load: ImportError: missing dependency frobnicate",
        "raises-in-hook": "register_models raised RuntimeError: model table corrupt",
    }
    err = capsys.readouterr().err.splitlines()
    assert "segbench: warning: plugin 'broken-import' failed to load: ImportError: missing dependency frobnicate" in err
    assert len(err) == 2


def test_strict_mode_turns_a_plugin_failure_into_an_error(fake_plugins, monkeypatch):
    monkeypatch.setenv("SEGBENCH_STRICT_PLUGINS", "1")
    fake_plugins("broken-import", BROKEN_IMPORT)
    with pytest.raises(UserError, match="plugin 'broken-import' failed to load"):
        plugins.get_registry()


def test_duplicate_model_name_is_an_error_naming_both_plugins(fake_plugins):
    fake_plugins("impostor", DUPLICATE)
    with pytest.raises(UserError) as info:
        plugins.get_registry()
    message = str(info.value)
    assert "'fcn8s'" in message and "'segbench'" in message and "'impostor'" in message


def test_disabled_plugin_is_skipped(fake_plugins, monkeypatch):
    monkeypatch.setenv("SEGBENCH_DISABLE_PLUGINS", "impostor")
    fake_plugins("impostor", DUPLICATE)
    assert plugins.get_registry().models["fcn8s"].plugin == plugins.BUILTIN_NAME


def test_example_unet_package_is_discovered():
    """CI installs plugins/segbench-unet, as the README says; it registers through the entry point."""
    spec = plugins.get_registry().model("unet")
    assert spec.plugin == "segbench-unet"
    assert spec.family == "unet"


@pytest.mark.parametrize("name", ["register_models", "register_datasets", "register_runtimes"])
def test_every_hookspec_is_documented(name):
    """Each hook documents itself and every one of its arguments (datasette keeps such a test)."""
    hook = getattr(hookspecs, name)
    doc = inspect.getdoc(hook)
    assert doc and len(doc.splitlines()) >= 3
    for arg in inspect.signature(hook).parameters:
        assert re.search(rf":param {arg}:", doc), f"{name} does not document {arg}"


def test_all_hookspecs_are_covered_by_the_documentation_test():
    specs = [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "segbench_spec")]
    assert sorted(specs) == ["register_datasets", "register_models", "register_runtimes"]
