"""The shape of the code: layers import only downwards, no import cycles, one runner contract."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import segbench

PACKAGE = Path(segbench.__file__).parent

#: Bottom to top. A module may import from its own layer and the layers below, never above.
LAYERS = (
    (
        "contract",
        (
            "segbench._version",
            "segbench.errors",
            "segbench.checks",
            "segbench.hookspecs",
            "segbench.registry",
            "segbench.builtin",
            "segbench.plugins",
            "segbench.inventory",
        ),
    ),
    ("models and data", ("segbench.models", "segbench.data")),
    ("measurement primitives", ("segbench.measure", "segbench.runtimes")),
    ("rows", ("segbench.rows",)),
    ("runners", ("segbench.runners",)),
    ("output", ("segbench.output",)),
    ("cli", ("segbench.cli", "segbench.__main__", "segbench")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the most specific layer prefix that names ``module``."""
    best = max(
        (
            (i, prefix)
            for i, (_, prefixes) in enumerate(LAYERS)
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),
        key=lambda item: len(item[1]),
    )
    return best[0]


def imports_of(path: Path) -> set[str]:
    """Every segbench module ``path`` imports, at the top or inside functions, resolved to modules."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(
                    candidate
                    if (PACKAGE.parent / (candidate.replace(".", "/"))).exists()
                    or (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                    else node.module
                )
    return {m for m in found if m == "segbench" or m.startswith("segbench.")}


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    assert all(layer_of(m) >= 0 for m in GRAPH)


def test_layers_import_only_downwards():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_measurement_primitives_import_no_rows_runners_or_output():
    for module, targets in GRAPH.items():
        if module.startswith(("segbench.measure", "segbench.runtimes")):
            assert not {t for t in targets if t.split(".")[1] in ("rows", "runners", "output", "cli")}, module


def test_no_import_cycles():
    """Depth-first search over the whole graph, imports inside functions included."""
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target == module:
                continue
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target] if target in stack else [module, target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_graph_sees_imports_inside_functions():
    """The cycle test would be blind without this: runners import torch-heavy modules lazily."""
    assert "segbench.measure.latency" in GRAPH["segbench.runners.latency"]
    assert "segbench.plugins" in GRAPH["segbench"]


#: The runner each measuring command calls: cli module -> runner module, whose runner is named like it.
COMMAND_RUNNERS = {"flops": "count", "latency": "latency", "blocks": "blocks", "train": "train", "run": "run"}


@pytest.mark.parametrize("command", sorted(COMMAND_RUNNERS))
def test_every_command_calls_its_runner(command):
    """So the contract below is checked on the functions the product uses: a measuring command calls its
    runner and imports nothing else from a runner module but configs and the K^2 study's default pair."""
    runner = COMMAND_RUNNERS[command]
    tree = ast.parse((PACKAGE / "cli" / f"{command}.py").read_text())
    imported = {
        (node.module.rsplit(".", 1)[1], alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segbench.runners.")
        for alias in node.names
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    measuring = {name for module, name in imported if module in COMMAND_RUNNERS.values()}
    assert runner in called and (runner, runner) in imported
    assert {name for name in measuring if not name.endswith("Config")} - {"default_specs"} == {runner}


@pytest.mark.parametrize("name", sorted(set(COMMAND_RUNNERS.values())))
def test_every_runner_has_the_same_shape(name):
    """``runner(specs, config, context=ALONE) -> Iterator[row]``, with its config a dataclass of the same
    module; a runner may return rows that also describe its settings (`segbench.runners.cells.Described`)."""
    import importlib
    from collections.abc import Iterator

    from segbench.runners import cells

    module = importlib.import_module(f"segbench.runners.{name}")
    signature = inspect.signature(getattr(module, name))
    assert list(signature.parameters) == ["specs", "config", "context"]
    assert signature.parameters["context"].default is cells.ALONE
    config = signature.parameters["config"].annotation
    assert config.endswith("Config") and hasattr(module, config)
    returned = str(signature.return_annotation)
    assert "Iterator[Row]" in returned or issubclass(getattr(cells, returned), Iterator)


def test_cli_modules_hold_no_measurement():
    """The CLI parses and renders: it never calls a measurement primitive itself."""
    for module, targets in GRAPH.items():
        if module.startswith("segbench.cli"):
            primitives = {t for t in targets if t.startswith(("segbench.measure.", "segbench.runtimes."))} - {
                "segbench.runtimes.base",  # the Variant value type, built from --precision and switches
                "segbench.measure.protocols",  # the EvalProtocol value type, built from --protocol and its options
                "segbench.measure.recipe",  # constants quoted in help texts and footnotes
                "segbench.measure.analytic",  # the counting convention quoted in a footnote
            }
            assert primitives == set(), module
