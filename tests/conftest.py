"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """Unit tests time in this process (their test models are often local, unpicklable, and a fresh
    worker costs seconds); tests/test_processes.py asks for workers itself (``Timing(processes=N)``)."""
    from segbench.runners import defaults

    monkeypatch.setitem(defaults.PROCESSES, "cpu", 1)


@pytest.fixture(scope="session")
def fcn_models() -> dict[str, torch.nn.Module]:
    """FCN-32s/16s/8s (21 classes) built once per test session: ~134 M parameters, ~1 s each to build.

    Tests that change a model (e.g. randomise its zero-initialised score layers) must restore it.
    """
    from segbench.models.fcn import FCN8s, FCN16s, FCN32s

    torch.manual_seed(0)
    return {"fcn32s": FCN32s(), "fcn16s": FCN16s(), "fcn8s": FCN8s()}


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Install fake plugin distributions on ``sys.path``: ``install(dist_name, source, ...)``.

    Each call writes a module per source and a ``.dist-info`` with an entry point per module in the ``segbench`` group, so
    discovery goes through ``importlib.metadata`` exactly as for a pip-installed plugin. The plugin
    registry is rebuilt before and after the test.
    """
    import sys
    import textwrap

    from segbench import plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    installed: list[str] = []

    def install(dist_name: str, *sources: str) -> None:
        """One distribution; each source becomes a module with its own entry point in the group."""
        stem = dist_name.replace("-", "_")
        modules = [stem if i == 0 else f"{stem}_{i}" for i in range(len(sources))]
        for module, source in zip(modules, sources):
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{stem}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[segbench]\n" + "".join(f"{m} = {m}\n" for m in modules))
        installed.extend(modules)
        plugins.reset()

    plugins.reset()
    yield install
    for module in installed:
        sys.modules.pop(module, None)
    plugins.reset()
